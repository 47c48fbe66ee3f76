"""The database read back: what status, export, reconcile and a resuming daemon ask of it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway.core.estimate import HISTORY_WEEKS, WEEK_S, Estimate, Watched, estimate_gaps
from gateway.sinks.database import Database
from gateway.sinks.payloads import read_payload
from gateway.sinks.schema import (
    CounterRow,
    EventRow,
    IntervalRow,
    LcdReadingRow,
    MeterReadRow,
    MeterRow,
    MeterStateRow,
    SubIntervalRow,
)
from gateway.timefmt import format_iso
from meter_model.units import NS_PER_S

ESTIMATE_LOOKBACK_NS = HISTORY_WEEKS * WEEK_S * NS_PER_S  # the history a long gap averages
ESTIMATE_LOOKAHEAD_NS = 86_400 * NS_PER_S  # enough to tell a short gap from a long one


def unwatched_s(row: IntervalRow) -> int:
    """Return the seconds of a stored interval that nobody watched (0: wholly watched)."""
    return int(row.unwatched_s)


DEFAULT_INTERVAL_NS = 900 * NS_PER_S


def _pieces(run: IntervalRow, length_ns: int, lo: int, hi: int) -> list[IntervalRow]:
    """Return a stored run of empty intervals as one row per interval within ``[lo, hi)``."""
    first = max(run.start_ns, run.start_ns + -(-(lo - run.start_ns) // length_ns) * length_ns)
    stop = min(run.end_ns, hi)
    unwatched_s = length_ns // NS_PER_S if run.unwatched_s else 0
    return [
        IntervalRow(
            meter_id=run.meter_id,
            start_ns=start,
            end_ns=start + length_ns,
            energy_wh=0,
            edges=0,
            quality=run.quality,
            flags="",
            unwatched_s=unwatched_s,
        )
        for start in range(first, stop - length_ns + 1, length_ns)
    ]


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
        """Return (meter name, interval) pairs by meter and time, optionally filtered (whole
        intervals from ``start_ns`` up to ``end_ns``).

        Each interval's ``unwatched_s`` says how many of its seconds nobody watched. Empty time
        is stored as ranges (a row spanning a run of empty intervals, see
        ``IntervalBatch.compact``): they come back here one interval each, as if stored so.
        """
        query = select(MeterRow.name, IntervalRow).join(
            IntervalRow, IntervalRow.meter_id == MeterRow.id
        )
        if meter is not None:
            query = query.where(MeterRow.name == meter)
        if start_ns is not None:
            query = query.where(IntervalRow.end_ns > start_ns)
        if end_ns is not None:
            query = query.where(IntervalRow.start_ns < end_ns)
        query = query.order_by(MeterRow.name, IntervalRow.start_ns)
        lo = start_ns if start_ns is not None else -(2**63)
        hi = end_ns if end_ns is not None else 2**63
        with self.database.reading() as session:
            lengths = self._interval_lengths(session)
            found: list[tuple[str, IntervalRow]] = []
            for name, row in session.execute(query).all():
                length = lengths.get(row.meter_id, DEFAULT_INTERVAL_NS)
                if row.end_ns - row.start_ns <= length:
                    if row.start_ns >= lo and row.end_ns <= hi:
                        found.append((name, row))
                    continue
                found.extend((name, piece) for piece in _pieces(row, length, lo, hi))
            return found

    @staticmethod
    def _interval_lengths(session: Session) -> dict[int, int]:
        """Return each meter's interval length (ns), from the settings its state keeps."""
        lengths = {}
        for meter_id, core in session.execute(select(MeterStateRow.meter_id, MeterStateRow.core)):
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

    def first_unwatched(self, meter_id: int, from_ns: int, to_ns: int) -> int | None:
        """Return the start of the first interval nobody watched whole (and so holding no
        counted edge) that overlaps ``[from_ns, to_ns]``, if any."""
        query = (
            select(IntervalRow.start_ns)
            .where(
                IntervalRow.meter_id == meter_id,
                IntervalRow.end_ns > from_ns,
                IntervalRow.start_ns <= to_ns,
                IntervalRow.unwatched_s * NS_PER_S >= IntervalRow.end_ns - IntervalRow.start_ns,
                IntervalRow.edges == 0,  # an edge on the instant watching ended was counted
            )
            .order_by(IntervalRow.start_ns)
            .limit(1)
        )
        with self.database.reading() as session:
            found = session.scalar(query)
            return None if found is None else int(found)

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


def reconciliation_summary(row: LcdReadingRow | None) -> dict[str, Any] | None:
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


def last_lcd(session: Session, meter_id: int, t_ns: int) -> LcdReadingRow | None:
    return session.scalar(
        select(LcdReadingRow)
        .where(LcdReadingRow.meter_id == meter_id, LcdReadingRow.t_ns <= t_ns)
        .order_by(LcdReadingRow.t_ns.desc(), LcdReadingRow.id.desc())
        .limit(1)
    )


@dataclass(frozen=True)
class StoredRead:
    meter: str
    columns: dict[str, Any]
    seq: int
    reconciliation: dict[str, Any] | None

    def payload(self) -> dict[str, Any]:
        return read_payload(self.meter, self.columns, self.seq, self.reconciliation)


def stored_reads(
    database: Database, meter: str | None = None, period: str | None = None
) -> list[StoredRead]:
    """Return the stored reads, by meter and time, optionally of one meter or period."""
    query = select(MeterRow.name, MeterReadRow).join(MeterRow, MeterRow.id == MeterReadRow.meter_id)
    if meter is not None:
        query = query.where(MeterRow.name == meter)
    if period is not None:
        query = query.where(MeterReadRow.period == period)
    query = query.order_by(MeterRow.name, MeterReadRow.t_ns)
    with database.reading() as session:
        result = []
        for name, row in session.execute(query).all():
            columns = {key: getattr(row, key) for key in _READ_COLUMNS}
            lcd = reconciliation_summary(last_lcd(session, row.meter_id, row.t_ns))
            result.append(StoredRead(name, columns, row.seq, lcd))
        return result


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
