"""Configuration: one frozen dataclass tree, loaded from one TOML file, validated at start-up.

SPEC section 7. An unknown key, a value of the wrong type or a missing required key stops
start-up with a ConfigError naming the file and the key (``meters[2].pin_10``). Source-specific
keys are accepted only for their source: each backend in :data:`gateway.sources.BACKENDS` owns a
settings dataclass, and a meter's ``backend`` is one of those.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import socket
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.errors import ConfigError
from gateway.sources import BACKENDS, SourceSettings, source_class

if TYPE_CHECKING:
    from gateway.core.meter import CoreSettings
    from gateway.core.schedule import ReadSchedule
    from meter_model import MeterConfig

DEFAULT_CONFIG_PATH = "/etc/amr-gateway/config.toml"
DATABASE_FILE = "gateway.db"
METER_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)  # fullmatch: "$" takes a "\n"


def default_database_url() -> str:
    """Return SQLite in systemd's state directory when there is one, else the working directory."""
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    directory = Path(state) if state else Path.cwd()
    return f"sqlite:///{directory / DATABASE_FILE}"


URL_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+._-]*://")


def check_database_url(url: str, option: str) -> str:
    """Return ``url``; a bare file path is a ConfigError that says the SQLite URL for it.

    ``option`` names where the URL came from: ``--db`` or ``FILE: gateway.database``.
    """
    if not URL_SCHEME_RE.match(url):
        flag = option.startswith("--")
        raise ConfigError(
            f"{option}{' ' if flag else ': '}{url if flag else repr(url)}: not a database URL;"
            f" for an SQLite file use {option + ' ' if flag else ''}sqlite:///{url}"
        )
    return url


