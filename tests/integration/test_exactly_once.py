"""Nothing lost, nothing doubled: imports, restarts and SIGKILL at any moment."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from db_helpers import read_db
from mqtt_helpers import wait_for

from gateway.errors import SinkError

T0 = 1_764_057_600  # 2025-11-25T08:00:00Z
SIX_HOURS = [  # (offset s, kW): a working day's worth of load changes, compressed into 6 hours
    (0, 3.2),
    (1800, 7.9),
    (3600, 12.5),
    (5400, 4.4),
    (7200, 0.0),
    (9000, 9.1),
    (10800, 15.0),
    (12600, 6.3),
    (14400, 2.2),
    (16200, 11.7),
    (18000, 5.0),
    (19800, 8.8),
    (21600, 0.0),
]


def make_log(cli, tmp_path: Path) -> tuple[Path, dict[str, int]]:
    profile = tmp_path / "profile.csv"
    profile.write_text("time,kw\n" + "".join(f"{T0 + s},{kw}\n" for s, kw in SIX_HOURS))
    log = tmp_path / "six-hours.csv"
    result = cli("simulate", "--profile", str(profile), "--out", str(log), "--meter", "unit-101")
    assert result.returncode == 0, result.stderr
    text = log.read_text()
    return log, {"10": text.count(",10,"), "1K": text.count(",1K,")}


def write_config(tmp_path: Path, log: Path, db: Path, speed: float = 3600) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[gateway]
id = "gw-test"
database = "sqlite:///{db}"

[mqtt]
enabled = false

[[meters]]
name = "unit-101"
model = "2O208-4W"
source = "replay"
file = "{log}"
speed = {speed}
"""
    )
    return config


def counters(db: Path) -> dict[str, int]:
    try:
        with read_db(db) as conn:
            return dict(conn.execute("select channel, edges from channel_counters").fetchall())
    except (sqlite3.OperationalError, SinkError):
        return {}


