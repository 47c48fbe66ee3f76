"""The collector's fleet page: a provider over the fleet database, and its wiring (issue 20).

:class:`FleetProvider` serves every number through the fleet commands' own functions
(``status --json``, ``bill --format json``, ``export``) on a database engine of the web's own,
so the page and the command line cannot disagree. A fleet meter is ``GATEWAY/METER`` (both are
topic words, which hold no ``/``); its page is ``/meter/GATEWAY/METER``.

The collector's loop never waits on the web: after each commit it only notes its count
(:meth:`FleetPulse.observe`, a tuple assigned). A thread of the web's own turns that into a
snapshot at most every :data:`REFRESH_S` (and every :data:`IDLE_REFRESH_S` without a commit,
since a meter falls silent with time alone); the pages' Server-Sent Events follow the
snapshots, and the overview they carry is computed once per snapshot, whoever asks.
"""

from __future__ import annotations

import csv
import io
import json
import math
import threading
import time
from typing import TYPE_CHECKING, Any

from gateway.fleet import readback
from gateway.fleet.commands import fleet_bill, fleet_export, status_json
from gateway.fleet.config import CollectorSettings, database_url
from gateway.fleet.database import FleetDatabase
from gateway.timefmt import format_iso, parse_time_ns
from gateway.timeline import clock_synchronized
from gateway.web import pages
from gateway.web.metrics import FleetCollector
from gateway.web.provider import (
    NotFound,
    NotReady,
    Provider,
    day_query,
    days_at_a_glance,
    glance_window,
)
from gateway.web.snapshot import GatewaySnapshot, SnapshotHolder

if TYPE_CHECKING:
    from prometheus_client.registry import Collector as MetricsCollector

    from gateway.fleet.collector import Collector
    from gateway.web.server import WebServer

__all__ = ["FleetProvider", "FleetPulse", "collector_web"]

REFRESH_S = 2.0  # at most one new overview per this, however fast the collector commits
IDLE_REFRESH_S = 30.0  # and one at least per this


class FleetPulse:
    """What the collector's loop tells the web: its count, last commit and connection.

    :meth:`observe` runs on the loop's thread and only assigns a tuple; the pulse's own
    thread publishes a :class:`GatewaySnapshot` of the collector (no meters) to the holder.
    """

    def __init__(self, holder: SnapshotHolder, title: str) -> None:
        self.holder = holder
        self.title = title
        self._seen: tuple[int, int | None, bool] | None = None  # stored, last commit, connected
        self._commits = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def stored(self) -> int:
        """How many messages this collector has committed so far."""
        seen = self._seen
        return 0 if seen is None else seen[0]

    @property
    def started(self) -> bool:
        """Whether the collector has its database open (it observed once)."""
        return self._seen is not None

    def observe(self, collector: Collector) -> None:
        """The collector's observer: note, never block."""
        seen = self._seen
        if seen is not None and collector.last_commit_ns != seen[1]:
            self._commits += 1
        self._seen = (collector.stored, collector.last_commit_ns, collector.connected)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="web-fleet", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        published: tuple[int, int | None, bool] | None = None
        last = -math.inf
        version = 0
        while True:
            seen = self._seen
            due = time.monotonic() - last >= IDLE_REFRESH_S
            if seen is not None and (seen != published or due):
                version += 1
                self.holder.publish(self._snapshot(version, seen))
                published, last = seen, time.monotonic()
            if self._stop.wait(REFRESH_S if seen is not None else 0.2):
                return

    def _snapshot(self, version: int, seen: tuple[int, int | None, bool]) -> GatewaySnapshot:
        _stored, last_commit_ns, connected = seen
        return GatewaySnapshot(
            version=version,
            gateway=self.title,
            t_ns=time.time_ns(),
            commits=self._commits,
            last_commit_ns=last_commit_ns,
            commit_latency_s=None,
            mqtt_enabled=True,
            mqtt_connected=connected,
            storage_error=None,
            clock_synchronized=clock_synchronized(),
            meters=(),
        )


def _capture(function: Any, *args: Any) -> str:
    out = io.StringIO()
    function(*args, out)
    return out.getvalue()


def next_period(period: str) -> str:
    """Return the billing period after ``YYYY-MM``."""
    year, month = int(period[:4]), int(period[5:7])
    return f"{year + month // 12:04d}-{month % 12 + 1:02d}"


