"""The collector's configuration: ``[collector]`` in its own TOML file, validated at start-up.

An unknown key, a wrong type or a missing ``database`` stops start-up with a ConfigError naming
the file and key (``collector.toml: collector.port: expected an integer, got 'x'``). Passwords
come from files (``password_file`` for the broker, ``database_password_file`` for the
database) and are never logged.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from dataclasses import dataclass, field
from typing import Any

from gateway.config import WebSettings, default_gateway_id, parse_web
from gateway.errors import ConfigError

DEFAULT_COLLECTOR_CONFIG = "/etc/amr-gateway/collector.toml"
TOPIC_WORD_RE = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)
WEEK_S = 7 * 86_400


@dataclass(frozen=True)
class CollectorSettings:
    database: str  # any SQLAlchemy URL (PostgreSQL for a fleet; SQLite for a small site)
    database_password_file: str | None = None
    host: str = "localhost"
    port: int = 1883
    protocol: str = "5"  # "5" (session expiry) or "3.1.1" (clean_session = false)
    keepalive_s: int = 30
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password_file: str | None = None
    base_topic: str = "amr"
    discovery_prefix: str = "homeassistant"  # "" ignores discovery (models stay unknown)
    share_group: str = "amr-collectors"
    client_id: str = field(default_factory=lambda: f"amr-collector-{default_gateway_id()}")
    session_expiry_s: int = WEEK_S  # how long the broker keeps our queue while we are away
    batch_size: int = 1000  # messages per transaction, at most
    batch_wait_ms: int = 50  # how long a batch waits to fill
    resend: bool = True  # ask a gateway to re-send what a gap misses (its "resend" command)
    # The fleet page: the file's [web] table (the gateway's keys), not a [collector] key.
    web: WebSettings = field(default_factory=WebSettings)


TABLES = ("web",)  # settings read from a table of their own, not from [collector]


BOUNDS: dict[str, tuple[int, int]] = {
    "port": (1, 65_535),
    "keepalive_s": (1, 65_535),
    "session_expiry_s": (0, 2**32 - 1),
    "batch_size": (1, 65_535),
    "batch_wait_ms": (0, 10_000),
}


def _check(where: str, key: str, value: Any, annotation: Any) -> Any:
    kinds = typing.get_args(annotation) or (annotation,)
    kind = next(k for k in kinds if k is not type(None))
    if kind is bool:
        ok = isinstance(value, bool)
    else:
        ok = isinstance(value, kind) and not isinstance(value, bool)
    if not ok:
        name = {bool: "true or false", int: "an integer", str: "a string"}[kind]
        raise ConfigError(f"{where}.{key}: expected {name}, got {value!r}")
    if key in BOUNDS:
        lo, hi = BOUNDS[key]
        if not lo <= value <= hi:
            raise ConfigError(f"{where}.{key}: {value} is not within {lo} to {hi}")
    return value


def parse_collector(data: dict[str, Any], path: str) -> CollectorSettings:
    """Validate a parsed TOML document; raise ConfigError naming the key."""
    for key in data:
        if key not in ("collector", *TABLES):
            raise ConfigError(
                f"{path}: {key}: unknown section (a collector file has [collector] and [web])"
            )
    table = data.get("collector")
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: collector: a [collector] table is required")
    hints = typing.get_type_hints(CollectorSettings)
    fields = {f.name for f in dataclasses.fields(CollectorSettings)} - set(TABLES)
    where = f"{path}: collector"
    values = {}
    for key, value in table.items():
        if key not in fields:
            raise ConfigError(f"{where}.{key}: unknown key")
        values[key] = _check(where, key, value, hints[key])
    if "database" not in values:
        raise ConfigError(f"{where}.database: missing (the fleet database's URL)")
    if values.get("protocol", "5") not in ("5", "3.1.1"):
        raise ConfigError(f'{where}.protocol: {values["protocol"]!r} is not "5" or "3.1.1"')
    for key in ("base_topic", "share_group"):
        if key in values and not TOPIC_WORD_RE.fullmatch(values[key]):
            raise ConfigError(f"{where}.{key}: {values[key]!r} is not [A-Za-z0-9_-]{{1,64}}")
    if "web" in data:
        values["web"] = parse_web(data["web"], path)
    return CollectorSettings(**values)


def load_collector(path: str) -> CollectorSettings:
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 ({exc.reason})") from None
    return parse_collector(data, path)


def read_secret(path: str, key: str) -> str:
    """Read a password file's first line; the password is never logged."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise ConfigError(f"collector.{key} {path}: {why}") from None


def database_url(settings: CollectorSettings) -> str:
    """Return the database URL with the password from ``database_password_file``, if given."""
    if settings.database_password_file is None:
        return settings.database
    password = read_secret(settings.database_password_file, "database_password_file")
    from sqlalchemy.engine import make_url

    try:
        url = make_url(settings.database)
    except Exception as exc:
        raise ConfigError(
            f"collector.database: not a database URL ({type(exc).__name__})"
        ) from None
    return url.set(password=password).render_as_string(hide_password=False)
