"""The collector with its fleet page on: a private Mosquitto, two replaying gateways, SQLite."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fleet_helpers import (
    CollectorProcess,
    collector_config,
    fleet_rows,
    gateway_rows,
    make_log,
    replay_gateway_config,
)
from mqtt_helpers import Broker, Gateway, wait_for
from web_helpers import request, run_cli

from gateway.timefmt import parse_time_ns

END = "2026-11-03T12:00:00Z"
# gwa is stopped once its data is in (offline, its last will); gwb keeps running (online).
# b-1 counts from before the read of 1 November, so it has a read for period 2026-10.
FLEET = {
    "gwa": {"a-1": ("0.4", "2026-11-01T00:00:00Z")},
    "gwb": {"b-1": ("0.6", "2026-10-28T00:00:00Z"), "b-2": ("0.2", "2026-11-02T00:00:00Z")},
}


@dataclass
class Fleet:
    url: str  # the fleet page's
    db: str  # the fleet database's URL
    collector: CollectorProcess
    gateways: dict[str, Gateway]


def _settled(dirs: dict[str, Path], url: str) -> bool:
    intervals, reads, waiting = set(), set(), 0
    for gw, directory in dirs.items():
        i, r, w = gateway_rows(directory / "gateway.db")
        intervals |= {(gw, *row) for row in i}
        reads |= {(gw, *row) for row in r}
        waiting += w
    finished = {(gw, row[0]) for gw, *row in intervals if row[2] == parse_time_ns(END)}
    if waiting or not finished or finished != {(gw, row[0]) for gw, *row in intervals}:
        return False
    got_i, got_r = fleet_rows(url)
    return set(got_i) == intervals and set(got_r) == reads and len(got_i) == len(intervals)


def web_url(collector: CollectorProcess) -> str | None:
    assert collector.proc is not None
    if collector.proc.poll() is not None:
        raise AssertionError(f"the collector exited: {collector.log.read_text()}")
    found = re.search(r"web view on (\S+)", collector.log.read_text())
    return found.group(1) if found else None


def _status_says(url: str, gateway: str, state: str) -> bool:
    code, _, body = request(url, "/api/status")
    if code != 200:
        return False
    return json.loads(body)["gateways"].get(gateway, {}).get("status") == state


def _totals_known(url: str) -> bool:
    code, _, body = request(url, "/api/status")
    if code != 200:
        return False
    gateways = json.loads(body)["gateways"]
    meters = [m for g in gateways.values() for m in g["meters"].values()]
    return len(meters) == 3 and all(m["energy_wh"] is not None for m in meters)


@contextlib.contextmanager
def running_fleet(directory: Path) -> Iterator[Fleet]:
    """Start a broker, a collector serving its page on a free port, two gateways; return once
    every interval and read is in the fleet database and gwa is offline."""
    broker = Broker(directory / "broker")
    broker.directory.mkdir()
    broker.start()
    db = f"sqlite:///{directory / 'fleet.db'}"
    config = collector_config(
        directory, broker, db, "c-web", extra='\n[web]\nlisten = "127.0.0.1:0"\n'
    )
    collector = CollectorProcess(config).start()
    gateways: dict[str, Gateway] = {}
    try:
        url = wait_for(lambda: web_url(collector), 30, "the fleet page's address")
        dirs: dict[str, Path] = {}
        for gw, meters in FLEET.items():
            dirs[gw] = directory / gw
            dirs[gw].mkdir()
            logs = {
                m: make_log(run_cli, dirs[gw], m, kw, start, END)
                for m, (kw, start) in meters.items()
            }
            config = replay_gateway_config(dirs[gw], broker, gw, logs, 1_000_000)
            gateways[gw] = Gateway(config).start()
        wait_for(lambda: _settled(dirs, db), 120, "the gateways' data in the fleet database")
        # The retained states (each meter's total) are stored at the collector's housekeeping.
        wait_for(lambda: _totals_known(url), 30, "every meter's total")
        assert gateways["gwa"].stop() == 0
        wait_for(lambda: _status_says(url, "gwa", "offline"), 30, "gwa offline")
        wait_for(lambda: _status_says(url, "gwb", "online"), 30, "gwb online")
        yield Fleet(url, db, collector, gateways)
    finally:
        for gateway in gateways.values():
            if gateway.proc is not None and gateway.proc.poll() is None:
                gateway.stop()
        code = collector.stop()
        broker.stop()
        assert code == 0, collector.log.read_text()
