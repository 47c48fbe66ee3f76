"""Benchmark what the daemon writes to its SD card, and what a commit costs (issue 10).

The real :class:`Service` runs on a real SQLite file with the default settings, but on a clock
this script turns (one tick per simulated second), so a whole day takes a minute or so. Live
meters (``gpio``-like: the wall clock, downtime as gaps) are fed by a synthetic source: none at
all (idle), or 100 edges a second on `10` with every 100th on `1K` too. Every message queued in
the MQTT outbox is acknowledged at once, as a connected broker would, so the outbox's deletes are
counted too.

Figures per simulated day: the bytes the card sees, commits, and the CPU the commits took, per
meter per second of operation. The bytes are ``write_bytes`` in /proc/self/io: what the process
sent to the block layer, counted by whole 4 KiB pages as they turn dirty (a page written again
after a sync counts again), so the database must live on a real file system (``--dir``; a tmpfs
counts 0). The simulated day passes in a minute or so, faster than the kernel writes back what
nobody syncs (SQLite's ``-shm`` file, when there is one): every 30 simulated seconds each file
in the directory is synced, as the kernel's writeback does after ``dirty_expire_centisecs``
(3000 by default), so those pages are counted as often as the card would see them.

    python benchmarks/bench_durability.py [--meters 1] [--hours 24] [--commit-interval S]
                                          [--dir DIR]
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from gateway.config import Config, GatewaySettings, MeterSettings, MqttSettings
from gateway.core.edge import CHANNEL_1K, CHANNEL_10, Edge
from gateway.daemon.service import Service
from gateway.sinks.outbox import Outbox
from gateway.sources import Poll, Source

T0_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
NS = 10**9


class Synthetic(Source):
    """A live meter whose `10` output toggles ``rate`` times a second, steadily."""

    live = True

    def __init__(self, meter: str, rate: int, wall_ns: Callable[[], int]) -> None:
        self.meter = meter
        self.rate = rate
        self.wall_ns = wall_ns
        self.n = 0
        self.last_ns = wall_ns()

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def poll(self, mono_ns: int) -> Poll:
        now = self.wall_ns()
        edges = []
        if self.rate:
            step = NS // self.rate
            t = (self.last_ns // step + 1) * step
            while t <= now:
                self.n += 1
                edges.append(Edge(t, self.meter, CHANNEL_10, self.n % 2))
                if self.n % 100 == 0:
                    edges.append(Edge(t, self.meter, CHANNEL_1K, (self.n // 100) % 2))
                t += step
        self.last_ns = now
        return Poll(edges, now)


WRITEBACK_S = 30  # the kernel writes back a dirty page this long after it turned dirty


def write_bytes() -> int:
    """Return the bytes this process has sent to the block layer."""
    with open("/proc/self/io") as handle:
        return int(next(line for line in handle if line.startswith("write_bytes")).split()[1])


def writeback(directory: str) -> None:
    """Sync every file in ``directory``, as the kernel's periodic writeback would."""
    for name in os.listdir(directory):
        fd = os.open(os.path.join(directory, name), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def run(
    meters: int, rate: int, hours: float, commit_interval_s: float, parent: str | None
) -> dict[str, float]:
    clock = {"ns": T0_NS}
    with tempfile.TemporaryDirectory(dir=parent) as directory:
        config = Config(
            GatewaySettings(
                id="bench",
                database=f"sqlite:///{Path(directory) / 'gateway.db'}",
                commit_interval_s=commit_interval_s,
                report_interval_s=3600,
            ),
            MqttSettings(enabled=False),
            tuple(MeterSettings(f"m{i}", source="simulate") for i in range(meters)),
        )
        service = Service(
            config,
            out=io.StringIO(),
            monotonic_ns=lambda: clock["ns"] - T0_NS,
            wall_ns=lambda: clock["ns"],
        )
        for runtime in service.meters:
            runtime.source = Synthetic(runtime.settings.name, rate, lambda: clock["ns"])
        outbox = Outbox(service.database)
        service.start()
        commit_cpu = 0.0
        commits = 0
        original = service.commit

        def timed_commit(*, stamp: bool = False) -> None:
            nonlocal commit_cpu, commits
            start = time.process_time()
            original(stamp=stamp)
            commit_cpu += time.process_time() - start
            commits += 1
            waiting = outbox.head(1000)
            if waiting:
                outbox.done([m.id for m in waiting])  # acknowledged at once

        service.commit = timed_commit  # type: ignore[method-assign]
        service.tick()  # the first commit (the restart event) is not part of the day
        writeback(directory)
        written0, commits, commit_cpu = write_bytes(), 0, 0.0
        seconds = int(hours * 3600)
        for second in range(1, seconds + 1):
            clock["ns"] += NS
            service.tick()
            if second % WRITEBACK_S == 0:
                writeback(directory)
        writeback(directory)
        written = write_bytes() - written0
        service.shutdown()
    per_day = 86_400 / seconds
    return {
        "bytes_per_day": written * per_day,
        "commits_per_day": commits * per_day,
        "commit_cpu_us_per_meter_s": commit_cpu / seconds / meters * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--meters", type=int, default=1)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--commit-interval", type=float, default=None, metavar="S")
    parser.add_argument(
        "--dir", default="/var/tmp", help="where the database lives: a real file system, not tmpfs"
    )
    args = parser.parse_args()
    interval = args.commit_interval or GatewaySettings().commit_interval_s
    for name, rate in (("idle", 0), ("100 edges/s", 100)):
        figures = run(args.meters, rate, args.hours, interval, args.dir)
        print(
            f"{name}, {args.meters} meter(s), commit_interval_s={interval:g}: "
            f"{figures['bytes_per_day'] / 1e6:.1f} MB/day written (block level), "
            f"{figures['commits_per_day']:.0f} commits/day, "
            f"commits take {figures['commit_cpu_us_per_meter_s']:.1f} µs CPU per meter per second"
        )


if __name__ == "__main__":
    main()
