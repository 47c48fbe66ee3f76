"""Benchmark the web view's cost on the daemon: RSS growth and idle CPU, on vs off.

The daemon runs as on a Pi beside one meter (``amr-gateway run --config``: one simulated
household at real time, MQTT off, the default commit and report intervals). With the web
view on, the gateway page and the meter page are each loaded once and one Server-Sent Events
client stays connected for the whole measurement, as an open browser tab would. CPU is
measured from /proc over a steady window after a warm-up; RSS at the end of it. Each mode runs
several times; medians are reported.

Goals (issue 20): RSS grows by at most 15 MB and idle CPU by at most 1 % of one core.

    python benchmarks/bench_web.py [--runs N] [--seconds S]
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def write_config(directory: Path, web: bool) -> Path:
    config = directory / "config.toml"
    config.write_text(
        f"""
[gateway]
id = "bench"
database = "sqlite:///{directory / "gateway.db"}"

[mqtt]
enabled = false

{'[web]' if web else ''}
{'listen = "127.0.0.1:0"' if web else ''}

[[meters]]
name = "unit-101"
model = "2O208-4W"
source = "simulate"
speed = 1
"""
    )
    return config


def stream(host: str, port: int, stop: threading.Event, events: list[int]) -> None:
    """One browser tab's EventSource: read the stream until told to stop."""
    with socket.create_connection((host, port), timeout=60) as sock:
        sock.sendall(f"GET /events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        while not stop.is_set():
            data = sock.recv(65536)
            if not data:
                return
            events[0] += data.count(b"event: overview")


def run(web: bool, seconds: float, warmup: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        out = directory / "out.txt"
        with open(out, "w") as handle:
            proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "run", "--config", str(write_config(directory, web))],
                cwd=directory,
                stdout=handle,
                stderr=subprocess.DEVNULL,
            )
        stop = threading.Event()
        events = [0]
        try:
            if web:
                deadline = time.monotonic() + 30
                while not (found := re.search(r"web view on http://([^:]+):(\d+)/", out.read_text())):
                    if time.monotonic() > deadline:
                        raise SystemExit("the web view did not start")
                    time.sleep(0.1)
                host, port = found.group(1), int(found.group(2))
                for path in ("/", "/meter/unit-101", "/static/common.js", "/static/meter.js"):
                    connection = http.client.HTTPConnection(host, port, timeout=30)
                    connection.request("GET", path)
                    connection.getresponse().read()
                    connection.close()
                threading.Thread(target=stream, args=(host, port, stop, events), daemon=True).start()
            time.sleep(warmup)
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(seconds)
            cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
            memory = rss_mb(proc.pid)
        finally:
            stop.set()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        return {"cpu_percent": 100 * (cpu1 - cpu0) / (t1 - t0), "rss_mb": memory, "events": events[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    args = parser.parse_args()
    results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for _ in range(args.runs):
        for web in (False, True):  # interleaved, so a noisy moment hits both
            results[web].append(run(web, args.seconds, args.warmup))
    medians = {}
    for web, runs in results.items():
        cpu = statistics.median(r["cpu_percent"] for r in runs)
        rss = statistics.median(r["rss_mb"] for r in runs)
        medians[web] = (cpu, rss)
        label = "web view on, one SSE client" if web else "web view off"
        detail = ", ".join(f"{r['cpu_percent']:.2f} %/{r['rss_mb']:.1f} MB" for r in runs)
        extra = f"; {statistics.median(r['events'] for r in runs):.0f} events streamed" if web else ""
        print(f"{label}: CPU median {cpu:.2f} % of one core, RSS median {rss:.1f} MB ({detail}){extra}")
    cpu_growth = medians[True][0] - medians[False][0]
    rss_growth = medians[True][1] - medians[False][1]
    print(
        f"growth with the web view on: RSS {rss_growth:+.1f} MB (goal <= 15), "
        f"CPU {cpu_growth:+.2f} % of one core (goal <= 1)"
    )


if __name__ == "__main__":
    main()
