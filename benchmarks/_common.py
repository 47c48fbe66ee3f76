"""Helpers shared by the benchmark scripts: timing whole commands and reporting medians."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).parent / "data"


# A child's peak RSS as wait4 reports it includes the memory of the process it was spawned
# from: Linux folds the pre-exec image's high-water mark into the child's. A benchmark that has
# built a 20 M edge log holds hundreds of MB, and every command it timed seemed to as well. So
# commands are spawned by a small process of their own, started once, that holds about 10 MB.
_SPAWNER = r"""
import json, os, sys, time
null = [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]
for line in sys.stdin:
    args = json.loads(line)
    start = time.perf_counter()
    pid = os.posix_spawnp(args[0], args, os.environ, file_actions=null)
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - start
    print(json.dumps([elapsed, os.waitstatus_to_exitcode(status), usage.ru_maxrss]), flush=True)
"""
_spawner: subprocess.Popen[str] | None = None


def run_timed(args: list[str]) -> tuple[float, float]:
    """Run a command to completion (its output discarded); return (seconds, its peak RSS in MB)."""
    global _spawner
    if _spawner is None:
        _spawner = subprocess.Popen(
            [sys.executable, "-S", "-c", _SPAWNER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
    assert _spawner.stdin is not None and _spawner.stdout is not None
    _spawner.stdin.write(json.dumps(args) + "\n")
    _spawner.stdin.flush()
    elapsed, code, max_rss_kb = json.loads(_spawner.stdout.readline())
    if code != 0:
        raise SystemExit(f"{' '.join(args)} failed with status {code}")
    return elapsed, max_rss_kb / 1024


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
