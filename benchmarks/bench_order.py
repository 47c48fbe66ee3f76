"""Benchmark ``amr-gateway replay`` against polars in any row order (issue 21).

Logs of about 2 M and 20 M edges, each in time order, reversed and shuffled (generated once into
benchmarks/data/). On every log both polars programs (benchmarks/polars_peers.py: ``unique()``
and sort based) are first checked to write the very CSV ``replay --intervals`` writes; then
the three commands run in alternating rounds, so all see the same machine noise, and the
medians, the ratio of replay to the faster polars program, and each one's peak RSS are printed.
Goal: replay at least 1.5x the faster program, in at most a third of its memory.

    pip install -e '.[bench]'
    python benchmarks/bench_order.py [--runs N] [--only 2m|20m]
"""

from __future__ import annotations

import argparse
import filecmp
import statistics
import sys
from pathlib import Path

import numpy as np
from _common import DATA, gateway, run_timed
from bench_replay import make_log, reversed_log

from meter_model.profiles import builtin_power_mw

PEERS = Path(__file__).parent / "polars_peers.py"


def shuffled_log(path: str, buckets: int = 16) -> str:
    """Write a copy of ``path`` with its rows in random order, in bounded memory.

    Rows go to random bucket files, then each bucket is shuffled in memory and appended.
    """
    out = Path(path).with_name(Path(path).stem + "-shuffled.csv")
    if out.exists():
        return str(out)
    rng = np.random.default_rng(21)
    parts = [out.with_suffix(f".part{i}") for i in range(buckets)]
    tmp = out.with_suffix(".tmp")
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        while True:  # comments and the header stay first
            line = src.readline()
            dst.write(line)
            if not line.startswith(b"#"):
                break
        handles = [open(p, "wb") for p in parts]  # noqa: SIM115 - closed below
        while lines := src.readlines(16 << 20):
            where = rng.integers(buckets, size=len(lines))
            for bucket in range(buckets):
                handles[bucket].writelines(lines[i] for i in np.flatnonzero(where == bucket))
        for handle in handles:
            handle.close()
        for part in parts:
            lines = part.read_bytes().splitlines(keepends=True)
            dst.writelines(lines[i] for i in rng.permutation(len(lines)))
            part.unlink()
    tmp.replace(out)
    return str(out)


def check_peers(log: str) -> None:
    """Refuse to time a peer that does not write replay's own intervals."""
    ours = DATA / "iv-replay.csv"
    run_timed(gateway("replay", log, "--intervals", str(ours)))
    for variant in ("unique", "sort"):
        theirs = DATA / f"iv-{variant}.csv"
        run_timed([sys.executable, str(PEERS), variant, log, str(theirs)])
        if not filecmp.cmp(ours, theirs, shallow=False):
            raise SystemExit(f"polars {variant} disagrees with replay --intervals on {log}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", choices=("2m", "20m"))
    args = parser.parse_args()

    logs = []
    if args.only != "20m":
        logs.append(make_log("replay-2m", 156 * 24 * 60, builtin_power_mw))
    if args.only != "2m":
        logs.append(make_log("replay-20m", 70 * 24 * 60, lambda _t_us: 60_000_000))
    cases = [(Path(log).stem, order) for log in logs for order in (log, reversed_log(log))]
    cases += [(Path(log).stem, shuffled_log(log)) for log in logs]
    out = str(DATA / "iv-timed.csv")
    commands = {
        "replay": gateway("replay", "{log}", "--intervals", out),
        "polars unique": [sys.executable, str(PEERS), "unique", "{log}", out],
        "polars sort": [sys.executable, str(PEERS), "sort", "{log}", out],
    }
    summary = []
    for _, log in sorted(cases):
        check_peers(log)
        times: dict[str, list[float]] = {name: [] for name in commands}
        rss: dict[str, list[float]] = {name: [] for name in commands}
        for round_no in range(args.runs):  # alternating, the order rotated each round
            names = list(commands)
            names = names[round_no % 3 :] + names[: round_no % 3]
            for name in names:
                seconds, mb = run_timed([a.replace("{log}", log) for a in commands[name]])
                times[name].append(seconds)
                rss[name].append(mb)
        med = {name: statistics.median(v) for name, v in times.items()}
        mem = {name: statistics.median(v) for name, v in rss.items()}
        peer = min(("polars unique", "polars sort"), key=lambda n: med[n])
        line = (
            f"{Path(log).name}: replay {med['replay']:.2f} s {mem['replay']:.0f} MB | "
            f"unique {med['polars unique']:.2f} s {mem['polars unique']:.0f} MB | "
            f"sort {med['polars sort']:.2f} s {mem['polars sort']:.0f} MB | "
            f"replay is {med[peer] / med['replay']:.2f}x the faster ({peer}) "
            f"in {mem['replay'] / mem[peer]:.2f} of its memory"
        )
        print(line, flush=True)
        summary.append(line)
    print(f"-- {args.runs} alternating runs each, medians --")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
