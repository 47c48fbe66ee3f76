"""Benchmark the fleet collector: simulated gateways -> Mosquitto -> collectors -> PostgreSQL.

Each simulated gateway publishes a day of 15-minute intervals (96 per meter) and one billing read
per meter, QoS 1, in time order, as fast as the broker takes them, while 1 and then 2
collectors (``amr-gateway collect``, one share group) store them into a fresh PostgreSQL
database. A simulated gateway is a topic namespace (``amr/gwNNN/...``) published by one of a few
publisher processes, not a daemon: the collector sees exactly what gateways send. The
publishers are bare MQTT 3.1.1 clients (QoS 1 packets written in bulk, PUBACKs counted) so that
on a small machine they leave the CPU to what is measured; ``--paho-publishers`` uses paho.

Prints: messages/s ingested (first publish to last commit), end-to-end latency p50/p99
(publish to the collector's batch, ``received_ns``), bytes per interval row (the interval
partitions with their indexes, against the JSON each interval arrived as), and the CPU
seconds of the collectors, the publishers, the broker and the database's server processes.
Goals (the issue): at least 5,000 messages/s, rows within 2x of the raw data.

    python benchmarks/bench_fleet.py [--gateways 20] [--meters 25] [--full] [--repeat 3]

``--full`` is 200 gateways x 25 meters (485,000 messages per run). Needs mosquitto and a
PostgreSQL at $AMR_TEST_POSTGRES (default postgresql+psycopg://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import select
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
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
MAX_OUTSTANDING = 20_000  # per publisher: published, not yet acknowledged (< 65,535)


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
    window = threading.Condition()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{gateways[0]}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)

    def on_publish(*_args) -> None:  # type: ignore[no-untyped-def]
        with window:
            acked[0] += 1
            window.notify()

    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    sent: dict[tuple[str, int], int] = {}
    for n, (topic, payload, key, seq) in enumerate(batch):
        # paho numbers messages 1..65535 and wraps without looking: a message still queued
        # under a number is silently replaced by the next one given it (--full lost some
        # 340,000 this way and waited for their PUBACKs for ever). Keep fewer outstanding.
        with window:
            window.wait_for(lambda n=n: n - acked[0] < MAX_OUTSTANDING)
        if key:
            sent[(key, seq)] = time.time_ns()
        client.publish(topic, payload, qos=1)
    wait_for(lambda: acked[0] == len(batch), 600, "PUBACKs")
    client.disconnect()
    client.loop_stop()
    raw = sum(len(p) for t, p, _, _ in batch if t.endswith("/interval"))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    results.put((sent, raw, usage.ru_utime + usage.ru_stime))


def cpu_seconds(pid: int) -> float:
    """A live process's CPU time so far, user + system (/proc/PID/stat); 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backends(database: str) -> list[int]:
    """The PostgreSQL server processes serving ``database`` (their title names it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if title.startswith(b"postgres: ") and f" {database} ".encode() in title:
            pids.append(int(entry.name))
    return pids


def _length(n: int) -> bytes:
    """MQTT's variable-length "remaining length"."""
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(value: str) -> bytes:
    data = value.encode()
    return struct.pack("!H", len(data)) + data


