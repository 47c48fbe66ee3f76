"""Benchmark ``amr-gateway simulate`` over a one-year, one-minute-step profile (525,600 rows).

Goals: under 5 seconds for the whole command on the development machine (issue 2), and under
100 MB peak RSS, for a Raspberry Pi Zero 2 W.

    python benchmarks/bench_simulate.py [--runs N]
"""

from __future__ import annotations

import argparse

from _common import DATA, gateway, report_runs, run_timed, write_profile

from meter_model.profiles import builtin_power_mw

T0_S = 1_735_689_600  # 2025-01-01T00:00:00Z
ROWS = 525_600


def make_profile() -> str:
    DATA.mkdir(exist_ok=True)
    path = DATA / "profile-1y-1min.csv"
    if not path.exists():
        write_profile(path, T0_S, ROWS, builtin_power_mw)
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    profile = make_profile()
    for suffix in (".csv", ".csv.gz"):
        out = str(DATA / f"simulated-1y{suffix}")
        runs = [
            run_timed(gateway("simulate", "--profile", profile, "--out", out))
            for _ in range(args.runs)
        ]
        report_runs(f"simulate 1 year -> {suffix}", runs)


if __name__ == "__main__":
    main()