def default_gateway_id() -> str:
    """Return the host name made safe for MQTT topics and Home Assistant ids."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:64] or "amr-gateway"


@dataclass(frozen=True)
class GatewaySettings:
    id: str = field(default_factory=default_gateway_id)
    database: str = field(default_factory=default_database_url)
    # While edges come and nothing closes, commit at most this often: what a power cut can lose
    # of a live meter's count, against bytes on the SD card (docs/persistence.md).
    commit_interval_s: float = 10.0
    report_interval_s: float = 10.0
    capture_dir: str | None = None
    capture_keep_days: int = 30


@dataclass(frozen=True)
class MqttSettings:
    enabled: bool = True
    host: str = "localhost"
    port: int = 1883
    base_topic: str = "amr"
    discovery_prefix: str = "homeassistant"
    protocol: str = "3.1.1"
    keepalive_s: int = 30
    client_id: str | None = None
    username: str | None = None
    password_file: str | None = None
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    state_interval_s: float = 10.0
    commands: tuple[str, ...] = ()


@dataclass(frozen=True)
class BillingSettings:
    """When meters are read for billing (issue #13): ``[billing]``, or per meter."""

    read_day: int = 1
    read_time: str = "00:00"
    timezone: str | None = None  # None: the host's zone


BILLING_KEYS = {"read_day", "read_time", "timezone"}


@dataclass(frozen=True)
class MeterSettings:
    name: str
    model: str = "2O208-4W"
    source: str = "simulate"
    ct_rating_a: float = 200.0
    has_demand: bool = True
    wh_per_edge_10: int = 5
    wh_per_edge_1k: int = 500
    glitch_ms: float = 2.0
    sub_interval_s: int = 300  # demand sub-interval S (SPEC section 2)
    window_s: int = 900  # demand window W
    interval_s: int = 900  # interval data length I
    # billing reads; None: the [billing] section's
    read_day: int | None = None
    read_time: str | None = None
    timezone: str | None = None
    # The keys only the source takes (its backend's settings dataclass); none given: its
    # defaults.
    backend: SourceSettings = field(default_factory=SourceSettings)

    def __post_init__(self) -> None:
        if type(self.backend) is SourceSettings and self.source in BACKENDS:
            object.__setattr__(self, "backend", source_class(self.source).settings_type())

    def with_speed(self, speed: float) -> MeterSettings:
        """Return these settings at ``speed`` when the source is paced (has a ``speed`` key)."""
        if "speed" not in {f.name for f in dataclasses.fields(self.backend)}:
            return self
        paced = dataclasses.replace(self.backend, **{"speed": speed})  # a key the base lacks
        return dataclasses.replace(self, backend=paced)


def meter_settings(name: str, source: str = "simulate", **keys: Any) -> MeterSettings:
    """Return a meter's settings from flat keys, as a ``[[meters]]`` table gives them."""
    backend_type = source_class(source).settings_type
    own = {f.name for f in dataclasses.fields(backend_type)}
    backend = backend_type(**{k: v for k, v in keys.items() if k in own})
    common = {k: v for k, v in keys.items() if k not in own}
    return MeterSettings(name, source=source, backend=backend, **common)


REQUIRED_METER_KEYS = ("name", "model", "source")


@dataclass(frozen=True)
class Config:
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    meters: tuple[MeterSettings, ...] = ()
    path: str | None = None
    billing: BillingSettings = field(default_factory=BillingSettings)
    web: WebSettings = field(default_factory=lambda: WebSettings())


def embedded_defaults(speed: float = 1.0) -> Config:
    """Return the configuration ``run --simulate`` uses with no file: one simulated meter.

    The gateway id is the host name made topic-safe.
    """
    return Config(meters=(meter_settings("meter1", speed=speed),))


def _type_name(kind: Any) -> str:
    if kind is bool:
        return "true or false"
    if kind is int:
        return "an integer"
    if kind is float:
        return "a number"
    if kind is str:
        return "a string"
    return "a list of strings"


def _convert(where: str, value: Any, annotation: Any) -> Any:
    """Check one value against its field's type; return it (ints widen to floats)."""
    kinds = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else ()
    kind = next((k for k in kinds if k is not type(None)), annotation)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # an integer beyond any float: out of every range
            raise ConfigError(f"{where}: an integer beyond any number is out of range") from None
    if kind in (int, float, str) and isinstance(value, kind) and not isinstance(value, bool):
        return value
    if kind is bool and isinstance(value, bool):
        return value
    is_tuple = typing.get_origin(kind) is tuple and isinstance(value, list)
    if is_tuple and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise ConfigError(f"{where}: expected {_type_name(kind)}, got {value!r}")


def _build(cls: type[Any], table: dict[str, Any], where: str, allowed: set[str]) -> Any:
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in allowed:
            raise ConfigError(f"{where}.{key}: unknown key")
        values[key] = _convert(f"{where}.{key}", value, hints[key])
    return cls(**values)


def _build_meter(table: dict[str, Any], where: str) -> MeterSettings:
    """Build a meter's settings: the common keys, and its backend's own (and no other's)."""
    backend_type = source_class(table["source"]).settings_type
    own = {f.name for f in dataclasses.fields(backend_type)}
    common = {f.name for f in dataclasses.fields(MeterSettings)} - {"backend"}
    hints = {**typing.get_type_hints(MeterSettings), **typing.get_type_hints(backend_type)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in common | own:
            raise ConfigError(f"{where}.{key}: unknown key")
        values[key] = _convert(f"{where}.{key}", value, hints[key])
    backend = backend_type(**{k: v for k, v in values.items() if k in own})
    return MeterSettings(**{k: v for k, v in values.items() if k in common}, backend=backend)


def parse_config(data: dict[str, Any], path: str = "config") -> Config:
    """Validate a parsed TOML document into a Config; raise ConfigError naming the key."""
    known = {"gateway", "mqtt", "meters", "billing", "web"}
    for key in data:
        if key not in known:
            raise ConfigError(f"{path}: {key}: unknown section")
    for section in ("gateway", "mqtt", "billing"):
        if section in data and not isinstance(data[section], dict):
            raise ConfigError(f"{path}: {section}: expected a table [{section}]")
    gateway_fields = {f.name for f in dataclasses.fields(GatewaySettings)}
    gateway = _build(GatewaySettings, data.get("gateway", {}), f"{path}: gateway", gateway_fields)
    mqtt_fields = {f.name for f in dataclasses.fields(MqttSettings)}
    mqtt = _build(MqttSettings, data.get("mqtt", {}), f"{path}: mqtt", mqtt_fields)
    if mqtt.protocol not in ("3.1.1", "5"):
        raise ConfigError(f'{path}: mqtt.protocol: expected "3.1.1" or "5"')
    if not 1 <= mqtt.port <= 65535:
        raise ConfigError(f"{path}: mqtt.port: {mqtt.port} is not a port number")
    _check_names(gateway, mqtt, path)
    check_database_url(gateway.database, f"{path}: gateway.database")
    for section, settings in (("gateway", gateway), ("mqtt", mqtt)):
        for key, (lo, hi) in BOUNDS[section].items():
            _bounded(f"{path}: {section}.{key}", getattr(settings, key), lo, hi)
    billing = _build(BillingSettings, data.get("billing", {}), f"{path}: billing", BILLING_KEYS)
    read_schedule(billing, MeterSettings("billing"), f"{path}: billing")
    raw_meters = data.get("meters")
    if not isinstance(raw_meters, list) or not raw_meters:
        raise ConfigError(f"{path}: meters: at least one [[meters]] table is required")
    meters: list[MeterSettings] = []
    for index, table in enumerate(raw_meters):
        where = f"{path}: meters[{index}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a table")
        for key in REQUIRED_METER_KEYS:
            if key not in table:
                raise ConfigError(f"{where}.{key}: missing required key")
        source = table["source"]
        if not isinstance(source, str) or source not in BACKENDS:
            raise ConfigError(f"{where}.source: {source!r} is not one of {', '.join(BACKENDS)}")
        meter = _build_meter(table, where)
        _check_meter(meter, where)
        read_schedule(billing, meter, where)
        meters.append(meter)
    names = [m.name for m in meters]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"{path}: meters[{i}].name: {name!r} is used twice")
        # Home Assistant's entity ids fold case and `-` to `_`: such names would collide.
        folded = [n.lower().replace("-", "_") for n in names[:i]]
        key = name.lower().replace("-", "_")
        if key in folded:
            other = names[folded.index(key)]
            raise ConfigError(
                f"{path}: meters[{i}].name: {name!r} differs from {other!r} only by case or"
                " '-'/'_' (their Home Assistant entity ids would collide)"
            )
    _check_shared(meters, path)
    web = parse_web(data.get("web", {}), path)
    return Config(gateway, mqtt, tuple(meters), path, billing, web)