def meter_card(
    gateway: str, meter: str, status: dict[str, Any], state: dict[str, Any] | None
) -> dict[str, Any]:
    """Return a fleet meter as the pages show it: its ``status --json`` entry as the fleet
    command prints it, with what its retained state says (power, demand, peak, LCD) and the
    current period's bill preview (the register less the last read's)."""
    held = state or {}
    read = status["last_read"]
    energy = status["energy_wh"]
    base = read.get("register_wh") if read else 0
    return {
        **status,
        "gateway": gateway,
        "meter": meter,
        "source": f"gateway {gateway}",
        "lcd_kwh": held.get("lcd_kwh"),
        "power_kw": held.get("power_kw"),
        "demand_kw": held.get("demand_kw"),
        "peak_demand_kw": held.get("peak_demand_kw"),
        "peak_demand_end": held.get("peak_demand_end"),
        "peak_demand_since": held.get("peak_demand_since"),
        "quality": held.get("quality"),
        "edges": {},  # counted on the gateway; its own page shows them
        "last_edge": {},
        "attention": bool(status["silent_since"] or status["open_gaps"] or status["anomalies"]),
        "current_period": {
            "period": next_period(read["period"]) if read else None,
            "since": read["end"] if read else None,
            "energy_wh": None if energy is None or base is None else energy - base,
        },
    }


