"""Where the data has holes (SPEC 2 "Watched time"): through the daemon and the command line."""

from __future__ import annotations

import io
import json
import sqlite3
import time
from pathlib import Path

from gpiozero.pins.mock import MockFactory

from gateway.config import BillingSettings, Config, GatewaySettings, MeterSettings, MqttSettings
from gateway.daemon.service import Service
from gateway.timefmt import format_iso, parse_time_ns

NS = 1_000_000_000


def _clock_from(text: str):
    """A wall clock that reads ``text`` now and runs on with the monotonic clock."""
    base, mono = parse_time_ns(text), time.monotonic_ns()
    return lambda: base + time.monotonic_ns() - mono


def _gpio(tmp_path: Path) -> Config:
    return Config(
        GatewaySettings(id="t", database=f"sqlite:///{tmp_path / 'g.db'}"),
        MqttSettings(enabled=False),
        (MeterSettings("m1", model="2O208-4W", source="gpio", pin_10=17),),
        billing=BillingSettings(timezone="UTC"),
    )


def _run_once(tmp_path: Path, wall: str) -> None:
    service = Service(
        _gpio(tmp_path), out=io.StringIO(), pin_factory=MockFactory(), wall_ns=_clock_from(wall)
    )
    service._open_sources()
    service.step()
    service.commit(stamp=True)
    for runtime in service.meters:
        runtime.source.close()
    service.database.close()


def test_a_daemon_down_across_a_read_gives_both_periods_their_share(tmp_path: Path) -> None:
    # Up at 23:00Z on 30 November, down from about 23:00:00 until 01:00Z on 1 December.
    _run_once(tmp_path, "2026-11-30T23:00:00Z")
    _run_once(tmp_path, "2026-12-01T01:00:00Z")
    with sqlite3.connect(tmp_path / "g.db") as conn:
        (period, quality, gap_s) = conn.execute(
            "select period, quality, gap_s from meter_reads"
        ).fetchone()
        (core,) = conn.execute("select core from meter_state").fetchone()
    # November: not watched but for a moment at 23:00Z; at least the last hour is a gap.
    assert (period, quality) == ("2026-11", "partial") and gap_s >= 30 * 24 * 3600 - 60
    # December begins with its own share of the outage, midnight to the restart at 01:00Z.
    gaps = json.loads(core)["billing"]["gaps"]
    assert [(format_iso(a), b - a >= 3600 * NS) for a, b in gaps] == [
        ("2026-12-01T00:00:00Z", True)
    ]
