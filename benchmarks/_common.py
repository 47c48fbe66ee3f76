"""Helpers shared by the benchmark scripts: timing whole commands and reporting medians."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).parent / "data"


def run_timed(args: list[str]) -> tuple[float, float]:
    """Run a command to completion; return (seconds, its peak RSS in MB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed with status {proc.returncode}")
    return elapsed, usage.ru_maxrss / 1024


def gateway(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway", *args]


def report(name: str, seconds: list[float], extra: str = "") -> float:
    median = statistics.median(seconds)
    runs = ", ".join(f"{s:.2f}" for s in seconds)
    print(f"{name}: median {median:.2f} s over {len(seconds)} runs ({runs}){extra}")
    return median


def report_runs(name: str, runs: list[tuple[float, float]]) -> float:
    """Report ``run_timed`` results: the median time, and the median peak RSS."""
    rss = [mb for _, mb in runs]
    return report(
        name,
        [seconds for seconds, _ in runs],
        f"; peak RSS median {statistics.median(rss):.0f} MB ({', '.join(f'{mb:.0f}' for mb in rss)})",
    )


def write_profile(path: Path, start_s: int, minutes: int, power_mw_at) -> None:  # type: ignore[no-untyped-def]
    """Write a one-minute-step load profile ``time,kw``."""
    with open(path, "w") as handle:
        handle.write("time,kw\n")
        for i in range(minutes + 1):
            t_s = start_s + 60 * i
            power_mw = power_mw_at(t_s * 1_000_000)
            handle.write(f"{t_s},{power_mw // 1_000_000}.{power_mw % 1_000_000:06d}\n")
