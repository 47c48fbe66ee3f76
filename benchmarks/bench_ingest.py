"""Benchmark sustained ingest into SQLite with the default batching (issue 4).

The service's own loop (poll, core, commit at most once a second) is driven in-process by a
replay source paced far faster than real time, so edges arrive as fast as the loop takes them.
Goal: at least 50,000 edges per second into SQLite, committed.

    python benchmarks/bench_ingest.py [--minutes-of-log N] [--runs N]
"""

from __future__ import annotations

import argparse
import io
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import gateway, run_timed, write_profile

from gateway.config import Config, GatewaySettings, MqttSettings, meter_settings
from gateway.daemon.service import Service

T0_S = 1_735_689_600


def make_log(directory: Path, minutes: int) -> Path:
    profile = directory / "profile.csv"
    write_profile(profile, T0_S, minutes, lambda _t_us: 40_000_000)  # a steady 40 kW
    log = directory / "ingest.csv"
    run_timed(gateway("simulate", "--profile", str(profile), "--out", str(log)))
    return log


def once(log: Path, directory: Path) -> tuple[int, float, int]:
    db = directory / f"ingest-{time.monotonic_ns()}.db"
    config = Config(
        GatewaySettings(id="bench", database=f"sqlite:///{db}"),
        MqttSettings(enabled=False),
        (meter_settings("meter1", source="replay", file=str(log), speed=1e9),),
    )
    service = Service(config, out=io.StringIO())
    stop = threading.Event()
    runtime = service.meters[0]
    for meter in service.meters:
        meter.source.open()
    commits = 0
    start = time.perf_counter()
    last_commit = start
    while not runtime.finished:
        service.step()
        if time.perf_counter() - last_commit >= config.gateway.commit_interval_s:
            service.commit()
            commits += 1
            last_commit = time.perf_counter()
    service.commit()
    commits += 1
    elapsed = time.perf_counter() - start
    stop.set()
    service.database.close()
    with sqlite3.connect(db) as conn:
        edges = sum(row[0] for row in conn.execute("select edges from channel_counters"))
    return edges, elapsed, commits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes-of-log", type=int, default=3 * 24 * 60)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        log = make_log(directory, args.minutes_of_log)
        rates = []
        for _ in range(args.runs):
            edges, elapsed, commits = once(log, directory)
            rates.append(edges / elapsed)
            print(
                f"{edges:,} edges committed in {elapsed:.2f} s ({commits} commits): "
                f"{edges / elapsed:,.0f} edges/s"
            )
        print(f"median: {statistics.median(rates):,.0f} edges/s into SQLite (goal 50,000)")


if __name__ == "__main__":
    sys.exit(main())
