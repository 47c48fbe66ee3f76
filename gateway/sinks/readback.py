"""The database read back: what status, export, reconcile and a resuming daemon ask of it.

Every query is written here once, in plain SQL, and returns small frozen dataclasses: no ORM
row leaves ``gateway/sinks/``. A :class:`Readback` runs them on anything that has
``rows(sql, params)``: a :class:`~gateway.sinks.database.Database` (SQLAlchemy: SQLite or
PostgreSQL), or a :class:`~gateway.sinks.quickread.QuickReader` (the stdlib's ``sqlite3``,
read-only: ``status`` without importing SQLAlchemy, issue 21). The SQL is what both
understand; nothing here imports SQLAlchemy at module level.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from gateway.core.estimate import HISTORY_WEEKS, WEEK_S, Estimate, Watched, estimate_gaps
from gateway.sinks.payloads import read_payload
from gateway.timefmt import format_iso
from meter_model.units import NS_PER_S

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from gateway.sinks.schema import MeterRow

__all__ = [
    "Readback",
    "RowSource",
    "StoredCounter",
    "StoredEvent",
    "StoredInterval",
    "StoredLcdReading",
    "StoredMeter",
    "StoredRead",
    "last_lcd",
    "load_meter",
    "max_power_w",
    "reconciliation_summary",
    "stored_reads",
    "unwatched_s",
]

ESTIMATE_LOOKBACK_NS = HISTORY_WEEKS * WEEK_S * NS_PER_S  # the history a long gap averages
ESTIMATE_LOOKAHEAD_NS = 86_400 * NS_PER_S  # enough to tell a short gap from a long one
DEFAULT_INTERVAL_NS = 900 * NS_PER_S

Row = tuple[Any, ...]


class RowSource(Protocol):
    """Where a :class:`Readback` runs its queries: ``:name`` parameters, rows as tuples."""

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Row]: ...


# -- what the database holds, as values ---------------------------------------------------------


@dataclass(frozen=True)
class StoredCounter:
    """One channel's counter (the ``channel_counters`` row)."""

    meter_id: int
    channel: str
    edges: int
    wh_per_edge: int
    level: int | None
    last_edge_ns: int | None
    glitches: int
    inferred: int
    duplicates: int
    skipped: int


@dataclass(frozen=True)
class StoredInterval:
    """A stored interval (or one interval of a stored run of empty ones)."""

    meter_id: int
    start_ns: int
    end_ns: int
    energy_wh: int
    edges: int
    quality: str
    flags: str = ""
    unwatched_s: int = 0  # seconds of it nobody watched (0: watched whole)


@dataclass(frozen=True)
class StoredEvent:
    id: int
    meter_id: int | None
    t_ns: int
    kind: str
    channel: str | None
    detail: str
    missed_wh: int


@dataclass(frozen=True)
class StoredLcdReading:
    """A reading taken off the meter's LCD, with the counted register at that moment."""

    id: int
    meter_id: int
    t_ns: int
    lcd_kwh: int
    register_wh: int


@dataclass
class StoredMeter:
    """A meter as the database holds it (not frozen: a resuming pipeline carries it, and a
    test sets a source's state on it)."""

    id: int
    name: str
    model: str
    source: str
    core_state: dict[str, Any] | None = None
    source_state: dict[str, Any] | None = None
    register_wh: int = 0
    published_wh: int = 0
    saved_ns: int | None = None
    counters: dict[str, StoredCounter] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredRead:
    meter: str
    columns: dict[str, Any]
    seq: int
    reconciliation: dict[str, Any] | None

    def payload(self) -> dict[str, Any]:
        return read_payload(self.meter, self.columns, self.seq, self.reconciliation)


# -- the queries ----------------------------------------------------------------------------------

