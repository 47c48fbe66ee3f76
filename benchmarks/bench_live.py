"""Benchmark the live daemon's paced sources at a high speed: edges/s reached against asked.

The daemon runs a replay source (the 2 M edge log of bench_replay.py, in time order and
shuffled) and a simulate source (the built-in household profile) at ``--speed``, printing a
reading line every second. From the lines: `10` edges counted per second of wall time, and,
when the source cannot keep up, how far behind it is (the reading line says so). Also the
daemon's CPU share and peak RSS (VmHWM; goal: under 100 MB on any log).

    python benchmarks/bench_live.py [--seconds S] [--speed X]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import DATA
from bench_order import shuffled_log
from bench_replay import make_log

from meter_model.profiles import builtin_power_mw

EDGES = re.compile(r"edges 10=(\d+)")
BEHIND = re.compile(r"running behind .*")


def run(name: str, meter: str, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "c.toml"
        config.write_text(
            f'[gateway]\nid = "bench"\ndatabase = "sqlite:///{tmp}/g.db"\nreport_interval_s = 1\n'
            f"\n[mqtt]\nenabled = false\n\n[[meters]]\n{meter}"
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert proc.stdout is not None
        samples: list[tuple[float, int, str]] = []
        start = time.monotonic()
        for line in proc.stdout:
            found = EDGES.search(line.decode())
            if found:
                behind = BEHIND.search(line.decode())
                samples.append((time.monotonic(), int(found[1]), behind[0] if behind else ""))
            if time.monotonic() - start > seconds:
                break
        ticks = os.sysconf("SC_CLK_TCK")
        stat = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu_s = (int(stat[11]) + int(stat[12])) / ticks
        status = Path(f"/proc/{proc.pid}/status").read_text()
        hwm_mb = int(re.search(r"VmHWM:\s+(\d+)", status)[1]) / 1024  # type: ignore[index]
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    counting = [s for s in samples if s[1] > 0]
    (t0, e0, _), (t1, e1, behind) = counting[0], counting[-1]
    rate = (e1 - e0) / (t1 - t0)
    print(
        f"{name}: {rate:,.0f} edges/s counted over {t1 - t0:.0f} s, "
        f"CPU {cpu_s / (time.monotonic() - start):.0%}, peak RSS {hwm_mb:.0f} MB; "
        f"{behind or 'on pace'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=12)
    parser.add_argument("--speed", type=float, default=1e6)
    args = parser.parse_args()
    log = make_log("replay-2m", 156 * 24 * 60, builtin_power_mw)
    DATA.mkdir(exist_ok=True)
    for name, path in (("replay in order", log), ("replay shuffled", shuffled_log(log))):
        meter = (
            f'name = "meter1"\nmodel = "2O208-4W"\nsource = "replay"\nfile = "{path}"\n'
            f"speed = {args.speed:.0f}\n"
        )
        run(f"{name} at {args.speed:g}x", meter, args.seconds)
    meter = f'name = "sim"\nmodel = "2O208-4W"\nsource = "simulate"\nspeed = {args.speed:.0f}\n'
    run(f"simulate at {args.speed:g}x", meter, args.seconds)


if __name__ == "__main__":
    main()
