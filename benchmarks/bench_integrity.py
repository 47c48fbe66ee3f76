"""Benchmark the integrity check every command runs when it opens an SQLite file.

Builds a database holding a year of data per meter through the store (35,040 intervals,
105,120 demand sub-intervals, 12 billing reads' worth of events), then times opening it with
and without the check (``PRAGMA quick_check`` reads every page; the write-ahead log check
reads the log, here after a SIGKILL-like stop that leaves one).

    python benchmarks/bench_integrity.py [--meters N] [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from gateway.checkpoint import MeterBatch
from gateway.core.intervals import Interval
from gateway.sinks import integrity
from gateway.sinks.database import Database
from gateway.sinks.store import Store
from meter_model.demand import SubInterval

T0 = 1_735_689_600 * 10**9  # 2025-01-01
MIN5, MIN15 = 300 * 10**9, 900 * 10**9
YEAR_INTERVALS = 365 * 96


def fill(store: Store, meter: str) -> None:
    step = 96 * 7  # a week per commit
    for lo in range(0, YEAR_INTERVALS, step):
        ks = range(lo, min(YEAR_INTERVALS, lo + step))
        intervals = [
            Interval(meter, T0 + k * MIN15, T0 + (k + 1) * MIN15, 500, 100, "complete") for k in ks
        ]
        subs = [
            SubInterval((T0 + k * MIN5) // 1000, (T0 + (k + 1) * MIN5) // 1000, 165, True)
            for k in range(3 * lo, 3 * ks[-1] + 3)
        ]
        edges = (ks[-1] + 1) * 100
        store.commit(
            [
                MeterBatch(
                    name=meter,
                    model="2O208-4W",
                    source="gpio",
                    core_state={"version": 1},
                    source_state=None,
                    counters={
                        "10": {
                            "edges": edges,
                            "wh_per_edge": 5,
                            "level": edges % 2,
                            "last_edge_ns": T0 + (ks[-1] + 1) * MIN15,
                            "glitches": 0,
                            "inferred": 0,
                            "duplicates": 0,
                            "skipped": 0,
                        }
                    },
                    register_wh=edges * 5,
                    intervals=intervals,
                    subintervals=subs,
                    outbox=False,
                )
            ],
            T0 + (ks[-1] + 1) * MIN15,
        )


def timed_open(url: str, check: bool) -> tuple[float, float]:
    """Open and close the database; return (wall, CPU) seconds (CPU: on a loaded machine)."""
    saved = integrity.check_sqlite_file
    if not check:
        integrity.check_sqlite_file = lambda *args, **kwargs: None  # type: ignore[assignment]
    try:
        start, cpu = time.perf_counter(), time.process_time()
        Database(url, upgrade=False).close()
        return time.perf_counter() - start, time.process_time() - cpu
    finally:
        integrity.check_sqlite_file = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=1)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        db = Path(directory) / "gateway.db"
        url = f"sqlite:///{db}"
        database = Database(url)
        store = Store(database)
        for m in range(args.meters):
            fill(store, f"unit-{101 + m}")
        database.close()
        size_mb = os.path.getsize(db) / 1e6
        print(f"{args.meters} meter(s), a year each: {size_mb:.1f} MB")
        for check in (False, True):
            runs = [timed_open(url, check) for _ in range(args.runs)]
            wall = [w for w, _ in runs]
            cpu = statistics.median(c for _, c in runs)
            print(
                f"open {'with' if check else 'without'} the check: median "
                f"{statistics.median(wall) * 1000:.0f} ms ({cpu * 1000:.0f} ms CPU) over "
                f"{args.runs} runs ({', '.join(f'{t * 1000:.0f}' for t in wall)})"
            )
        start = time.perf_counter()
        integrity.wal_damage(str(db))
        print(f"write-ahead log check without a log: {(time.perf_counter() - start) * 1e6:.0f} µs")


if __name__ == "__main__":
    sys.exit(main())
