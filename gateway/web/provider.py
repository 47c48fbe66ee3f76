"""Where the pages' numbers come from: a data provider, read on the web server's threads.

The server knows only the :class:`Provider` interface. :class:`GatewayProvider` serves the
daemon's own meters: live health from the loop's snapshots, and every number a command also
prints through that command's own function (``status --json``, ``bill``, ``export``, the
Green Button feed) on a read-only connection of the web's own, so the page and the command
line cannot disagree. A fleet collector plugs in as a second provider over its database.
"""

from __future__ import annotations

import csv
import io
import json
import re
import threading
import time
from abc import ABC, abstractmethod
from typing import Any

from prometheus_client.registry import Collector

from gateway.commands.bill import bill, determinants
from gateway.commands.database import export, meter_status, open_database
from gateway.commands.espi import export_espi
from gateway.errors import ConfigError, NotFoundError
from gateway.sinks.database import holds_open
from gateway.sinks.outbox import Outbox
from gateway.sinks.readback import Readback, stored_reads
from gateway.timefmt import NS_PER_S, format_iso, parse_time_ns
from gateway.web import pages
from gateway.web.metrics import SnapshotCollector
from gateway.web.snapshot import GatewaySnapshot, SnapshotHolder

DAY_NS = 86_400 * NS_PER_S
DAYS_AT_A_GLANCE = 7


class NotFound(LookupError):
    """A meter (or anything else asked for by name) that is not there: a 404."""


class NotReady(RuntimeError):
    """Nothing to serve yet (the collector still opening its database): a 503, try again."""


class Provider(ABC):
    """What the web server serves. Every method may raise ConfigError (a 400: bad query
    values, named), NotFound (a 404) or NotReady (a 503); it must not block on the loop."""

    title: str
    holder: SnapshotHolder

    @abstractmethod
    def overview(self) -> dict[str, Any]:
        """Return ``{"gateway": health, "meters": {name: status}}`` for the live page."""

    @abstractmethod
    def status(self) -> dict[str, Any]:
        """Return what ``status --json`` prints."""

    @abstractmethod
    def bill(self, period: str | None, meter: str | None) -> dict[str, Any]:
        """Return what ``bill --format json`` prints."""

    @abstractmethod
    def meter(self, name: str) -> dict[str, Any]:
        """Return the meter page's data: status, today's intervals, days, reads."""

    @abstractmethod
    def download(self, name: str, kind: str, query: dict[str, str]) -> tuple[str, str]:
        """Return (media type, body) of a meter's bill CSV, intervals CSV or ESPI feed."""

    def outbox_depth(self) -> int | None:
        """Return how many MQTT messages wait in the outbox (None: not known)."""
        return None

    def front_page(self) -> str:
        """Return the HTML of ``/``: the gateway page (a fleet draws its own)."""
        return pages.gateway_page(self.title, self.overview())

    def metrics_collector(self) -> Collector:
        """Return what ``/metrics`` exposes: the gateway's snapshot (a fleet has its own)."""
        return SnapshotCollector(self.holder, self.title, self.outbox_depth)

    def close(self) -> None:  # noqa: B027 (optional: most providers hold nothing)
        """Release what the provider holds."""


def _capture(function: Any, *args: Any, **kwargs: Any) -> str:
    out = io.StringIO()
    function(*args, out=out, **kwargs)
    return out.getvalue()


