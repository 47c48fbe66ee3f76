"""Build what the daemon runs from its configuration: each meter restored with its source, the
timeline, the publisher; and check every file the configuration names first."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway.config import (
    Config,
    MeterSettings,
    MqttSettings,
    check_readable,
    core_settings,
    meter_config,
)
from gateway.errors import ConfigError
from gateway.pipeline import MeterPipeline, Meters
from gateway.sinks.database import Database
from gateway.sinks.payloads import MeterInfo
from gateway.sinks.publisher import NullPublisher, Publisher
from gateway.sinks.readback import StoredMeter
from gateway.sources import Source, SourceContext, SourceStart, is_live, source_class
from gateway.timeline import Timeline
from meter_model import MeterConfig

__all__ = [
    "SourceContext",
    "build_meters",
    "build_publisher",
    "build_source",
    "build_timeline",
    "check_inputs",
    "checked_models",
]


def checked_models(config: Config, *, ports: bool = True) -> list[MeterConfig]:
    """Return each meter's model configuration, having checked everything that can be checked
    without touching the database (see :func:`check_inputs` for ``ports``)."""
    models = [
        meter_config(settings, f"{config.path or 'config'}: meters[{index}]")
        for index, settings in enumerate(config.meters)
    ]
    check_inputs(config, ports=ports)
    return models


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


def build_timeline(
    meters: Sequence[MeterSettings],
    stored: Sequence[StoredMeter],
    wall_ns: Callable[[], int],
    monotonic_ns: Callable[[], int],
    synchronized: Callable[[], bool],
) -> Timeline:
    """Return the timeline, never started behind the last edge counted of a live meter
    (simulated and replayed clocks are their own)."""
    floor_ns = max(
        [
            int((entry.core_state or {}).get("last_ns") or 0)
            for entry, settings in zip(stored, meters, strict=True)
            if is_live(settings.source)
        ],
        default=0,
    )
    return Timeline(
        wall_ns=wall_ns, monotonic_ns=monotonic_ns, floor_ns=floor_ns, synchronized=synchronized
    )


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


def build_meters(
    config: Config,
    models: Sequence[MeterConfig],
    stored: Sequence[StoredMeter],
    start_ns: int,
    context: SourceContext,
) -> Meters:
    """Restore each configured meter from what the database holds and give it its source."""
    pipelines = []
    for settings, model, entry in zip(config.meters, models, stored, strict=True):
        pipeline = MeterPipeline(settings, core_settings(settings, model, config.billing), entry)
        last_seen = pipeline.core.last_seen()
        source = build_source(settings, model, start_ns, entry.source_state, last_seen, context)
        pipeline.attach(source, start_ns)
        pipelines.append(pipeline)
    return Meters(pipelines)


def build_publisher(config: Config, database: Database, meters: Meters) -> Publisher:
    """Return the publisher the configuration asks for (MQTT, or the null one when off),
    resumed from the total the database says was published of each meter."""
    publisher: Publisher
    if not config.mqtt.enabled:
        publisher = NullPublisher()
    else:
        from gateway.sinks.identity import database_identity
        from gateway.sinks.mqtt import MqttPublisher  # paho is imported only when MQTT is on
        from gateway.sinks.outbox import Outbox

        publisher = MqttPublisher(
            config.mqtt,
            config.gateway.id,
            [MeterInfo(m.settings.name, m.settings.model) for m in meters],
            Outbox(database),
            identity=database_identity(database),
        )
    for pipeline in meters:
        if pipeline.stored is not None:  # None: new to the database, nothing published yet
            publisher.resume(
                pipeline.name, pipeline.stored.published_wh, pipeline.stored.register_wh
            )
    return publisher
