"""Build each meter's source from its settings: the one place that knows every backend."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.config import Config, MeterSettings, MqttSettings, meter_config
from gateway.core.edge import CHANNEL_1K, CHANNEL_10
from gateway.daemon.clock import Timeline
from gateway.errors import ConfigError
from gateway.sources import Source
from meter_model import MeterConfig
from meter_model.profiles import BUILTIN_PEAK_MW


@dataclass
class SourceContext:
    """What sources share: the timeline, serial boards by port, a GPIO pin factory for tests."""

    timeline: Timeline
    pin_factory: Any = None
    boards: dict[str, Any] = field(default_factory=dict)
    serial_opener: Any = None


def check_inputs(config: Config, *, ports: bool = True) -> None:
    """Check every file the configuration names, before anything is created (issue #12).

    A file that cannot be read (or a serial port that is not there, with ``ports``) is a
    ConfigError naming the configuration file and the key; a profile or replay log that is
    malformed is a PulseLogError naming its file and line.
    """
    from gateway.loadprofile import read_profile
    from gateway.pulselog.scan import LogScanner

    where = f"{config.path or 'config'}:"
    for index, meter in enumerate(config.meters):
        key = f"{where} meters[{index}]"
        if ports and meter.source == "serial" and not os.path.exists(meter.port or ""):
            raise ConfigError(f"{key}.port: {meter.port} does not exist")
        if meter.source == "simulate":
            peak_mw, peak = BUILTIN_PEAK_MW, "the built-in profile peaks at {kw:g} kW"
            if meter.profile is not None:
                _readable(f"{key}.profile", meter.profile)
                profile = read_profile(meter.profile)  # two rows at least: one has a power
                row = int(profile.power_mw.argmax())
                peak_mw = int(profile.power_mw[row])
                peak = f"{meter.profile}:{int(profile.lines[row])} asks {{kw:g}} kW"
            _check_ct_rating(key, meter, peak_mw, peak)
        if meter.source == "replay" and meter.file is not None:
            _readable(f"{key}.file", meter.file)
            scanner = LogScanner(meter.file)
            for _chunk in scanner.chunks():
                pass
            if meter.name not in scanner.meters:
                raise ConfigError(f"{key}.file: {meter.file} has no rows for meter {meter.name!r}")
    if config.mqtt.enabled:
        _check_mqtt_files(config.mqtt, f"{where} mqtt")


def _check_ct_rating(key: str, meter: MeterSettings, peak_mw: int, peak: str) -> None:
    """Refuse a simulated load its CTs cannot carry: the meter model would raise mid-run."""
    model = meter_config(meter, key)
    if peak_mw > model.nominal_max_power_kw * 1_000_000:
        raise ConfigError(
            f"{key}.ct_rating_a: {meter.ct_rating_a:g} A CTs carry at most "
            f"{model.nominal_max_power_kw:g} kW on a {model.model.text} (nominal voltage, CT "
            f"rating + 10 %), but {peak.format(kw=peak_mw / 1e6)}; give CTs rated for the load"
        )


def _readable(key: str, path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"{key}: {path}: {exc.strerror or exc}") from None


def _check_mqtt_files(mqtt: MqttSettings, where: str) -> None:
    import ssl

    if mqtt.username is not None and mqtt.password_file:
        _readable(f"{where}.password_file", mqtt.password_file)
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(mqtt, key)
        if path:
            _readable(f"{where}.{key}", path)
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
    """Return the source a meter's settings name.

    ``source_state`` is what the source's :meth:`~Source.resume_state` gave at the last commit,
    ``last_seen`` the last edge the core saw per channel: a resumed source continues from them.
    """
    if settings.source == "gpio":
        from gateway.sources.gpio import GpioSource

        pins = {
            ch: pin
            for ch, pin in ((CHANNEL_10, settings.pin_10), (CHANNEL_1K, settings.pin_1k))
            if pin is not None
        }
        return GpioSource(settings.name, pins, context.timeline, pin_factory=context.pin_factory)
    if settings.source == "serial":
        from gateway.sources.serial import SerialBoard, SerialSource

        assert settings.port is not None
        board = context.boards.get(settings.port)
        if board is None:
            board = context.boards[settings.port] = SerialBoard(
                settings.port, settings.baudrate, opener=context.serial_opener
            )
        inputs = {
            ch: number
            for ch, number in ((CHANNEL_10, settings.input_10), (CHANNEL_1K, settings.input_1k))
            if number is not None
        }
        return SerialSource(settings.name, board, inputs, context.timeline, state=source_state)
    if settings.source == "simulate":
        from gateway.sources.simulate import SimulateSource

        return SimulateSource(
            settings.name,
            model,
            start_ns=start_ns,
            speed=settings.speed,
            profile=settings.profile,
            state=source_state,
        )
    if settings.source == "replay":
        from gateway.sources.replay import ReplaySource

        assert settings.file is not None
        return ReplaySource(
            settings.name,
            settings.file,
            speed=settings.speed,
            resume=dict(last_seen),
            state=source_state,
        )
    raise ConfigError(f"meters.{settings.name}.source: {settings.source!r} is not available yet")