_METERS = "SELECT id, name, model, source FROM meters"
_STATES = (
    "SELECT s.meter_id, s.core, s.source, s.register_wh, s.published_wh, s.saved_ns"
    " FROM meter_state s JOIN meters m ON m.id = s.meter_id"
)
_COUNTERS = (
    "SELECT c.meter_id, c.channel, c.edges, c.wh_per_edge, c.level, c.last_edge_ns,"
    " c.glitches, c.inferred, c.duplicates, c.skipped"
    " FROM channel_counters c JOIN meters m ON m.id = c.meter_id"
)
_EVENTS = (
    "SELECT id, meter_id, t_ns, kind, channel, detail, missed_wh FROM events"
    " WHERE meter_id = :meter_id"
)
_LCD_READINGS = (
    "SELECT id, meter_id, t_ns, lcd_kwh, register_wh FROM lcd_readings WHERE meter_id = :meter_id"
)
_INTERVALS = (
    "SELECT m.name, i.meter_id, i.start_ns, i.end_ns, i.energy_wh, i.edges, i.quality, i.flags,"
    " i.unwatched_s FROM intervals i JOIN meters m ON m.id = i.meter_id"
)
_READ_COLUMNS = (
    "period",
    "start_ns",
    "t_ns",
    "register_channel",
    "register_wh",
    "energy_wh",
    "edges",
    "peak_window_energy_wh",
    "peak_window_s",
    "peak_window_end_ns",
    "peak_partial",
    "quality",
    "gap_s",
    "glitches",
    "inferred",
    "mismatches",
    "estimate_low_wh",
    "estimate_high_wh",
    "estimate_from",
)
_READS = (
    "SELECT m.name, r.meter_id, r.seq, "
    + ", ".join(f"r.{column}" for column in _READ_COLUMNS)
    + " FROM meter_reads r JOIN meters m ON m.id = r.meter_id"
)


def _where(sql: str, conditions: list[str], order: str) -> str:
    return sql + (" WHERE " + " AND ".join(conditions) if conditions else "") + " ORDER BY " + order


def _meters(rows: RowSource, name: str | None = None) -> list[StoredMeter]:
    """Return the meters (one: ``name``) with their state and counters, by name."""
    where, params = ([] if name is None else ["m.name = :name"]), {"name": name}
    states = {r[0]: r for r in rows.rows(_where(_STATES, where, "s.meter_id"), params)}
    counters: dict[int, dict[str, StoredCounter]] = {}
    for r in rows.rows(_where(_COUNTERS, where, "c.meter_id, c.channel"), params):
        counters.setdefault(r[0], {})[r[1]] = StoredCounter(*r)
    found = []
    meters = rows.rows(_where(_METERS + " m", where, "m.name"), params)
    for meter_id, meter_name, model, source in meters:
        state = states.get(meter_id)
        extra: dict[str, Any] = {}
        if state is not None:
            extra = {
                "core_state": json.loads(state[1]),
                "source_state": json.loads(state[2]) if state[2] else None,
                "register_wh": state[3],
                "published_wh": state[4],
                "saved_ns": state[5],
            }
        found.append(
            StoredMeter(
                meter_id, meter_name, model, source, counters=counters.get(meter_id, {}), **extra
            )
        )
    return found


def _lcd_readings(rows: RowSource, meter_id: int) -> list[StoredLcdReading]:
    query = _LCD_READINGS + " ORDER BY t_ns, id"
    return [StoredLcdReading(*r) for r in rows.rows(query, {"meter_id": meter_id})]


def _optional_bool(value: Any) -> bool | None:
    return None if value is None else bool(value)  # SQLite keeps booleans as 0 and 1


def _reads(rows: RowSource, meter: str | None, period: str | None) -> list[StoredRead]:
    conditions = []
    if meter is not None:
        conditions.append("m.name = :meter")
    if period is not None:
        conditions.append("r.period = :period")
    query = _where(_READS, conditions, "m.name, r.t_ns")
    readings: dict[int, list[StoredLcdReading]] = {}
    result = []
    for name, meter_id, seq, *values in rows.rows(query, {"meter": meter, "period": period}):
        columns = dict(zip(_READ_COLUMNS, values, strict=True))
        columns["peak_partial"] = _optional_bool(columns["peak_partial"])
        if meter_id not in readings:
            readings[meter_id] = _lcd_readings(rows, meter_id)
        lcd = _last_before(readings[meter_id], columns["t_ns"])
        result.append(StoredRead(name, columns, seq, reconciliation_summary(lcd)))
    return result


def _last_before(readings: list[StoredLcdReading], t_ns: int) -> StoredLcdReading | None:
    """The last reading (by time, then id) at or before ``t_ns``; ``readings`` in that order."""
    before = [r for r in readings if r.t_ns <= t_ns]
    return before[-1] if before else None


