"""Benchmark ``amr-gateway status`` against ``python -c pass`` (issue 21: a quick status).

Goal: ``status --db sqlite:///...`` under 0.15 s where ``python -c pass`` takes about 0.012 s
(so about 13x it), for a glance on a Pi Zero. The quick path (gateway.sinks.quickread, stdlib
``sqlite3`` read-only) is timed beside the full one (SQLAlchemy, as before issue 21) on the
same database: a day of the built-in household profile, imported with ``replay --db``, and an
LCD reading. Bytecode is cached as in an installation. Runs alternate (pass, quick, full, pass, ...) so that a machine whose speed drifts
moves all three alike; each figure is a median, wall and CPU (user + system) seconds, and the
median peak RSS.

    python benchmarks/bench_status.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from _common import DATA, gateway

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FULL = """
import sys, time
from gateway.commands.database import open_database, status_of, write_status
from gateway.sinks.readback import Readback
url = sys.argv[1]
database = open_database(url)
try:
    meters = status_of(Readback(database), time.time_ns())
finally:
    database.close()
write_status(meters, url, True, sys.stdout)
"""


def make_database() -> str:
    DATA.mkdir(exist_ok=True)
    db = DATA / "status.db"
    if not db.exists():
        log = str(DATA / "status-day.csv.gz")
        profile = os.path.join(ROOT, "docs", "day-profile.csv")
        url = f"sqlite:///{db}"
        for args in (
            ("simulate", "--profile", profile, "--out", log, "--meter", "unit-101"),
            ("replay", log, "--db", url),
            ("reconcile", "--db", url, "--meter", "unit-101", "--lcd-kwh", "60"),
        ):
            subprocess.run(gateway(*args), check=True, capture_output=True)
    return str(db)


# As installed: Python's bytecode cached (an environment with PYTHONDONTWRITEBYTECODE would
# compile every module at every start, and time the compiler), in a cache of the benchmark's own.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
ENV["PYTHONPYCACHEPREFIX"] = str(DATA / "pycache")


def run(args: list[str]) -> tuple[float, float, float]:
    """Run a command to completion; return (wall s, CPU s, peak RSS MB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, env=ENV)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args)} failed")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    url = f"sqlite:///{make_database()}"
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "status (quick: sqlite3)": gateway("status", "--db", url, "--json"),
        "status (full: SQLAlchemy)": [sys.executable, "-c", FULL, url],
    }
    found: dict[str, list[tuple[float, float, float]]] = {name: [] for name in commands}
    for command in commands.values():  # one warm-up each: the page cache, .pyc files
        run(command)
    for _ in range(args.runs):
        for name, command in commands.items():
            found[name].append(run(command))
    base_wall = statistics.median(w for w, _, _ in found["python -c pass"])
    base_cpu = statistics.median(c for _, c, _ in found["python -c pass"])
    print(f"{args.runs} runs each, alternating, bytecode cached; medians")
    for name, runs in found.items():
        wall = statistics.median(w for w, _, _ in runs)
        cpu = statistics.median(c for _, c, _ in runs)
        rss = statistics.median(r for _, _, r in runs)
        print(
            f"{name:27} wall {wall:.3f} s ({wall / base_wall:4.1f}x pass), "
            f"CPU {cpu:.3f} s ({cpu / base_cpu:4.1f}x pass), peak RSS {rss:.0f} MB"
        )


if __name__ == "__main__":
    main()