class GatewayProvider(Provider):
    """The daemon's meters: its snapshots, and its database read through the commands."""

    def __init__(self, url: str, holder: SnapshotHolder, title: str) -> None:
        self.url = url
        self.holder = holder
        self.title = title
        self._lock = threading.Lock()
        self._database: Any = None
        self._cached: tuple[int, dict[str, Any]] | None = None

    def _db(self) -> Any:
        # Opened on first use: the daemon migrates the database before it starts counting.
        if self._database is None:
            self._database = open_database(self.url)
        return self._database

    def close(self) -> None:
        with self._lock:
            database, self._database = self._database, None
        # While the daemon's store holds the file, its engine is the store's too (one connection
        # to an exclusively locked file): the store disposes of it, last. Disposing of it here
        # would strand a connection the store has out, still holding the file's lock.
        if database is not None and not holds_open(self.url.removeprefix("sqlite:///")):
            database.close()

    def _status_now(self) -> dict[str, Any]:
        readback = Readback(self._db())
        now_ns = time.time_ns()  # as the status command takes it
        return {"meters": {m.name: meter_status(readback, m, now_ns) for m in readback.meters()}}

    def overview(self) -> dict[str, Any]:
        """Computed once per snapshot, whoever asks (every open page shares it)."""
        snapshot = self.holder.current
        version = -1 if snapshot is None else snapshot.version
        with self._lock:
            if self._cached is not None and self._cached[0] == version:
                return self._cached[1]
            status = self._status_now() if snapshot is not None else {"meters": {}}
            depth = Outbox(self._db()).count() if snapshot is not None else None
            live = {
                m.name: {"quality": m.quality, "power_kw": round(m.power_kw, 3)}
                for m in (snapshot.meters if snapshot is not None else ())
            }
            result = {"gateway": health(snapshot, depth, self.title), **status, "live": live}
            self._cached = (version, result)
            return result

    def outbox_depth(self) -> int | None:
        value = self.overview()["gateway"]["outbox_depth"]
        return None if value is None else int(value)

    def status(self) -> dict[str, Any]:
        with self._lock:
            return self._status_now()

    def bill(self, period: str | None, meter: str | None) -> dict[str, Any]:
        try:
            text = _capture(bill, self.url, period, meter, "json")
        except NotFoundError as exc:
            raise NotFound(str(exc)) from None
        result: dict[str, Any] = json.loads(text)
        return result

    def _known(self, name: str) -> dict[str, Any]:
        meters: dict[str, Any] = self.overview()["meters"]
        if name not in meters:
            with self._lock:
                meters = self._status_now()["meters"]
        if name not in meters:
            raise NotFound(f"no meter {name!r}")
        result: dict[str, Any] = meters[name]
        return result

    def meter(self, name: str) -> dict[str, Any]:
        status = self._known(name)
        # "Today" is the meter's own day (UTC): a replayed log's, or the wall clock's.
        last = [parse_time_ns(t) for t in status["last_edge"].values() if t]
        reference_ns = max(last) if last else time.time_ns()
        today_ns, from_ns = glance_window(reference_ns)
        rows = intervals(self.url, name, format_iso(from_ns, 0), None)
        with self._lock:
            reads = [determinants(r) for r in stored_reads(self._db(), name)]
        since = reads[-1] if reads else None
        running = {
            "since": since["end"] if since else None,
            "energy_wh": status["energy_wh"] - (since["register_wh"] if since else 0),
        }
        return {
            "meter": name,
            "status": status,
            "today": format_iso(today_ns, 0)[:10],
            "intervals": [r for r in rows if parse_time_ns(r["start"]) >= today_ns],
            "days": days_at_a_glance(rows),
            "reads": reads,
            "current_period": running,
        }

    def download(self, name: str, kind: str, query: dict[str, str]) -> tuple[str, str]:
        self._known(name)
        start, end = day_query(query.get("from"), 0), day_query(query.get("to"), 1)
        if kind == "bill.csv":
            return "text/csv", _capture(bill, self.url, query.get("period") or None, name, "csv")
        if kind == "intervals.csv":
            return "text/csv", _capture(export, self.url, "csv", name, start, end)
        if kind == "espi.xml":
            text = _capture(export_espi, self.url, name, start, end)  # as the command writes it
            return "application/atom+xml", text
        raise NotFound(f"no download {kind!r}")


DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)


def glance_window(reference_ns: int) -> tuple[int, int]:
    """Return the start of the day holding ``reference_ns`` (UTC) and of the first day a meter
    page shows, :data:`DAYS_AT_A_GLANCE` days in all."""
    today_ns = reference_ns // DAY_NS * DAY_NS
    return today_ns, today_ns - (DAYS_AT_A_GLANCE - 1) * DAY_NS


def days_at_a_glance(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sum intervals (as :func:`intervals` gives them) per UTC day: energy, how many, and the
    first quality worse than complete."""
    days: dict[str, dict[str, Any]] = {}
    for row in rows:
        day = row["start"][:10]
        entry = days.setdefault(day, {"day": day, "energy_wh": 0, "intervals": 0})
        entry["energy_wh"] += row["energy_wh"]
        entry["intervals"] += 1
        entry["quality"] = (
            row["quality"] if entry.get("quality") in (None, "complete") else entry["quality"]
        )
    return list(days.values())


def day_query(text: str | None, after: int) -> str | None:
    """Return a query's time as the commands take it; a bare date (a date input's) is that UTC
    day's start, or with ``after`` the next day's (a "to" date includes its day)."""
    if not text:
        return None
    if not DATE_RE.fullmatch(text):
        return text
    try:
        day_ns = parse_time_ns(f"{text}T00:00:00Z")
    except ValueError as exc:
        raise ConfigError(f"{text!r}: {exc}") from None
    return format_iso(day_ns + after * DAY_NS, 0)


def intervals(url: str, meter: str, start: str | None, end: str | None) -> list[dict[str, Any]]:
    """Return a meter's intervals as ``export --format csv`` writes them, as JSON rows."""
    text = _capture(export, url, "csv", meter, start, end)
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        rows.append(
            {
                "start": row["start"],
                "end": row["end"],
                "energy_wh": int(row["energy_wh"]),
                "edges": int(row["edges"]),
                "demand_kw": float(row["demand_kw"]),
                "quality": row["quality"],
            }
        )
    return rows


def health(
    snapshot: GatewaySnapshot | None, outbox_depth: int | None, title: str
) -> dict[str, Any]:
    """Return the gateway's health as the page and ``/api/overview`` show it."""
    if snapshot is None:
        return {"gateway": title, "state": "starting", "outbox_depth": outbox_depth}
    return {
        "gateway": snapshot.gateway,
        "state": "running",
        "time": format_iso(snapshot.t_ns, 0),
        "mqtt": (
            "off"
            if not snapshot.mqtt_enabled
            else "connected"
            if snapshot.mqtt_connected
            else "disconnected"
        ),
        "outbox_depth": outbox_depth,
        "storage": "ok" if snapshot.storage_error is None else snapshot.storage_error,
        "last_commit": None
        if snapshot.last_commit_ns is None
        else format_iso(snapshot.last_commit_ns, 0),
        "commit_latency_s": snapshot.commit_latency_s,
        "clock_synchronized": snapshot.clock_synchronized,
    }
