"""The fleet page's provider over a fleet database filled through Ingest (no broker): the
meters that need a look come first, anomalies are the fleet status's, the bill preview is the
register less the last read's."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

from gateway.fleet.database import FleetDatabase
from gateway.fleet.ingest import Ingest, parse_message, store_meter_info, store_status
from gateway.timefmt import NS_PER_S, format_iso
from gateway.web.fleet import FleetProvider, FleetPulse
from gateway.web.snapshot import SnapshotHolder

NOW_S = int(time.time()) // 900 * 900  # an interval boundary just past


def _message(gw: str, meter: str, kind: str, payload: dict) -> object:
    return parse_message(gw, meter, kind, json.dumps(payload).encode())


def _interval(gw: str, meter: str, seq: int, end_s: int) -> object:
    return _message(
        gw,
        meter,
        "interval",
        {
            "meter": meter,
            "start": format_iso((end_s - 900) * NS_PER_S, 0),
            "end": format_iso(end_s * NS_PER_S, 0),
            "energy_wh": 100,
            "edges": 20,
            "demand_kw": 0.4,
            "quality": "complete",
            "seq": seq,
        },
    )


def test_order_anomalies_and_bill_preview(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    database = FleetDatabase(url)
    now_ns = time.time_ns()
    read = {
        "meter": "a-quiet",
        "period": "2026-10",
        "start": "2026-10-01T00:00:00Z",
        "end": "2026-11-01T00:00:00Z",
        "register_wh": 1000,
        "energy_wh": 1000,
        "quality": "complete",
        "seq": 1,
    }
    glitch = {
        "meter": "glitchy",
        "time": format_iso(now_ns - 3600 * NS_PER_S),
        "kind": "glitch",
        "channel": "10",
        "detail": "a 2 ms pulse dropped",
        "missed_wh": 0,
        "seq": 1,
    }
    restart = {**glitch, "kind": "restart", "detail": "started", "seq": 2}  # a notice only
    items = [
        _interval("gw1", "a-quiet", 1, NOW_S),  # just closed: not silent
        _interval("gw1", "glitchy", 1, NOW_S),
        _message("gw1", "glitchy", "event", glitch),
        _message("gw1", "glitchy", "event", restart),
        _message("gw1", "a-quiet", "read", read),
        _interval("gw9", "old", 1, NOW_S - 86_400),  # silent for a day
    ]
    try:
        ingest = Ingest()
        ingest.ingest(database.engine, items, now_ns)
        with database.engine.begin() as connection:
            store_status(connection, "gw9", "offline", now_ns)
            store_status(connection, "gw1", "online", now_ns)
            ids = ingest.meter_ids(connection, {("gw1", "a-quiet"): {}}, now_ns)
            store_meter_info(
                connection, ids[("gw1", "a-quiet")], state={"energy_wh": 1250, "power_kw": 0.4}
            )
    finally:
        database.close()

    pulse = FleetPulse(SnapshotHolder(), "c1")
    provider = FleetProvider(url, pulse, "c1")
    pulse.observe(SimpleNamespace(stored=7, last_commit_ns=now_ns, connected=True))
    pulse.start()
    try:
        assert pulse.holder.wait_newer(0, 10) is not None
        overview = provider.overview()
        status = provider.status()["gateways"]
    finally:
        provider.close()
    assert list(overview["gateways"]) == ["gw9", "gw1"]  # offline first, then by name
    # those that need a look first (by gateway, meter), then the others
    assert overview["order"] == ["gw1/glitchy", "gw9/old", "gw1/a-quiet"]
    assert [overview["meters"][k]["attention"] for k in overview["order"]] == [True, True, False]
    glitchy = status["gw1"]["meters"]["glitchy"]
    assert glitchy["anomalies"] == 1 and glitchy["silent_since"] is None
    assert glitchy["open_anomalies"] == [
        {k: glitch[k] for k in ("time", "kind", "channel", "detail", "missed_wh")}
    ]
    assert status["gw9"]["meters"]["old"]["silent_since"] is not None
    quiet = overview["meters"]["gw1/a-quiet"]
    assert quiet["current_period"] == {
        "period": "2026-11",
        "since": "2026-11-01T00:00:00Z",
        "energy_wh": 250,
    }
    assert quiet["power_kw"] == 0.4
    assert overview["gateways"]["gw1"]["bill"] == {"period": "2026-11", "energy_wh": 250}
    assert overview["gateway"]["messages_stored"] == 7