def start(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def run_to_the_end(config: Path, db: Path, expected: dict[str, int], timeout_s: float = 90) -> None:
    proc = start(config)
    deadline = time.monotonic() + timeout_s
    time.sleep(1.5)  # let it start before it may be told to stop
    try:
        while time.monotonic() < deadline:
            if counters(db) == expected:
                break
            if proc.poll() is not None:
                raise AssertionError(f"gateway exited: {proc.stderr.read().decode()}")  # type: ignore[union-attr]
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert counters(db) == expected


def check_consistent_so_far(db: Path) -> int:
    """Check what every commit leaves true, also mid-run; return the register in Wh."""
    # Through a copy, closed at once: a connection left open in this process would keep a
    # WAL index that the next run (which keeps its own in memory) does not update.
    with read_db(db) as conn:
        register = conn.execute("select register_wh, core from meter_state").fetchone()
        edges = conn.execute("select edges from channel_counters where channel = '10'").fetchone()
        assert register[0] == 5 * edges[0]  # the register and its counter move together
        starts = [
            row[0] for row in conn.execute("select start_ns from intervals order by start_ns")
        ]
        assert starts == sorted(set(starts))
        core = json.loads(register[1])
        # A finished log's last interval is stored and also still open (a later log may
        # continue it): count it once.
        tail_ns = core.get("tail_ns")
        closed_wh = conn.execute(
            "select coalesce(sum(energy_wh), 0) from intervals where start_ns < ?",
            (tail_ns if tail_ns is not None else 2**62,),
        ).fetchone()[0]
        open_edges = core["intervals"]["edges"]["10"]
        assert closed_wh + 5 * sum(n for _, n in open_edges) == register[0]
        seqs = [
            row[0]
            for row in conn.execute(
                "select seq from mqtt_outbox where kind = 'interval' order by seq"
            )
        ]
        assert seqs == list(range(1, len(seqs) + 1))  # no gap, no repeat
        assert len(seqs) == len(starts)
    return int(register[0])


def check_consistent(db: Path, expected: dict[str, int]) -> None:
    assert check_consistent_so_far(db) == expected["10"] * 5


def test_replay_import_twice_adds_nothing(cli, tmp_path) -> None:
    log, expected = make_log(cli, tmp_path)
    url = f"sqlite:///{tmp_path / 'imp.db'}"
    first = cli("replay", str(log), "--db", url, "--json")
    assert first.returncode == 0, first.stderr
    m1 = json.loads(first.stdout)["meters"]["unit-101"]
    again = cli("replay", str(log), "--db", url, "--json")
    m2 = json.loads(again.stdout)["meters"]["unit-101"]
    assert m2["energy_wh"] == m1["energy_wh"]
    assert m2["edges"] == m1["edges"]
    assert m2["skipped"] == expected["10"] + expected["1K"]
    # All but the last edge, which stays pending as live operation leaves it: a later edge
    # or more time could still show it was a glitch.
    assert m1["energy_wh"] in (expected["10"] * 5, expected["10"] * 5 - 5)


def test_overlapping_imports_add_up_to_the_whole(cli, tmp_path) -> None:
    log, _ = make_log(cli, tmp_path)
    lines = log.read_text().splitlines(keepends=True)
    body = [line for line in lines if line[:1].isdigit()]
    header = "time,meter,channel,level\n"
    first = tmp_path / "first.csv"
    first.write_text(header + "".join(body[: len(body) * 2 // 3]))
    second = tmp_path / "second.csv"
    second.write_text(header + "".join(body[len(body) // 3 :]))
    url_split = f"sqlite:///{tmp_path / 'split.db'}"
    url_whole = f"sqlite:///{tmp_path / 'whole.db'}"
    assert cli("replay", str(first), "--db", url_split).returncode == 0
    assert cli("replay", str(second), "--db", url_split).returncode == 0
    assert cli("replay", str(log), "--db", url_whole).returncode == 0
    split = json.loads(cli("status", "--db", url_split, "--json").stdout)["meters"]["unit-101"]
    whole = json.loads(cli("status", "--db", url_whole, "--json").stdout)["meters"]["unit-101"]
    assert split["energy_wh"] == whole["energy_wh"]
    assert split["edges"] == whole["edges"]
    assert split["peak_demand_kw"] == whole["peak_demand_kw"]


def test_bad_log_imports_nothing(cli, tmp_path) -> None:
    log, _ = make_log(cli, tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text(log.read_text() + "1764080000.000000,unit-101,10,9\n")
    url = f"sqlite:///{tmp_path / 'imp.db'}"
    result = cli("replay", str(bad), "--db", url)
    assert result.returncode == 2 and "bad.csv:" in result.stderr
    assert not (tmp_path / "imp.db").exists()  # the logs are read whole before it is created


def committed_beyond(proc: subprocess.Popen[bytes], db: Path, edges: int) -> Callable[[], bool]:
    """A wait_for predicate: the database counts more than ``edges``; fails if the run died."""

    def check() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"gateway exited: {proc.stderr.read().decode()}")  # type: ignore[union-attr]
        return counters(db).get("10", 0) > edges

    return check


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_and_doubles_nothing(cli, tmp_path) -> None:
    log, expected = make_log(cli, tmp_path)
    db = tmp_path / "gateway.db"
    # Slow enough that the log outlasts many runs: each one replays at least a commit's worth.
    config = write_config(tmp_path, log, db, speed=1200)
    rng = random.Random(2026)
    kills = 0
    seen: list[int] = []
    for _ in range(22):
        before = counters(db).get("10", 0)
        proc = start(config)
        try:
            # A kill before the run's first commit would only test start-up (on a slow, loaded
            # machine that takes seconds): wait until this run has committed edges of its own,
            # then kill it at a random moment, in or between commits.
            wait_for(committed_beyond(proc, db, before), 120, "this run's first commit")
            time.sleep(rng.uniform(0.0, 1.0))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        kills += 1
        now = counters(db).get("10", 0)
        assert not seen or now >= seen[-1], "the register went backwards"
        seen.append(now)
        assert check_consistent_so_far(db) == 5 * now
        if now == expected["10"]:
            break
    assert kills >= 20 or seen[-1] == expected["10"]
    assert len(set(seen)) > 3, f"the kills did not land while it wrote: {seen}"
    run_to_the_end(config, db, expected)
    check_consistent(db, expected)


def test_sigterm_and_restart_resume_exactly(cli, tmp_path) -> None:
    log, expected = make_log(cli, tmp_path)
    db = tmp_path / "gateway.db"
    config = write_config(tmp_path, log, db, speed=7200)
    proc = start(config)
    # Once it has committed edges (start-up takes seconds on a loaded machine), stop it.
    wait_for(committed_beyond(proc, db, 0), 120, "a first commit")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    partway = counters(db)["10"]
    assert 0 < partway < expected["10"]
    run_to_the_end(config, db, expected)
    check_consistent(db, expected)