class FleetProvider(Provider):
    """The fleet database, read through the fleet commands; the collector's pulse."""

    def __init__(self, url: str, pulse: FleetPulse, title: str) -> None:
        self.url = url
        self.pulse = pulse
        self.holder = pulse.holder
        self.title = title
        self._lock = threading.Lock()
        self._database: FleetDatabase | None = None
        self._cached: tuple[int, dict[str, Any]] | None = None

    def _db(self) -> FleetDatabase:
        # Opened once the collector has migrated it (its first observation).
        with self._lock:
            if self._database is None:
                if not self.pulse.started:
                    raise NotReady("the collector is starting: try again in a moment")
                self._database = FleetDatabase(self.url, upgrade=False)
            return self._database

    def close(self) -> None:
        self.pulse.stop()
        with self._lock:
            if self._database is not None:
                self._database.close()
                self._database = None

    # -- the overview: computed once per snapshot ----------------------------------------------

    def _health(self, snapshot: GatewaySnapshot | None) -> dict[str, Any]:
        if snapshot is None:
            return {"gateway": self.title, "state": "starting", "messages_stored": 0}
        return {
            "gateway": snapshot.gateway,
            "state": "running",
            "time": format_iso(snapshot.t_ns, 0),
            "mqtt": "connected" if snapshot.mqtt_connected else "disconnected",
            "storage": "ok",
            "last_commit": None
            if snapshot.last_commit_ns is None
            else format_iso(snapshot.last_commit_ns, 0),
            "messages_stored": self.pulse.stored,
            "clock_synchronized": snapshot.clock_synchronized,
        }

    def overview(self) -> dict[str, Any]:
        """Return ``{"gateway": the collector's health, "gateways": {ID: status, since, counts,
        bill preview}, "meters": {"ID/METER": card}, "order": keys, those that need a look
        first, "live": {}}``."""
        snapshot = self.holder.current
        version = -1 if snapshot is None else snapshot.version
        cached = self._cached
        if cached is not None and cached[0] == version:
            return cached[1]
        result: dict[str, Any] = {
            "gateway": self._health(snapshot),
            "gateways": {},
            "meters": {},
            "order": [],
            "live": {},
        }
        if snapshot is None:
            return result
        database = self._db()
        with self._lock:
            cached = self._cached
            if cached is not None and cached[0] == version:
                return cached[1]
            now_ns = time.time_ns()
            report = status_json(database, None, now_ns)["gateways"]
            states = {(m.gateway, m.meter): m.state for m in readback.meters(database.engine)}
            for gateway, g in report.items():
                cards = {
                    m: meter_card(gateway, m, s, states.get((gateway, m)))
                    for m, s in g["meters"].items()
                }
                for m, card in cards.items():
                    result["meters"][f"{gateway}/{m}"] = card
                    result["live"][f"{gateway}/{m}"] = {"quality": card["quality"]}
                periods = [c["current_period"] for c in cards.values()]
                known = [p["energy_wh"] for p in periods if p["energy_wh"] is not None]
                result["gateways"][gateway] = {
                    "status": g["status"],
                    "since": g["since"],
                    "meters": len(cards),
                    "attention": sum(1 for c in cards.values() if c["attention"]),
                    "bill": {
                        "period": max((p["period"] for p in periods if p["period"]), default=None),
                        "energy_wh": sum(known) if known else None,
                    },
                }
            # Offline gateways first; then meters that need a look (silent, gaps, anomalies).
            by_state = sorted(
                result["gateways"].items(), key=lambda i: (i[1]["status"] != "offline", i[0])
            )
            result["gateways"] = dict(by_state)
            result["order"] = sorted(
                result["meters"],
                key=lambda k: (not result["meters"][k]["attention"], k.partition("/")),
            )
            self._cached = (version, result)
            return result

    # -- what the commands print ---------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return status_json(self._db(), None, time.time_ns())

    def _split(self, name: str) -> tuple[str, str]:
        gateway, sep, meter = name.partition("/")
        if not sep or not gateway or not meter:
            raise NotFound(f"no meter {name!r}: a fleet meter is GATEWAY/METER")
        if not readback.meters(self._db().engine, gateway, meter):
            raise NotFound(f"no meter {meter!r} of gateway {gateway!r}")
        return gateway, meter

    def bill(self, period: str | None, meter: str | None) -> dict[str, Any]:
        """``bill --format json`` on the fleet; ``meter`` is GATEWAY/METER, or a meter's name
        across gateways."""
        database = self._db()
        gateway = None
        if meter is not None and "/" in meter:
            gateway, meter = self._split(meter)
        elif meter is not None and not readback.meters(database.engine, None, meter):
            raise NotFound(f"no meter {meter!r} in the fleet")
        if period is None and not readback.periods(database.engine):
            raise NotFound("no meter read in the fleet database yet")
        result: dict[str, Any] = json.loads(
            _capture(fleet_bill, database, gateway, meter, period, "json")
        )
        return result

    def meter(self, name: str) -> dict[str, Any]:
        gateway, meter = self._split(name)
        database = self._db()
        status = status_json(database, gateway, time.time_ns())["gateways"][gateway]
        state = readback.meters(database.engine, gateway, meter)[0].state
        card = meter_card(gateway, meter, status["meters"][meter], state)
        # "Today" is the meter's own day (UTC): that of its last interval, else the wall clock's.
        end = card["last_interval_end"]
        reference_ns = parse_time_ns(end) - 1 if end else time.time_ns()
        today_ns, from_ns = glance_window(reference_ns)
        rows = self._intervals(gateway, meter, format_iso(from_ns, 0))
        reads = [
            {k: v for k, v in payload.items() if k != "seq"}  # as the fleet's bill prints them
            for _g, _m, payload in readback.reads(database.engine, gateway, meter)
        ]
        return {
            "meter": name,
            "gateway": gateway,
            "status": card,
            "today": format_iso(today_ns, 0)[:10],
            "intervals": [r for r in rows if parse_time_ns(r["start"]) >= today_ns],
            "days": days_at_a_glance(rows),
            "reads": reads,
            "current_period": card["current_period"],
        }

    def _intervals(self, gateway: str, meter: str, start: str) -> list[dict[str, Any]]:
        text = _capture(fleet_export, self._db(), gateway, meter, start, None, "csv")
        return [
            {
                "start": row["start"],
                "end": row["end"],
                "energy_wh": int(row["energy_wh"]),
                "edges": int(row["edges"]),
                "demand_kw": float(row["demand_kw"]),
                "quality": row["quality"],
            }
            for row in csv.DictReader(io.StringIO(text))
        ]

    def download(self, name: str, kind: str, query: dict[str, str]) -> tuple[str, str]:
        gateway, meter = self._split(name)
        database = self._db()
        start, end = day_query(query.get("from"), 0), day_query(query.get("to"), 1)
        if kind == "bill.csv":
            period = query.get("period") or None
            return "text/csv", _capture(fleet_bill, database, gateway, meter, period, "csv")
        if kind == "intervals.csv":
            return "text/csv", _capture(fleet_export, database, gateway, meter, start, end, "csv")
        if kind == "espi.xml":
            text = _capture(fleet_export, database, gateway, meter, start, end, "espi")
            return "application/atom+xml", text
        raise NotFound(f"no download {kind!r}")

    # -- the page and /metrics ------------------------------------------------------------------

    def front_page(self) -> str:
        return pages.fleet_page(f"fleet ({self.title})", self.overview())

    def metrics_collector(self) -> MetricsCollector:
        return FleetCollector(self.overview, lambda: self.pulse.stored, self.title)


def collector_web(settings: CollectorSettings, collector: Collector, where: str) -> WebServer:
    """Bind the collector's fleet page (not yet serving) and hook it to the collector's loop;
    ConfigError naming ``where`` (``--web``, or the file's ``web``) when it cannot."""
    from gateway.web.server import WebServer

    url = database_url(settings)  # a password file that cannot be read stops start-up here
    pulse = FleetPulse(SnapshotHolder(), settings.client_id)
    provider = FleetProvider(url, pulse, settings.client_id)
    server = WebServer(settings.web, provider, where)
    collector.observers.append(pulse.observe)
    pulse.start()
    return server
