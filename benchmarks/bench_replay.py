"""Benchmark ``amr-gateway replay`` (issue 3).

- Speed: the whole command (start-up, read, parse, validate, reconstruct, intervals, demand,
  output) over a 2-million-edge log, against a straightforward csv-module loop that only sums
  edges over the same file, in the same run. Goals: 3x the loop (5x beyond), 1M edges/s.
- Memory: peak RSS over a 20-million-edge log, in time order (goal: under 300 MB, flat with file
  size) and reversed, the worst order, which replay sorts through temporary files in $TMPDIR
  (goal: well under 300 MB, about 200 MB at most).

    python benchmarks/bench_replay.py [--runs N] [--memory-runs N] [--skip-memory]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import DATA, gateway, report, report_runs, run_timed, write_profile

from meter_model.profiles import builtin_power_mw

T0_S = 1_735_689_600  # 2025-01-01T00:00:00Z
BASELINE = Path(__file__).parent / "csv_baseline.py"


def make_log(name: str, minutes: int, power_mw_at) -> str:  # type: ignore[no-untyped-def]
    DATA.mkdir(exist_ok=True)
    log = DATA / f"{name}.csv"
    if not log.exists():
        profile = DATA / f"{name}-profile.csv"
        write_profile(profile, T0_S, minutes, power_mw_at)
        run_timed(gateway("simulate", "--profile", str(profile), "--out", str(log)))
    return str(log)


def reversed_log(path: str) -> str:
    """Write a copy of ``path`` with its rows in reverse order (the worst case for replay).

    Read backwards block by block, so the copy takes little memory whatever the log's size.
    """
    out = Path(path).with_name(Path(path).stem + "-reversed.csv")
    if out.exists():
        return str(out)
    block_bytes = 16 << 20
    tmp = out.with_suffix(".tmp")
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        while True:  # comments and the header stay first
            line = src.readline()
            dst.write(line)
            if not line.startswith(b"#"):
                break
        body = src.tell()
        position = src.seek(0, 2)
        carry = b""  # the start of a line whose rest was in the block read before
        while position > body:
            step = min(block_bytes, position - body)
            position -= step
            src.seek(position)
            data = src.read(step) + carry
            carry = b""
            if position > body:
                cut = data.index(b"\n") + 1
                carry, data = data[:cut], data[cut:]
            dst.writelines(reversed(data.splitlines(keepends=True)))
    tmp.replace(out)
    return str(out)


def count_edges(path: str) -> int:
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line[:1].isdigit())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--memory-runs", type=int, default=3)
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()

    # About 2 million edges: the built-in household profile for 156 days.
    log = make_log("replay-2m", 156 * 24 * 60, builtin_power_mw)
    edges = count_edges(log)
    print(f"{log}: {edges:,} edges")
    base, ours = [], []
    for _ in range(args.runs):  # interleaved, so both see the same machine noise
        base.append(run_timed([sys.executable, str(BASELINE), log])[0])
        ours.append(run_timed(gateway("replay", log, "--json"))[0])
    base_median = report("csv-module loop summing edges", base)
    ours_median = report("amr-gateway replay --json", ours)
    print(
        f"replay is {base_median / ours_median:.2f}x the csv loop; "
        f"{edges / ours_median / 1e6:.2f} M edges/s (whole command)"
    )
    with_outputs = [
        run_timed(gateway("replay", log, "--json", "--intervals", str(DATA / "iv.csv")))[0]
        for _ in range(args.runs)
    ]
    report("amr-gateway replay --json --intervals CSV", with_outputs)

    if not args.skip_memory:
        # About 20 million edges: a steady 60 kW for 70 days.
        big = make_log("replay-20m", 70 * 24 * 60, lambda _t_us: 60_000_000)
        backwards = reversed_log(big)
        print(f"{big}: {count_edges(big):,} edges; {backwards}: the same, last row first")
        for path in (log, big, backwards):
            runs = [run_timed(gateway("replay", path, "--json")) for _ in range(args.memory_runs)]
            report_runs(f"replay {Path(path).name}", runs)


if __name__ == "__main__":
    main()
