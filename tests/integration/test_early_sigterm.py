"""A SIGTERM at any moment of start-up is a clean stop: the handler comes before the imports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from mqtt_helpers import wait_for

CONFIG = """
[gateway]
id = "early"
database = "sqlite:///{db}"

[mqtt]
enabled = false

[[meters]]
name = "m1"
model = "2O208-4W"
source = "simulate"
speed = 3600
"""

SPY = """
import json, runpy, signal, sys
seen = []
real = signal.signal
def spy(number, handler):
    if number == signal.SIGTERM and not seen:
        seen.append(sorted(sys.modules))
    return real(number, handler)
signal.signal = spy
sys.argv = ["gateway", *sys.argv[1:]]
try:
    runpy.run_module("gateway", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
print(json.dumps(seen[0] if seen else None))
"""


def test_the_sigterm_handler_comes_before_the_run_paths_imports(tmp_path: Path) -> None:
    """What is loaded when ``python -m gateway run`` installs its SIGTERM handler."""
    result = subprocess.run(
        [sys.executable, "-c", SPY, "run", "--config", str(tmp_path / "absent.toml")],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = set(json.loads(result.stdout.splitlines()[-1]))
    heavy = {"gateway.cli", "gateway.config", "numpy", "sqlalchemy", "paho", "argparse"}
    assert "gateway.daemon.signals" in loaded
    assert not heavy & loaded, sorted(heavy & loaded)


def signal_caught(pid: int, number: int) -> bool:
    """Whether the process has a handler for ``number`` (SigCgt in /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) >> (number - 1) & 1)


def spawn(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_sigterms_at_once_after_spawn_stop_cleanly(tmp_path: Path) -> None:
    """Sent the moment the handler exists: status 0, every time, without a traceback.

    Sent right after spawn, it may come while Python itself starts, before any line of the
    gateway runs: then the default action ends it (-15), with nothing opened (documented).
    """
    db = tmp_path / "g.db"
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(db=db))
    statuses = []
    for _ in range(12):
        proc = spawn(config)
        wait_for(lambda proc=proc: signal_caught(proc.pid, signal.SIGTERM) or proc.poll(), 30)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert b"Traceback" not in err, err.decode()
        statuses.append(proc.returncode)
    assert statuses == [0] * 12
    for _ in range(12):
        proc = spawn(config)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert b"Traceback" not in err, err.decode()
        assert proc.returncode in (0, -signal.SIGTERM), err.decode()
