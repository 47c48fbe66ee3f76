"""Benchmark the MQTT outbox: messages per second delivered at QoS 1 to a local broker.

Fills a fresh SQLite outbox with interval messages, then lets the publisher move them to a
Mosquitto it starts on a free port, deleting each only after the broker's PUBACK, until the
outbox is empty. Needs the mosquitto binary.

    python benchmarks/bench_outbox.py [--messages N] [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from mqtt_helpers import Broker

from gateway.config import MqttSettings
from gateway.core.intervals import Interval
from gateway.sinks.database import Database
from gateway.sinks.mqtt import MqttPublisher
from gateway.sinks.outbox import Outbox
from gateway.sinks.payloads import MeterInfo
from gateway.sinks.store import MeterBatch, Store

T0 = 1_735_689_600 * 10**9
MIN15 = 900 * 10**9


def fill(store: Store, n: int) -> None:
    batch_size = 5000
    for lo in range(0, n, batch_size):
        intervals = [
            Interval("meter1", T0 + k * MIN15, T0 + (k + 1) * MIN15, 500, 100, "complete")
            for k in range(lo, min(n, lo + batch_size))
        ]
        store.commit(
            [
                MeterBatch(
                    "meter1",
                    "2O208-4W",
                    "replay",
                    {"version": 1},
                    None,
                    {"10": {"edges": 0, "wh_per_edge": 5}},
                    0,
                    intervals=intervals,
                )
            ],
            T0,
        )


def once(directory: Path, n: int) -> float:
    broker = Broker(directory / "broker")
    broker.directory.mkdir(exist_ok=True)
    broker.start()
    try:
        database = Database(f"sqlite:///{directory / f'outbox-{time.monotonic_ns()}.db'}")
        fill(Store(database), n)
        outbox = Outbox(database)
        publisher = MqttPublisher(
            MqttSettings(host="127.0.0.1", port=broker.port, discovery_prefix=""),
            "bench",
            [MeterInfo("meter1", "2O208-4W")],
            outbox,
        )
        publisher.start()
        while not publisher.connected:
            time.sleep(0.01)
        start = time.perf_counter()
        while outbox.count() or publisher.pending():
            publisher.pump()
            time.sleep(0.001)
        elapsed = time.perf_counter() - start
        publisher.stop()
        database.close()
        return n / elapsed
    finally:
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rates = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.runs):
            rate = once(Path(tmp), args.messages)
            rates.append(rate)
            print(f"{args.messages:,} messages acknowledged and removed: {rate:,.0f} messages/s")
    print(f"median: {statistics.median(rates):,.0f} messages/s at QoS 1 to a local Mosquitto")


if __name__ == "__main__":
    main()
