"""Build each meter's source from its settings, through the registry of backends."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.config import Config, MeterSettings, MqttSettings, check_readable
from gateway.errors import ConfigError
from gateway.sources import Source, SourceContext, SourceStart, source_class
from meter_model import MeterConfig

__all__ = ["SourceContext", "build_source", "check_inputs"]


def check_inputs(config: Config, *, ports: bool = True) -> None:
    """Check every file the configuration names, before anything is created (issue #12).

    A file that cannot be read (or a serial port that is not there, with ``ports``) is a
    ConfigError naming the configuration file and the key; a profile or replay log that is
    malformed is a PulseLogError naming its file and line. Each backend checks its own keys.
    """
    where = f"{config.path or 'config'}:"
    for index, meter in enumerate(config.meters):
        source_class(meter.source).check_inputs(meter, f"{where} meters[{index}]", ports=ports)
    if config.mqtt.enabled:
        _check_mqtt_files(config.mqtt, f"{where} mqtt")


def _check_mqtt_files(mqtt: MqttSettings, where: str) -> None:
    import ssl

    if mqtt.username is not None and mqtt.password_file:
        check_readable(f"{where}.password_file", mqtt.password_file)
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(mqtt, key)
        if path:
            check_readable(f"{where}.{key}", path)
    if not (mqtt.tls or mqtt.ca_file):
        return
    try:
        context = ssl.create_default_context(cafile=mqtt.ca_file)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"{where}.ca_file: {mqtt.ca_file}: {exc}") from None
    if mqtt.cert_file:
        try:
            context.load_cert_chain(mqtt.cert_file, mqtt.key_file)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"{where}.cert_file/key_file: {mqtt.cert_file}: {exc}") from None


def build_source(
    settings: MeterSettings,
    model: MeterConfig,
    start_ns: int,
    source_state: dict[str, Any] | None,
    last_seen: Mapping[str, tuple[int, int]],
    context: SourceContext,
) -> Source:
    """Return the source a meter's settings name (see :class:`SourceStart` for the rest)."""
    start = SourceStart(model, start_ns, source_state, last_seen)
    return source_class(settings.source).from_settings(settings, start, context)
