"""The database read back: what status, export, reconcile and a resuming daemon ask of it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway.core.estimate import HISTORY_WEEKS, WEEK_S, Estimate, Watched, estimate_gaps
from gateway.sinks.database import Database
from gateway.sinks.schema import (
    CounterRow,
    EventRow,
    IntervalRow,
    LcdReadingRow,
    MeterRow,
    MeterStateRow,
    SubIntervalRow,
)

NS_PER_S = 1_000_000_000
ESTIMATE_LOOKBACK_NS = HISTORY_WEEKS * WEEK_S * NS_PER_S  # the history a long gap averages
ESTIMATE_LOOKAHEAD_NS = 86_400 * NS_PER_S  # enough to tell a short gap from a long one


def unwatched_s(row: IntervalRow) -> int:
    """Return the seconds of a stored interval that nobody watched.

    Interim, until intervals keep the figure themselves: an interval inside a gap comes out
    with quality ``gap`` and no edge, so it is taken as wholly unwatched.
    """
    stored = getattr(row, "unwatched_s", None)  # the stored figure, where the schema has it
    if stored is not None:
        return int(stored)
    interval_s = (row.end_ns - row.start_ns) // NS_PER_S
    return interval_s if row.quality == "gap" and row.edges == 0 else 0


@dataclass
class StoredMeter:
    """A meter as the database holds it."""

    id: int
    name: str
    model: str
    source: str
    core_state: dict[str, Any] | None = None
    source_state: dict[str, Any] | None = None
    register_wh: int = 0
    published_wh: int = 0
    saved_ns: int | None = None
    counters: dict[str, CounterRow] = field(default_factory=dict)


def load_meter(session: Session, row: MeterRow) -> StoredMeter:
    """Return what the database holds of one meter."""
    stored = StoredMeter(row.id, row.name, row.model, row.source)
    state = session.get(MeterStateRow, row.id)
    if state is not None:
        stored.core_state = json.loads(state.core)
        stored.source_state = json.loads(state.source) if state.source else None
        stored.register_wh = state.register_wh
        stored.published_wh = state.published_wh
        stored.saved_ns = state.saved_ns
    for counter in session.scalars(select(CounterRow).where(CounterRow.meter_id == row.id)):
        stored.counters[counter.channel] = counter
    return stored


class Readback:
    """Queries over one database; none of them writes."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def find_meter(self, name: str) -> StoredMeter | None:
        with self.database.reading() as session:
            row = session.scalar(select(MeterRow).where(MeterRow.name == name))
            return None if row is None else load_meter(session, row)

    def meters(self) -> list[StoredMeter]:
        with self.database.reading() as session:
            rows = session.scalars(select(MeterRow).order_by(MeterRow.name)).all()
            return [load_meter(session, row) for row in rows]

    def intervals(
        self, meter: str | None = None, start_ns: int | None = None, end_ns: int | None = None
    ) -> list[tuple[str, IntervalRow]]:
        """Return (meter name, interval) pairs by meter and time, optionally filtered."""
        query = select(MeterRow.name, IntervalRow).join(
            IntervalRow, IntervalRow.meter_id == MeterRow.id
        )
        if meter is not None:
            query = query.where(MeterRow.name == meter)
        if start_ns is not None:
            query = query.where(IntervalRow.start_ns >= start_ns)
        if end_ns is not None:
            query = query.where(IntervalRow.end_ns <= end_ns)
        query = query.order_by(MeterRow.name, IntervalRow.start_ns)
        with self.database.reading() as session:
            return [(name, row) for name, row in session.execute(query).all()]

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
        per_meter: dict[str, list[IntervalRow]] = {}
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

    def events(self, meter_id: int, since_ns: int | None = None) -> list[EventRow]:
        query = select(EventRow).where(EventRow.meter_id == meter_id)
        if since_ns is not None:
            query = query.where(EventRow.t_ns >= since_ns)
        with self.database.reading() as session:
            return list(session.scalars(query.order_by(EventRow.t_ns, EventRow.id)))

    def subinterval_wh_from(self, meter_id: int, start_ns: int) -> int:
        """Return the register energy of the closed demand sub-intervals starting at or after
        ``start_ns``."""
        query = select(func.coalesce(func.sum(SubIntervalRow.energy_wh), 0)).where(
            SubIntervalRow.meter_id == meter_id, SubIntervalRow.start_ns >= start_ns
        )
        with self.database.reading() as session:
            return int(session.scalar(query) or 0)

    def lcd_readings(self, meter_id: int) -> list[LcdReadingRow]:
        query = select(LcdReadingRow).where(LcdReadingRow.meter_id == meter_id)
        with self.database.reading() as session:
            return list(session.scalars(query.order_by(LcdReadingRow.t_ns, LcdReadingRow.id)))

    def count(self, table: type[Any], meter_id: int | None = None) -> int:
        query = select(func.count()).select_from(table)
        if meter_id is not None:
            query = query.where(table.meter_id == meter_id)
        with self.database.reading() as session:
            return int(session.scalar(query) or 0)


def max_power_w(stored: StoredMeter) -> float | None:
    """Return the most power the meter can carry, as its core was configured; None: unknown."""
    settings = (stored.core_state or {}).get("settings") or {}
    value = settings.get("max_power_w")
    return None if value is None else float(value)
