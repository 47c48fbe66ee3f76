"""A live replay source holds the daemon in bounded memory, whatever the log's size or order.

The daemon runs as a subprocess on a log of about a million edges (a steady 60 kW for 84 hours:
1,008,000 `10` edges), in time order and shuffled, until it has committed edges of its own;
its peak RSS (VmHWM) is then compared with the same daemon's on a log of a
dozen edges. Loading the whole log, as the source once did, cost some 50 MB a million edges
(174 MB for a daemon on a 2 M edge log, 77 MB on a small one).
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from db_helpers import read_db
from mqtt_helpers import wait_for

from gateway.errors import SinkError

T0_S = 1_735_689_600  # 2025-01-01T00:00:00Z
CAP_MB = 100  # the daemon's peak, whatever the log
GROWTH_MB = 30  # at most this much above the daemon's peak on a tiny log


def simulated_log(cli, tmp_path: Path, hours: int, kw: int) -> Path:  # type: ignore[no-untyped-def]
    profile = tmp_path / f"profile-{hours}.csv"
    profile.write_text(f"time,kw\n{T0_S},{kw}\n{T0_S + hours * 3600},{kw}\n")
    log = tmp_path / f"log-{hours}.csv"
    result = cli("simulate", "--profile", str(profile), "--out", str(log), "--meter", "m1")
    assert result.returncode == 0, result.stderr
    return log


def shuffled(log: Path) -> Path:
    lines = log.read_text().splitlines(keepends=True)
    body = next(i for i, line in enumerate(lines) if line.startswith("time,")) + 1
    rows = lines[body:]
    random.Random(21).shuffle(rows)
    out = log.with_name("shuffled.csv")
    out.write_text("".join(lines[:body] + rows))
    return out


def edges_committed(db: Path) -> int:
    if not db.exists():
        return 0
    try:  # through a copy: the running daemon holds its file alone
        with read_db(db) as conn:
            row = conn.execute("select edges from channel_counters where channel = '10'").fetchone()
    except (sqlite3.OperationalError, SinkError):  # not migrated yet, or changing as copied
        return 0
    return 0 if row is None else int(row[0])


def peak_rss_mb(tmp_path: Path, log: Path, name: str) -> float:
    """Run the daemon replaying ``log`` until it committed edges; return its peak RSS in MB."""
    db = tmp_path / f"{name}.db"
    config = tmp_path / f"{name}.toml"
    config.write_text(
        f'[gateway]\nid = "gw"\ndatabase = "sqlite:///{db}"\n\n[mqtt]\nenabled = false\n\n'
        f'[[meters]]\nname = "m1"\nmodel = "2O208-4W"\nsource = "replay"\nfile = "{log}"\n'
        "speed = 1000000\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: edges_committed(db) > 0, 120, "the daemon's first commit")
        # VmHWM, not the child's ru_maxrss: that one counts what the child shared with this
        # process between fork and exec.
        status = Path(f"/proc/{proc.pid}/status").read_text()
        peak_kb = int(next(ln for ln in status.splitlines() if ln.startswith("VmHWM:")).split()[1])
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    return peak_kb / 1024


@pytest.mark.slow
@pytest.mark.parametrize("order", ["in order", "shuffled"])
def test_the_daemon_replays_a_big_log_in_bounded_memory(cli, tmp_path: Path, order: str) -> None:
    tiny = simulated_log(cli, tmp_path, 1, 1)  # 1 kW for an hour: 200 edges
    big = simulated_log(cli, tmp_path, 84, 60)
    if order == "shuffled":
        big = shuffled(big)
    assert sum(1 for line in big.open() if ",10," in line) == 1_008_000
    baseline = peak_rss_mb(tmp_path, tiny, "tiny")
    peak = peak_rss_mb(tmp_path, big, "big")
    assert peak < CAP_MB, f"{peak:.0f} MB on a million edges ({baseline:.0f} MB on 200)"
    assert peak - baseline < GROWTH_MB, f"{peak:.0f} MB against {baseline:.0f} MB on 200 edges"
