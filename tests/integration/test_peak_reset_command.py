"""A peak reset by MQTT command is stored: the cleared peak as a reset row, the current one gone.

Through the real daemon and broker, on a replayed log whose load is known: one hour at a
steady 12 kW. A full 15-minute window then holds 12 kW x 0.25 h = 3,000 Wh (600 edges of 5 Wh),
so the peak is 12.00 kW. After the log's end no window closes any more, so the reset is what
the next commit writes: a row keeping the cleared peak with its reset time, and no current peak.
"""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest
from db_helpers import read_db
from mqtt_helpers import Gateway, Subscriber, wait_for

from gateway.errors import SinkError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

T0 = 1_764_057_600  # 2025-11-25T08:00:00Z, a multiple of 15 minutes
END = "2025-11-25T09:00:00"


def peaks(db: Path) -> list[tuple[int, int, int | None]]:
    """(window energy Wh, window end s, reset time ns or None) of every peak row."""
    if not db.exists():
        return []
    try:  # through a copy: a running daemon holds its file alone
        with read_db(db) as conn:
            rows = conn.execute(
                "select window_energy_wh, window_end_ns, reset_ns from demand_peaks order by id"
            ).fetchall()
    except (sqlite3.OperationalError, SinkError):  # not created yet, or changing as copied
        return []
    return [(wh, end // 10**9, reset) for wh, end, reset in rows]


def test_a_peak_reset_by_mqtt_command_is_stored_and_the_current_peak_removed(
    cli, tmp_path: Path, broker
) -> None:
    profile = tmp_path / "profile.csv"
    profile.write_text(f"time,kw\n{T0},12\n{T0 + 3600},0\n")
    log = tmp_path / "hour.csv"
    made = cli("simulate", "--profile", str(profile), "--out", str(log), "--meter", "unit-101")
    assert made.returncode == 0, made.stderr
    db = tmp_path / "gateway.db"
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[gateway]
id = "gwp"
database = "sqlite:///{db}"
commit_interval_s = 0.2

[mqtt]
host = "127.0.0.1"
port = {broker.port}
state_interval_s = 0.5
commands = ["reset_peak"]

[[meters]]
name = "unit-101"
model = "2O208-4W"
source = "replay"
file = "{log}"
speed = 3600
"""
    )
    sub = Subscriber(broker, ["amr/gwp/unit-101/state", "amr/gwp/unit-101/event"])
    gw = Gateway(config).start()
    try:
        # The log is over and its peak is on the card: one current row, 3,000 Wh.
        wait_for(
            lambda: any(m.json()["time"].startswith(END) for m in sub.on("amr/gwp/unit-101/state")),
            60,
            "the end of the log",
        )
        wait_for(lambda: [p for p in peaks(db) if p[2] is None], 30, "the current peak row")
        (before,) = peaks(db)
        assert before[0] == 3_000 and before[2] is None, before
        subprocess.run(
            [
                "mosquitto_pub",
                "-p",
                str(broker.port),
                "-q",
                "1",
                "-t",
                "amr/gwp/unit-101/cmd/reset_peak",
                "-m",
                "1",
            ],
            check=True,
        )
        # The event goes out through the outbox, so it is committed with the reset.
        wait_for(
            lambda: any(m.json()["kind"] == "peak_reset" for m in sub.on("amr/gwp/unit-101/event")),
            30,
            "the reset event",
        )
    finally:
        status = gw.stop()
    sub.close()
    assert status == 0, gw.stderr.decode()
    after = peaks(db)
    # The cleared peak, kept with when it was reset (the log's end: the meter's time then) ...
    assert [(wh, end) for wh, end, _ in after] == [(before[0], before[1])], after
    assert after[0][2] == (T0 + 3600) * 10**9, after
    # ... and no current peak row any more: the peak is 0 until a window closes.
    assert not [p for p in after if p[2] is None]
    last = sub.on("amr/gwp/unit-101/state")[-1].json()
    assert last["peak_demand_kw"] == 0.0 and last["peak_demand_end"] is None
