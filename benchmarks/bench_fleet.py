"""Benchmark the fleet collector: simulated gateways -> Mosquitto -> collectors -> PostgreSQL.

Each simulated gateway publishes a day of 15-minute intervals (96 per meter) and one billing read
per meter, QoS 1, in time order, as fast as the broker takes them, while 1 and then 2
collectors (``amr-gateway collect``, one share group) store them into a fresh PostgreSQL
database. A simulated gateway is a topic namespace (``amr/gwNNN/...``) published by one of a few
publisher processes, not a daemon: the collector sees exactly what gateways send.

Prints: messages/s ingested (first publish to last commit), end-to-end latency p50/p99
(publish to the collector's batch, ``received_ns``), and bytes per interval row (the interval
partitions with their indexes, against the JSON each interval arrived as). Goals (the issue):
at least 5,000 messages/s, rows within 2x of the raw data.

    python benchmarks/bench_fleet.py [--gateways 20] [--meters 25] [--full]

``--full`` is 200 gateways x 25 meters (485,000 messages per run). Needs mosquitto and a
PostgreSQL at $AMR_TEST_POSTGRES (default postgresql+psycopg://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

import paho.mqtt.client as paho
from mqtt_helpers import Broker, wait_for
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import create_engine, text

ADMIN = os.environ.get("AMR_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
DAY_START_S = 1_793_491_200  # 2026-11-01T00:00:00Z
PUBLISHERS = 2


class BenchBroker(Broker):
    def config(self) -> Path:
        # The test broker queues at most 100,000 messages per session: a day of 5,000 meters
        # outruns that, and Mosquitto drops the rest (the collector then reports the gaps).
        path = super().config()
        text = path.read_text().replace(
            "max_queued_messages 100000", "max_queued_messages 10000000"
        )
        path.write_text(text + "max_inflight_messages 0\n")
        return path


def iso(t_s: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_s))


def messages(gateways: list[int], meters: int) -> list[tuple[str, str, str, int]]:
    """Return (topic, payload, key, seq) in time order: every meter's interval k, then the next."""
    out = []
    for k in range(96):
        start = DAY_START_S + 900 * k
        for g in gateways:
            for m in range(meters):
                energy = 200 + (g * 7 + m * 13 + k) % 400
                payload = {
                    "meter": f"m{m:02d}",
                    "start": iso(start),
                    "end": iso(start + 900),
                    "energy_wh": energy,
                    "edges": energy // 5,
                    "demand_kw": energy * 4 / 1000,
                    "quality": "complete",
                    "seq": k + 1,
                }
                topic = f"amr/gw{g:03d}/m{m:02d}/interval"
                out.append(
                    (
                        topic,
                        json.dumps(payload, separators=(",", ":")),
                        f"gw{g:03d}/m{m:02d}",
                        k + 1,
                    )
                )
    for g in gateways:
        for m in range(meters):
            payload = {
                "meter": f"m{m:02d}",
                "period": "2026-10",
                "start": iso(DAY_START_S - 31 * 86_400),
                "end": iso(DAY_START_S + 86_400),
                "energy_wh": 12345,
                "register_wh": 12345,
                "quality": "complete",
                "peak_demand_kw": 2.5,
                "peak_demand_end": iso(DAY_START_S + 3600),
                "seq": 1,
            }
            out.append(
                (f"amr/gw{g:03d}/m{m:02d}/read", json.dumps(payload, separators=(",", ":")), "", 0)
            )
    return out


def publish(port: int, gateways: list[int], meters: int, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    batch = messages(gateways, meters)
    acked = [0]
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{gateways[0]}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)

    def on_publish(*_args) -> None:  # type: ignore[no-untyped-def]
        acked[0] += 1

    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    sent: dict[tuple[str, int], int] = {}
    for topic, payload, key, seq in batch:
        if key:
            sent[(key, seq)] = time.time_ns()
        client.publish(topic, payload, qos=1)
    wait_for(lambda: acked[0] == len(batch), 600, "PUBACKs")
    client.disconnect()
    client.loop_stop()
    raw = sum(len(p) for t, p, _, _ in batch if t.endswith("/interval"))
    results.put((sent, raw))


