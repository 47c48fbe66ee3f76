"""Benchmark the whole live pipeline: source queue, core, store (SQLite) and publisher (MQTT).

Runs the daemon as users run it (``amr-gateway run --config``), against a Mosquitto this script
starts on a free port, with simulated meters under a steady 60 kW so the edge rate is exact:

1. throughput: 4 meters at 1000x, about 13,300 edges/s in all (goal: at least 10,000 edges/s
   with no edge lost: each meter's count is checked against its model's register);
2. a realistic load: one meter at 100 edges/s (goal: under 2 % of one core, under 80 MB),
   measured in steady state from /proc, start-up excluded.

    python benchmarks/bench_pipeline.py [--seconds N]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from mqtt_helpers import Broker

EDGE_NJ = 5 * 3600 * 10**9
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def write_config(directory: Path, broker: Broker, meters: int, speed: float) -> Path:
    profile = directory / "steady.csv"
    now = int(time.time())
    profile.write_text(f"time,kw\n{now},60\n{now + 400 * 86_400},0\n")
    blocks = "".join(
        f"""
[[meters]]
name = "m{i}"
model = "2O208-4W"
source = "simulate"
profile = "{profile}"
speed = {speed}
"""
        for i in range(meters)
    )
    path = directory / "config.toml"
    path.write_text(
        f"""
[gateway]
id = "bench"
database = "sqlite:///{directory / "bench.db"}"
report_interval_s = 3600

[mqtt]
host = "127.0.0.1"
port = {broker.port}
{blocks}"""
    )
    return path


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run(directory: Path, meters: int, speed: float, seconds: float, warmup: float) -> dict:
    broker = Broker(directory / "broker")
    broker.directory.mkdir(parents=True, exist_ok=True)
    broker.start()
    try:
        config = write_config(directory, broker, meters, speed)
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(warmup)
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(seconds)
        cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
        memory = rss_mb(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        with sqlite3.connect(directory / "bench.db") as conn:
            counted = sum(
                row[0]
                for row in conn.execute("select edges from channel_counters where channel = '10'")
            )
            model = sum(
                json.loads(row[0])["energy_nj"] // EDGE_NJ
                for row in conn.execute("select source from meter_state")
            )
            model_events = conn.execute(
                "select count(*) from events where kind = 'model'"
            ).fetchone()[0]
        return {
            "cpu_percent": 100 * (cpu1 - cpu0) / (t1 - t0),
            "rss_mb": memory,
            "counted": counted,
            "model": model,
            "model_events": model_events,
        }
    finally:
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    rate_per_meter_1x = 60_000 / 3600 / 5  # 60 kW is 3.33 edges of 5 Wh per second
    with tempfile.TemporaryDirectory() as tmp:
        speed = 1000
        started = time.monotonic()
        result = run(Path(tmp) / "a", 4, speed, args.seconds, warmup=3)
        elapsed = time.monotonic() - started
        rate = 4 * rate_per_meter_1x * speed
        lost = result["model"] - result["counted"]
        print(
            f"throughput: 4 meters at {rate:,.0f} edges/s offered; counted {result['counted']:,} of "
            f"the models' {result['model']:,} edges (difference {lost}, at most one pending edge "
            f"per meter allowed; {result['model_events']} model events); "
            f"CPU {result['cpu_percent']:.0f} % of one core, RSS {result['rss_mb']:.0f} MB "
            f"({elapsed:.0f} s run)"
        )
        speed = 100 / rate_per_meter_1x
        result = run(Path(tmp) / "b", 1, speed, args.seconds * 1.5, warmup=5)
        print(
            f"realistic: 1 meter at 100 edges/s: CPU {result['cpu_percent']:.2f} % of one core, "
            f"RSS {result['rss_mb']:.0f} MB; counted {result['counted']:,} of {result['model']:,}"
        )


if __name__ == "__main__":
    main()