# Numbers bounded to physical sense (issue #12: values that passed a sign check overflowed
# later). Each range is inclusive, and documented in the README.
BOUNDS: dict[str, dict[str, tuple[float, float]]] = {
    "gateway": {
        "commit_interval_s": (0.001, 86_400),
        "report_interval_s": (0.001, 86_400),
        "capture_keep_days": (1, 36_500),
    },
    "mqtt": {"keepalive_s": (1, 65_535), "state_interval_s": (0.001, 86_400)},
    "meters": {
        # Leviton's split-core and solid-core CTs run from 5 A to a few kA primary.
        "ct_rating_a": (1, 10_000),
        "wh_per_edge_10": (1, 1_000_000),
        "wh_per_edge_1k": (1, 1_000_000),
        "glitch_ms": (0, 1_000),
        "sub_interval_s": (1, 86_400),
        "window_s": (1, 86_400),
        "interval_s": (1, 86_400),
        # a source's own keys are bounded by its settings' field metadata (backend_bounds)
    },
}


def backend_bounds(backend: SourceSettings) -> dict[str, tuple[float, float]]:
    """Return the inclusive range of each bounded key of a source's settings."""
    fields = dataclasses.fields(backend)
    return {f.name: f.metadata["range"] for f in fields if "range" in f.metadata}


def _bounded(where: str, value: float | None, lo: float, hi: float) -> None:
    if value is None:
        return
    if (isinstance(value, float) and not math.isfinite(value)) or not lo <= value <= hi:
        raise ConfigError(f"{where}: {value!r} is out of range: {lo:g} to {hi:g}")