def run(collectors: int, gateways: int, meters: int, directory: Path) -> dict[str, float]:
    name = f"amr_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = ADMIN.rsplit("/", 1)[0] + f"/{name}"
    (directory / "broker").mkdir(exist_ok=True)
    broker = BenchBroker(directory / "broker", persistence=False)
    broker.start()
    procs = []
    try:
        for i in range(collectors):
            config = directory / f"c{i}.toml"
            config.write_text(
                f'[collector]\ndatabase = "{url}"\nport = {broker.port}\nhost = "127.0.0.1"\n'
                f'client_id = "bench-c{i}"\nbatch_size = 2000\nbatch_wait_ms = 50\n'
            )
            log = open(directory / f"c{i}.log", "wb")  # noqa: SIM115 (the collector's, for its life)
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "gateway", "collect", "--config", str(config)],
                    stdout=log,
                    stderr=log,
                )
            )
        for i in range(collectors):
            wait_for(
                lambda i=i: b"connected to" in (directory / f"c{i}.log").read_bytes(),
                60,
                "collector",
            )
        time.sleep(0.5)  # the SUBACKs follow the CONNACK within milliseconds
        results: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
        shares = [list(range(i, gateways, PUBLISHERS)) for i in range(PUBLISHERS)]
        started = time.time_ns()
        pubs = [
            multiprocessing.Process(target=publish, args=(broker.port, s, meters, results))
            for s in shares
            if s
        ]
        for p in pubs:
            p.start()
        sent: dict[tuple[str, int], int] = {}
        raw = 0
        for _ in pubs:
            part, part_raw = results.get(timeout=900)
            sent.update(part)
            raw += part_raw
        for p in pubs:
            p.join()
        engine = create_engine(url)
        expected = gateways * meters * 96

        def count() -> int:
            with engine.connect() as connection:
                return int(
                    connection.execute(text("SELECT count(*) FROM fleet_intervals")).scalar_one()
                )

        wait_for(lambda: count() == expected, 900, "every interval in the database")
        wait_for(
            lambda: (
                engine.connect().execute(text("SELECT count(*) FROM fleet_reads")).scalar_one()
                == gateways * meters
            ),
            120,
            "every read",
        )
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT m.gateway || '/' || m.meter, i.seq, i.received_ns FROM fleet_intervals i "
                    "JOIN fleet_meters m ON m.id = i.meter_id"
                )
            ).all()
            size = connection.execute(
                text(
                    "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_inherits i "
                    "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
                    "WHERE p.relname = 'fleet_intervals'"
                )
            ).scalar_one()
        engine.dispose()
        cpu_s = 0.0
        for proc in procs:  # the collectors' own CPU time, user + system (/proc/PID/stat)
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu_s += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        last = max(r[2] for r in rows)
        latencies = sorted((r[2] - sent[(r[0], r[1])]) / 1e6 for r in rows)
        total = expected + gateways * meters
        return {
            "messages": total,
            "msg_per_s": total / ((last - started) / 1e9),
            "p50_ms": statistics.median(latencies),
            "p99_ms": latencies[int(len(latencies) * 0.99) - 1],
            "bytes_per_row": int(size) / expected,
            "msg_per_cpu_s": total / cpu_s,
            "raw_bytes_per_interval": raw / expected,
        }
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
        broker.stop()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=20)
    parser.add_argument("--meters", type=int, default=25)
    parser.add_argument("--full", action="store_true", help="200 gateways x 25 meters")
    parser.add_argument("--collectors", default="1,2", help="runs, e.g. 1,2")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each, medians printed")
    args = parser.parse_args()
    gateways = 200 if args.full else args.gateways
    for collectors in (int(n) for n in args.collectors.split(",")):
        rates = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                r = run(collectors, gateways, args.meters, Path(tmp))
            rates.append(r["msg_per_s"])
            print(
                f"{gateways} gateways x {args.meters} meters, {collectors} collector(s): "
                f"{r['messages']} messages, {r['msg_per_s']:.0f} msg/s; latency p50 {r['p50_ms']:.0f} ms, "
                f"p99 {r['p99_ms']:.0f} ms; {r['msg_per_cpu_s']:.0f} msg per collector CPU-second; "
                f"{r['bytes_per_row']:.0f} bytes per interval row (raw JSON "
                f"{r['raw_bytes_per_interval']:.0f} bytes, ratio "
                f"{r['bytes_per_row'] / r['raw_bytes_per_interval']:.2f})",
                flush=True,
            )
        if args.repeat > 1:
            print(f"  median of {args.repeat}: {statistics.median(rates):.0f} msg/s", flush=True)


if __name__ == "__main__":
    main()