def publish_raw(
    port: int, gateways: list[int], meters: int, results: multiprocessing.Queue
) -> None:  # type: ignore[type-arg]
    """Publish like :func:`publish`, as a bare MQTT 3.1.1 client: QoS 1 PUBLISH packets written
    in bulk, PUBACKs counted, at most MAX_OUTSTANDING unacknowledged (packet ids are never
    reused while outstanding). It costs a few microseconds a message where paho costs over a
    hundred: on two shared cores, the publishers would otherwise take as much CPU as the
    collector they are measuring (real gateways publish from machines of their own)."""
    batch = messages(gateways, meters)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = b"\x00\x04MQTT\x04\x02" + struct.pack("!H", 600) + _string(f"pub-{gateways[0]}")
    sock.sendall(b"\x10" + _length(len(body)) + body)
    connack = b""
    while len(connack) < 4:
        chunk = sock.recv(4 - len(connack))
        if not chunk:
            raise SystemExit("the broker closed the publisher's connection")
        connack += chunk
    if connack[0] != 0x20 or connack[3] != 0:
        raise SystemExit(f"the broker refused the publisher: CONNACK {connack.hex()}")
    outstanding: set[int] = set()
    sent: dict[tuple[str, int], int] = {}
    pending = b""
    next_id, i = 0, 0

    def read_acks(block: bool) -> None:
        nonlocal pending
        ready, _, _ = select.select([sock], [], [], 60 if block else 0)
        if not ready:
            if block:
                raise SystemExit(f"no PUBACK for 60 s, {len(outstanding)} outstanding")
            return
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise SystemExit("the broker closed the publisher's connection")
        pending += chunk
        at = 0
        while len(pending) - at >= 4:  # PUBACK: 0x40 0x02 and the packet id
            if pending[at] != 0x40 or pending[at + 1] != 2:
                raise SystemExit(f"unexpected packet {pending[at : at + 4].hex()} from the broker")
            outstanding.remove(struct.unpack_from("!H", pending, at + 2)[0])
            at += 4
        pending = pending[at:]

    while i < len(batch) or outstanding:
        if i < len(batch) and len(outstanding) < MAX_OUTSTANDING:
            packets = []
            now = time.time_ns()
            while i < len(batch) and len(outstanding) < MAX_OUTSTANDING and len(packets) < 200:
                topic, payload, key, seq = batch[i]
                next_id = next_id % 65_535 + 1
                assert next_id not in outstanding
                outstanding.add(next_id)
                data = _string(topic) + struct.pack("!H", next_id) + payload.encode()
                packets.append(b"\x32" + _length(len(data)) + data)
                if key:
                    sent[(key, seq)] = now
                i += 1
            sock.sendall(b"".join(packets))
            read_acks(block=False)
        else:
            read_acks(block=True)
    sock.sendall(b"\xe0\x00")  # DISCONNECT
    sock.close()
    raw = sum(len(p) for t, p, _, _ in batch if t.endswith("/interval"))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    results.put((sent, raw, usage.ru_utime + usage.ru_stime))


def run(
    collectors: int, gateways: int, meters: int, directory: Path, paho_publishers: bool = False
) -> dict[str, float]:
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
        target = publish if paho_publishers else publish_raw
        pubs = [
            multiprocessing.Process(target=target, args=(broker.port, s, meters, results))
            for s in shares
            if s
        ]
        for p in pubs:
            p.start()
        sent: dict[tuple[str, int], int] = {}
        raw = 0
        publishers_cpu_s = 0.0
        for _ in pubs:
            part, part_raw, part_cpu_s = results.get(timeout=900)
            sent.update(part)
            raw += part_raw
            publishers_cpu_s += part_cpu_s
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
        cpu_s = sum(cpu_seconds(proc.pid) for proc in procs)  # the collectors' own
        assert broker.proc is not None
        broker_cpu_s = cpu_seconds(broker.proc.pid)
        database_cpu_s = sum(cpu_seconds(pid) for pid in backends(name))
        started = min(sent.values())  # the first publish (the publishers make their messages first)
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
            "elapsed_s": (last - started) / 1e9,
            "collectors_cpu_s": cpu_s,
            "publishers_cpu_s": publishers_cpu_s,
            "broker_cpu_s": broker_cpu_s,
            "database_cpu_s": database_cpu_s,
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
    parser.add_argument(
        "--paho-publishers",
        action="store_true",
        help="publish with paho clients (over 20x the publishers' CPU of the default bare ones)",
    )
    args = parser.parse_args()
    gateways = 200 if args.full else args.gateways
    for collectors in (int(n) for n in args.collectors.split(",")):
        rates = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                r = run(collectors, gateways, args.meters, Path(tmp), args.paho_publishers)
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
            print(
                f"  CPU seconds in {r['elapsed_s']:.1f} s (2 cores: {2 * r['elapsed_s']:.1f}): "
                f"collectors {r['collectors_cpu_s']:.1f}, publishers {r['publishers_cpu_s']:.1f}, "
                f"broker {r['broker_cpu_s']:.1f}, PostgreSQL backends {r['database_cpu_s']:.1f}; "
                f"load average {os.getloadavg()[0]:.1f}",
                flush=True,
            )
        if args.repeat > 1:
            print(f"  median of {args.repeat}: {statistics.median(rates):.0f} msg/s", flush=True)


if __name__ == "__main__":
    main()