def _pieces(run: StoredInterval, length_ns: int, lo: int, hi: int) -> list[StoredInterval]:
    """Return a stored run of empty intervals as one row per interval within ``[lo, hi)``."""
    first = max(run.start_ns, run.start_ns + -(-(lo - run.start_ns) // length_ns) * length_ns)
    stop = min(run.end_ns, hi)
    unwatched = length_ns // NS_PER_S if run.unwatched_s else 0
    return [
        StoredInterval(run.meter_id, start, start + length_ns, 0, 0, run.quality, "", unwatched)
        for start in range(first, stop - length_ns + 1, length_ns)
    ]


def unwatched_s(row: StoredInterval) -> int:
    """Return the seconds of a stored interval that nobody watched (0: wholly watched)."""
    return int(row.unwatched_s)


class Readback:
    """Queries over one database; none of them writes."""

    def __init__(self, database: RowSource) -> None:
        self.database = database

    def find_meter(self, name: str) -> StoredMeter | None:
        found = _meters(self.database, name)
        return found[0] if found else None

    def meters(self) -> list[StoredMeter]:
        return _meters(self.database)

    def intervals(
        self, meter: str | None = None, start_ns: int | None = None, end_ns: int | None = None
    ) -> list[tuple[str, StoredInterval]]:
        """Return (meter name, interval) pairs by meter and time, optionally filtered (whole
        intervals from ``start_ns`` up to ``end_ns``).

        Each interval's ``unwatched_s`` says how many of its seconds nobody watched. Empty time
        is stored as ranges (a row spanning a run of empty intervals, see
        ``IntervalBatch.compact``): they come back here one interval each, as if stored so.
        """
        conditions = []
        if meter is not None:
            conditions.append("m.name = :meter")
        if start_ns is not None:
            conditions.append("i.end_ns > :start_ns")
        if end_ns is not None:
            conditions.append("i.start_ns < :end_ns")
        query = _where(_INTERVALS, conditions, "m.name, i.start_ns")
        params = {"meter": meter, "start_ns": start_ns, "end_ns": end_ns}
        lo = start_ns if start_ns is not None else -(2**63)
        hi = end_ns if end_ns is not None else 2**63
        lengths = self._interval_lengths()
        found: list[tuple[str, StoredInterval]] = []
        for name, *values in self.database.rows(query, params):
            row = StoredInterval(*values)
            length = lengths.get(row.meter_id, DEFAULT_INTERVAL_NS)
            if row.end_ns - row.start_ns <= length:
                if row.start_ns >= lo and row.end_ns <= hi:
                    found.append((name, row))
                continue
            found.extend((name, piece) for piece in _pieces(row, length, lo, hi))
        return found

    def _interval_lengths(self) -> dict[int, int]:
        """Return each meter's interval length (ns), from the settings its state keeps."""
        lengths = {}
        for meter_id, core in self.database.rows("SELECT meter_id, core FROM meter_state"):
            settings = json.loads(core).get("settings") or {}
            lengths[meter_id] = int(settings.get("interval_s", 900)) * NS_PER_S
        return lengths

    def estimates(
        self, meter: str | None = None, start_ns: int | None = None, end_ns: int | None = None
    ) -> dict[str, dict[int, Estimate]]:
        """Return the estimates of unwatched time per meter, by interval start, for the
        intervals in ``[start_ns, end_ns]`` (see gateway/core/estimate.py); the weeks before
        are read too, for a long gap's history."""
        from_ns = None if start_ns is None else start_ns - ESTIMATE_LOOKBACK_NS
        to_ns = None if end_ns is None else end_ns + ESTIMATE_LOOKAHEAD_NS
        rows = self.intervals(meter, from_ns, to_ns)
        found_meter = None if meter is None else self.find_meter(meter)
        meters = self.meters() if meter is None else [found_meter] if found_meter else []
        max_power = {m.name: max_power_w(m) for m in meters}
        per_meter: dict[str, list[StoredInterval]] = {}
        for name, row in rows:
            per_meter.setdefault(name, []).append(row)
        result: dict[str, dict[int, Estimate]] = {}
        for name, meter_rows in per_meter.items():
            if not any(unwatched_s(row) for row in meter_rows):
                continue
            interval_s = (meter_rows[0].end_ns - meter_rows[0].start_ns) // NS_PER_S
            watched = [Watched(r.start_ns, r.energy_wh, unwatched_s(r)) for r in meter_rows]
            found = estimate_gaps(watched, interval_s, max_power.get(name))
            result[name] = {
                t: e
                for t, e in found.items()
                if (start_ns is None or t >= start_ns)
                and (end_ns is None or t + interval_s * NS_PER_S <= end_ns)
            }
        return result

    def events(self, meter_id: int, since_ns: int | None = None) -> list[StoredEvent]:
        query = _EVENTS + ("" if since_ns is None else " AND t_ns >= :since_ns")
        params = {"meter_id": meter_id, "since_ns": since_ns}
        return [StoredEvent(*r) for r in self.database.rows(query + " ORDER BY t_ns, id", params)]

    def subinterval_wh_from(self, meter_id: int, start_ns: int) -> int:
        """Return the register energy of the closed demand sub-intervals starting at or after
        ``start_ns``."""
        query = (
            "SELECT COALESCE(SUM(energy_wh), 0) FROM demand_subintervals"
            " WHERE meter_id = :meter_id AND start_ns >= :start_ns"
        )
        ((total,),) = self.database.rows(query, {"meter_id": meter_id, "start_ns": start_ns})
        return int(total or 0)

    def first_unwatched(self, meter_id: int, from_ns: int, to_ns: int) -> int | None:
        """Return the start of the first interval nobody watched whole (and so holding no
        counted edge) that overlaps ``[from_ns, to_ns]``, if any."""
        query = (
            "SELECT start_ns FROM intervals WHERE meter_id = :meter_id"
            " AND end_ns > :from_ns AND start_ns <= :to_ns"
            f" AND unwatched_s * {NS_PER_S} >= end_ns - start_ns"
            " AND edges = 0"  # an edge on the instant watching ended was counted
            " ORDER BY start_ns LIMIT 1"
        )
        params = {"meter_id": meter_id, "from_ns": from_ns, "to_ns": to_ns}
        found = self.database.rows(query, params)
        return None if not found else int(found[0][0])

    def lcd_readings(self, meter_id: int) -> list[StoredLcdReading]:
        return _lcd_readings(self.database, meter_id)

    def reads(self, meter: str | None = None, period: str | None = None) -> list[StoredRead]:
        """Return the stored reads, by meter and time, optionally of one meter or period."""
        return _reads(self.database, meter, period)

    def count(self, table: Any, meter_id: int | None = None) -> int:
        """Return how many rows a table holds (of one meter); ``table``: its name or model."""
        name = table if isinstance(table, str) else table.__tablename__
        query = f"SELECT COUNT(*) FROM {name}"
        if meter_id is not None:
            query += " WHERE meter_id = :meter_id"
        ((total,),) = self.database.rows(query, {"meter_id": meter_id})
        return int(total or 0)


def stored_reads(
    database: RowSource, meter: str | None = None, period: str | None = None
) -> list[StoredRead]:
    """Return the stored reads, by meter and time, optionally of one meter or period."""
    return _reads(database, meter, period)


def max_power_w(stored: StoredMeter) -> float | None:
    """Return the most power the meter can carry, as its core was configured; None: unknown."""
    settings = (stored.core_state or {}).get("settings") or {}
    value = settings.get("max_power_w")
    return None if value is None else float(value)


def reconciliation_summary(row: StoredLcdReading | None) -> dict[str, Any] | None:
    """Return the last LCD reading before a read: the LCD truncates, so N kWh on it means the
    meter held N000..N999 Wh while the gateway had counted ``register_wh``."""
    if row is None:
        return None
    low = row.lcd_kwh * 1000 - row.register_wh
    return {
        "time": format_iso(row.t_ns),
        "lcd_kwh": row.lcd_kwh,
        "register_wh": row.register_wh,
        "offset_wh": [low, low + 999],
    }


# -- the same queries inside a writer's transaction (the store's) ---------------------------------


class _SessionRows:
    """The queries above on a session, which sees its own transaction's writes."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        from sqlalchemy import text

        self.session.flush()  # a plain statement does not flush what the session holds
        return [tuple(row) for row in self.session.execute(text(sql), dict(params or {}))]


def load_meter(session: Session, row: MeterRow) -> StoredMeter:
    """Return what the database holds of one meter, in the session's transaction."""
    (stored,) = _meters(_SessionRows(session), row.name)
    return stored


def last_lcd(session: Session, meter_id: int, t_ns: int) -> StoredLcdReading | None:
    """Return the last LCD reading at or before ``t_ns``, in the session's transaction."""
    return _last_before(_lcd_readings(_SessionRows(session), meter_id), t_ns)