def _check_meter(meter: MeterSettings, where: str) -> None:
    if not METER_NAME_RE.fullmatch(meter.name):
        raise ConfigError(f"{where}.name: {meter.name!r}: use 1-64 of A-Z a-z 0-9 _ -")
    for key, (lo, hi) in BOUNDS["meters"].items():
        _bounded(f"{where}.{key}", getattr(meter, key), lo, hi)
    for key, (lo, hi) in backend_bounds(meter.backend).items():
        _bounded(f"{where}.{key}", getattr(meter.backend, key), lo, hi)
    meter_config(meter, where)  # a mistyped model number stops start-up, with the closest one
    if meter.window_s % meter.sub_interval_s:
        raise ConfigError(
            f"{where}.sub_interval_s: {meter.sub_interval_s} s must divide window_s "
            f"{meter.window_s} s"
        )
    if meter.interval_s % meter.sub_interval_s:
        raise ConfigError(
            f"{where}.sub_interval_s: {meter.sub_interval_s} s must divide interval_s "
            f"{meter.interval_s} s"
        )
    meter.backend.check(where)


TOPIC_PART_RE = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)


def _check_names(gateway: GatewaySettings, mqtt: MqttSettings, path: str) -> None:
    """Topic parts must be plain: no wildcards or separators, and Home Assistant node ids
    allow only [A-Za-z0-9_-]."""
    if not TOPIC_PART_RE.fullmatch(gateway.id):
        raise ConfigError(f"{path}: gateway.id: {gateway.id!r}: use 1-64 of A-Z a-z 0-9 _ -")
    for key in ("base_topic", "discovery_prefix"):
        value = getattr(mqtt, key)
        parts = value.split("/") if value else []
        if (key == "base_topic" and not parts) or not all(
            TOPIC_PART_RE.fullmatch(p) for p in parts
        ):
            raise ConfigError(
                f"{path}: mqtt.{key}: {value!r}: topic levels of A-Z a-z 0-9 _ - separated by /"
            )


def _check_shared(meters: list[MeterSettings], path: str) -> None:
    """A GPIO pin, or a serial port's input, may feed one channel only."""
    used: dict[tuple[str, ...], str] = {}
    for index, meter in enumerate(meters):
        for key, resource in meter.backend.claims():
            value = resource[-1]
            where = f"{path}: meters[{index}].{key}"
            if resource in used:
                raise ConfigError(f"{where}: {value} is already used by {used[resource]}")
            used[resource] = f"meters[{index}].{key}"


# -- [web]: the live view and /metrics (issue 20) ------------------------------------------------


@dataclass(frozen=True)
class WebSettings:
    """The web view: off unless ``listen`` is set; beyond localhost only with a token or TLS
    client certificates."""

    listen: str | None = None  # "HOST:PORT"; port 0 takes a free one
    token_file: str | None = None  # a bearer token, read from this file at start-up
    cert_file: str | None = None  # TLS: the server's certificate chain ...
    key_file: str | None = None  # ... and its key
    client_ca_file: str | None = None  # TLS client certificates signed by this CA are required


LOCALHOST_NAMES = ("localhost", "127.0.0.1", "::1")


def listen_address(listen: str, where: str) -> tuple[str, int]:
    """Return (host, port) of ``HOST:PORT`` (``[V6]:PORT``); ConfigError naming ``where``."""
    host, sep, port = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ConfigError(f'{where}: {listen!r}: expected "HOST:PORT", e.g. "127.0.0.1:8080"')
    return host, int(port)


def is_localhost(host: str) -> bool:
    return host in LOCALHOST_NAMES


def check_web(web: WebSettings, where: str) -> None:
    """Check the [web] keys together: beyond localhost a token or client certificates."""
    if web.listen is None:
        return
    host, _port = listen_address(web.listen, f"{where}.listen")
    if (web.cert_file is None) != (web.key_file is None):
        raise ConfigError(f"{where}.key_file: TLS needs both cert_file and key_file")
    if web.client_ca_file is not None and web.cert_file is None:
        raise ConfigError(f"{where}.client_ca_file: client certificates need cert_file (TLS)")
    if not is_localhost(host) and web.token_file is None and web.client_ca_file is None:
        raise ConfigError(
            f"{where}.listen: {web.listen!r} is beyond localhost: set token_file (or "
            "client_ca_file with cert_file and key_file)"
        )


def parse_web(table: Any, path: str) -> WebSettings:
    """Validate the ``[web]`` table."""
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: web: expected a table [web]")
    keys = {f.name for f in dataclasses.fields(WebSettings)}
    web: WebSettings = _build(WebSettings, table, f"{path}: web", keys)
    check_web(web, f"{path}: web")
    return web


