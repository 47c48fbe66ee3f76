"""Helpers shared by the benchmark scripts: timing whole commands and reporting medians."""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).parent / "data"


def run_timed(args: list[str]) -> tuple[float, float]:
    """Run a command; return (seconds, peak RSS of the child in MB)."""
    start = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return elapsed, rss_mb


def gateway(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway", *args]


def report(name: str, seconds: list[float], extra: str = "") -> float:
    median = statistics.median(seconds)
    runs = ", ".join(f"{s:.2f}" for s in seconds)
    print(f"{name}: median {median:.2f} s over {len(seconds)} runs ({runs}){extra}")
    return median
