"""Configuration: one frozen dataclass tree, validated at start-up (SPEC section 7)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_CONFIG_PATH = "/etc/amr-gateway/config.toml"
DATABASE_FILE = "gateway.db"


def default_database_url() -> str:
    """Return SQLite in systemd's state directory when there is one, else the working directory."""
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    directory = Path(state) if state else Path.cwd()
    return f"sqlite:///{directory / DATABASE_FILE}"


@dataclass(frozen=True)
class GatewaySettings:
    id: str = field(default_factory=socket.gethostname)
    database: str = field(default_factory=default_database_url)
    commit_interval_s: float = 1.0
    report_interval_s: float = 10.0


@dataclass(frozen=True)
class MeterSettings:
    name: str
    model: str = "2O208-4W"
    source: str = "simulate"
    ct_rating_a: float = 200.0
    speed: float = 1.0
    profile: str | None = None


@dataclass(frozen=True)
class Config:
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    meters: tuple[MeterSettings, ...] = ()


def embedded_defaults(speed: float = 1.0) -> Config:
    """Return the configuration ``run --simulate`` uses with no file: one simulated meter."""
    return Config(GatewaySettings(), (MeterSettings("meter1", speed=speed),))