def load_config(path: str) -> Config:
    """Read and validate a TOML configuration file."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, path)


def check_readable(key: str, path: str) -> None:
    """Raise ConfigError naming ``key`` when the file ``path`` cannot be opened for reading."""
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"{key}: {path}: {exc.strerror or exc}") from None


def meter_config(settings: MeterSettings, where: str) -> MeterConfig:
    """Return the meter model's configuration for a configured meter (ConfigError if bad)."""
    from meter_model import MeterConfig, MeterModelError

    try:
        return MeterConfig.from_model(
            settings.model, ct_rating_a=settings.ct_rating_a, has_demand=settings.has_demand
        )
    except MeterModelError as exc:
        raise ConfigError(f"{where}.model: {exc}") from None


def _zone_key(name: str) -> str:
    """Return the IANA key in a TZ value or a zoneinfo path (``:Europe/Paris``, a file path)."""
    name = name.strip().lstrip(":")
    return name.split("zoneinfo/", 1)[1] if "zoneinfo/" in name else name


def _is_zone(key: str) -> bool:
    from zoneinfo import ZoneInfo

    try:
        ZoneInfo(key)
    except (ValueError, KeyError, OSError):  # KeyError: ZoneInfoNotFoundError
        return False
    return True


def host_timezone(localtime: str = "/etc/localtime", timezone: str = "/etc/timezone") -> str:
    """Return the host's IANA time zone: ``TZ``, else /etc/localtime's link, else
    /etc/timezone (Debian's name for a copied /etc/localtime), else UTC.

    A ``TZ`` that names no zone is a ConfigError: billing silently on UTC instead of the zone
    meant would shift every read by hours (issue 16).
    """
    tz = os.environ.get("TZ", "")
    if tz.strip():
        key = _zone_key(tz)
        if not _is_zone(key):
            raise ConfigError(
                f"TZ={tz!r} (from the environment) is not a known time zone: use an IANA name"
                " such as America/New_York, or set [billing] timezone"
            )
        return key
    names: list[str] = []
    with contextlib.suppress(OSError):
        names.append(os.readlink(localtime))
    with contextlib.suppress(OSError, UnicodeDecodeError):
        names.append(Path(timezone).read_text().strip())
    for name in names:
        key = _zone_key(name)
        if key and _is_zone(key):
            return key
    return "UTC"


def read_schedule(
    billing: BillingSettings, meter: MeterSettings, where: str = "config"
) -> ReadSchedule:
    """Return a meter's billing read schedule: its own keys, else ``[billing]``'s."""
    from gateway.core.schedule import ReadSchedule, ScheduleError

    day = meter.read_day if meter.read_day is not None else billing.read_day
    at = meter.read_time if meter.read_time is not None else billing.read_time
    zone = meter.timezone or billing.timezone or host_timezone()
    try:
        return ReadSchedule(day, at, zone, meter.sub_interval_s)
    except ScheduleError as exc:  # the same error, told where in the configuration it is
        raise ScheduleError(exc.key, f"{where}.{exc.key}: {exc}") from None


def core_settings(
    settings: MeterSettings, model: MeterConfig, billing: BillingSettings | None = None
) -> CoreSettings:
    """Return how a configured meter's edges are reconstructed."""
    from gateway.core.edge import CHANNEL_1K, CHANNEL_10
    from gateway.core.meter import CoreSettings
    from meter_model.demand import DemandSettings

    register = settings.backend.register_channel()

    return CoreSettings(
        wh_per_edge={CHANNEL_10: settings.wh_per_edge_10, CHANNEL_1K: settings.wh_per_edge_1k},
        glitch_ns=int(settings.glitch_ms * 1_000_000),
        demand=DemandSettings(settings.sub_interval_s, settings.window_s),
        interval_s=settings.interval_s,
        max_power_w=model.max_power_kw * 1000.0,
        register_channel=register,
        read_schedule=read_schedule(billing or BillingSettings(), settings),
    )


def settings_by_meter(config: Config) -> dict[str, CoreSettings]:
    """Return each configured meter's reconstruction settings (replay uses them by name)."""
    return {
        m.name: core_settings(
            m, meter_config(m, f"{config.path or 'config'}: meters[{i}]"), config.billing
        )
        for i, m in enumerate(config.meters)
    }
