"""``amr-gateway run --simulate``: the walking skeleton of the daemon."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from db_helpers import read_db, sqlite_file


def start(cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--simulate", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def counters(db: Path) -> dict[str, int]:
    with read_db(db) as conn:
        return dict(conn.execute("select channel, edges from channel_counters").fetchall())


def wait_for_counts(db: Path, minimum: int, timeout_s: float = 30.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if db.exists():
            try:
                counts = counters(db)
            except sqlite3.OperationalError:
                counts = {}
            if counts.get("10", 0) >= minimum:
                return counts
        time.sleep(0.2)
    raise AssertionError(f"no {minimum} edges in {db} after {timeout_s} s")


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[int, str, str]:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err


def test_runs_on_embedded_defaults_and_stops_cleanly(tmp_path) -> None:
    proc = start(tmp_path, "--speed", "3600")
    wait_for_counts(tmp_path / "gateway.db", 20)
    code, out, err = stop(proc)
    assert code == 0, err
    assert "Traceback" not in err
    lines = [line for line in out.splitlines() if "meter1" in line]
    assert len(lines) >= 2 and "kWh" in lines[-1]
    final = counters(tmp_path / "gateway.db")
    # The last reading line reports the register the database holds.
    assert f"edges 10={final['10']} 1K={final['1K']}" in lines[-1]
    assert final["10"] >= 20


def test_ctrl_c_stops_with_status_0_and_restart_keeps_the_register(tmp_path) -> None:
    proc = start(tmp_path, "--speed", "3600")
    wait_for_counts(tmp_path / "gateway.db", 10)
    code, _, err = stop(proc, signal.SIGINT)
    assert code == 0, err
    before = counters(tmp_path / "gateway.db")["10"]
    proc = start(tmp_path, "--speed", "3600")
    after = wait_for_counts(tmp_path / "gateway.db", before + 10)
    code, _, err = stop(proc)
    assert code == 0, err
    assert after["10"] > before


def test_run_without_simulate_or_config_is_a_usage_error(cli, tmp_path) -> None:
    result = cli("run", cwd=tmp_path)
    assert result.returncode == 2 and "--simulate" in result.stderr
    result = cli("run", "--simulate", "--speed", "-1", cwd=tmp_path)
    assert result.returncode == 2


def source_state(db: Path) -> dict:
    import json

    with read_db(db) as conn:
        return json.loads(conn.execute("select source from meter_state").fetchone()[0])


def test_simulated_meter_resumes_its_clock_and_register(tmp_path) -> None:
    """A restart continues the simulated meter where it stopped, and the gateway's count
    agrees with the model's register to the edge (one edge may still be pending)."""
    edge_nj = 5 * 3600 * 10**9
    proc = start(tmp_path, "--speed", "3600")
    wait_for_counts(tmp_path / "gateway.db", 30)
    assert stop(proc)[0] == 0
    first = source_state(tmp_path / "gateway.db")
    counted = counters(tmp_path / "gateway.db")["10"]
    assert counted in (first["energy_nj"] // edge_nj, first["energy_nj"] // edge_nj - 1)

    proc = start(tmp_path, "--speed", "3600")
    wait_for_counts(tmp_path / "gateway.db", counted + 30)
    assert stop(proc)[0] == 0
    second = source_state(tmp_path / "gateway.db")
    counted = counters(tmp_path / "gateway.db")["10"]
    # The simulated clock went on from where it stopped, not from the wall clock ...
    assert second["t_us"] > first["t_us"]
    assert second["energy_nj"] > first["energy_nj"]
    # ... and the register did not restart: the count still matches the model's register.
    assert counted in (second["energy_nj"] // edge_nj, second["energy_nj"] // edge_nj - 1)


def test_the_gateway_agrees_with_the_model_and_says_when_it_does_not(tmp_path) -> None:
    """In simulation the count is checked against the model's own register, to the edge."""
    proc = start(tmp_path, "--speed", "3600")
    wait_for_counts(tmp_path / "gateway.db", 40)
    assert stop(proc)[0] == 0
    with sqlite_file(tmp_path / "gateway.db") as conn:
        assert conn.execute("select count(*) from events where kind = 'model'").fetchone()[0] == 0

    from gateway.core.meter import MeterCore
    from gateway.sources.simulate import SimulateSource
    from meter_model import MeterConfig

    t0 = 1_764_057_600 * 10**9
    source = SimulateSource("m", MeterConfig.from_model("2O208-4W"), start_ns=t0, speed=3600)
    source.open()
    core = MeterCore("m", start_ns=t0)
    poll = source.poll(0)
    assert source.checker.check(core) == []  # the service checks from the first poll on
    poll = source.poll(10**9)  # one simulated hour
    edges = [e for e in poll.edges if e.channel == "10"]
    assert len(edges) > 100
    # Two edges lost on the way: the levels still alternate, so only the model can tell.
    for edge in edges[:50] + edges[52:]:
        core.push(edge)
    core.advance(poll.now_ns)
    (event,) = source.checker.check(core)
    assert event.kind == "model" and event.missed_wh == 10
    assert source.checker.check(core) == []  # reported once


def simulated_meter_config(tmp_path: Path, ct_rating_a: float, profile: Path | None) -> Path:
    config = tmp_path / "config.toml"
    line = f'profile = "{profile}"' if profile is not None else ""
    config.write_text(
        f"""
[gateway]
database = "sqlite:///{tmp_path / "gateway.db"}"

[mqtt]
enabled = false

[[meters]]
name = "unit-101"
model = "2O208-4W"
source = "simulate"
ct_rating_a = {ct_rating_a}
speed = 3600
{line}
"""
    )
    return config


def test_a_simulated_meter_past_its_cts_is_refused_at_start_up(cli, tmp_path) -> None:
    """Not a traceback from the main loop that systemd restarts into the same crash (issue 17).

    A 2O208-4W has three 120 V lines: 5 A CTs carry 5.5 A each, 3 x 120 V x 5.5 A = 1.98 kW.
    The built-in profile peaks at 650 W base + 150 W wobble + 3,400 W HVAC + 2,600 W evening
    = 6.8 kW, which needs 6,800 / 360 = 18.9 A, so CTs rated 17.2 A or more.
    """
    result = cli("run", "--config", str(simulated_meter_config(tmp_path, 5, None)))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
    assert "meters[0].ct_rating_a" in result.stderr
    assert "built-in profile peaks at 6.8 kW" in result.stderr
    assert "1.98 kW" in result.stderr
    assert not (tmp_path / "gateway.db").exists()
    profile = tmp_path / "profile.csv"
    profile.write_text("time,kw\n1764057600,1.5\n1764061200,5\n1764064800,0\n")
    result = cli("run", "--config", str(simulated_meter_config(tmp_path, 5, profile)))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
    assert "meters[0].ct_rating_a" in result.stderr and "1.98 kW" in result.stderr
    assert f"{profile}:3" in result.stderr and "5 kW" in result.stderr
    assert not (tmp_path / "gateway.db").exists()
    # CTs that carry the peak start counting (18.9 A with the 10 % over the rating).
    enough = simulated_meter_config(tmp_path, 17.2, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(enough)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_counts(tmp_path / "gateway.db", 20)
    code, _, err = stop(proc)
    assert code == 0, err
