"""The store: what the gateway writes to its database, one transaction per commit.

A meter's counters, its resume state, the intervals, demand sub-intervals, peaks and events
derived from the same edges, and the MQTT outbox entries for them are written in **one
transaction** per commit (:class:`MeterBatch`, built by :mod:`gateway.checkpoint`), so a crash
loses at most the last commit and never leaves them disagreeing. Reading back is
:mod:`gateway.sinks.readback`'s job, the outbox's delivery :mod:`gateway.sinks.outbox`'s.

A Raspberry Pi's SD card wears with every byte written, so a commit writes only what changed,
with plain INSERT and UPDATE statements: the store remembers what the database holds of each
meter (:class:`_Written`) and compares. Its memory is updated only once a transaction has
committed, so a failed commit is simply tried again in full.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from gateway.checkpoint import MeterBatch
from gateway.core.events import Event
from gateway.core.reads import MeterRead
from gateway.sinks.database import Database
from gateway.sinks.outbox import outbox_row
from gateway.sinks.payloads import event_payload, interval_payload, read_payload
from gateway.sinks.readback import StoredMeter, last_lcd, load_meter, reconciliation_summary
from gateway.sinks.schema import (
    CounterRow,
    EventRow,
    IntervalRow,
    LcdReadingRow,
    MeterReadRow,
    MeterRow,
    MeterStateRow,
    PeakRow,
    SubIntervalRow,
)
from gateway.sinks.sink import MeterState, Sink
from meter_model.demand import Peak
from meter_model.units import NS_PER_US

logger = logging.getLogger(__name__)


@dataclass
class _Written:
    """What the database holds of one meter, as this store last wrote or read it."""

    meter_id: int
    state: dict[str, Any] | None = None  # the meter_state row's columns, None: no row yet
    counters: dict[str, dict[str, int | None]] = field(default_factory=dict)
    peak: dict[str, Any] | None = None  # the current peak row's columns (id included)


def _json(data: dict[str, Any] | None) -> str | None:
    return None if data is None else json.dumps(data, separators=(",", ":"))


class Store(Sink):
    """Writes to the gateway's database."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._written: dict[str, _Written] = {}

    def meter(self, name: str, model: str, source: str, now_ns: int) -> StoredMeter:
        """Return a meter's stored state, registering the meter if it is new."""
        with self.database.transaction() as session:
            return load_meter(session, _meter_row(session, name, model, source, now_ns))

    # -- the batch ---------------------------------------------------------------------------

    def commit(self, batches: Iterable[MeterBatch], now_ns: int, *, stamp: bool = False) -> int:
        """Write every meter's batch in one transaction; return how many statements it took.

        ``stamp`` writes each meter's ``saved_ns`` even when nothing else changed (the last
        commit before a stop: a restart then knows when the meter stopped being watched).
        """
        batches = list(batches)
        written: dict[str, _Written] = {}
        statements = 0
        try:
            with self.database.transaction() as session:
                if self.database.guard(session):  # the lock was lost and taken again: and
                    self._written.clear()  # what the database holds may have changed meanwhile
                for batch in batches:
                    known = self._written.get(batch.name) or self._load(session, batch, now_ns)
                    after, count = self._write(session, batch, known, now_ns, stamp=stamp)
                    written[batch.name] = after
                    statements += count
        except BaseException:
            # The database may hold the transaction after all (a connection lost during
            # COMMIT): read it again next time rather than trust what this store remembers.
            for batch in batches:
                self._written.pop(batch.name, None)
            raise
        self._written.update(written)  # only now: the transaction is in the database
        return statements

    def publish(self, state: MeterState) -> None:
        """Nothing to do: the store holds the committed totals a state shows already."""

    def close(self) -> None:
        """Close the database."""
        self.database.close()

    def _load(self, session: Session, batch: MeterBatch, now_ns: int) -> _Written:
        """Read what the database holds of a meter (registering it if new)."""
        meter = _meter_row(session, batch.name, batch.model, batch.source, now_ns)
        known = _Written(meter.id)
        state = session.get(MeterStateRow, meter.id)
        if state is not None:
            known.state = {column: getattr(state, column) for column in _STATE_COLUMNS}
        for counter in session.scalars(select(CounterRow).where(CounterRow.meter_id == meter.id)):
            known.counters[counter.channel] = {
                column: getattr(counter, column) for column in _COUNTER_COLUMNS
            }
        peak = session.scalar(
            select(PeakRow).where(PeakRow.meter_id == meter.id, PeakRow.reset_ns.is_(None))
        )
        if peak is not None:
            known.peak = {column: getattr(peak, column) for column in _PEAK_COLUMNS}
        return known

    def _write(
        self, session: Session, batch: MeterBatch, known: _Written, now_ns: int, *, stamp: bool
    ) -> tuple[_Written, int]:
        """Write what changed; return what the database then holds, and the statement count."""
        meter_id = known.meter_id
        statements = 0
        state = dict(known.state or {"next_interval_seq": 1, "next_event_seq": 1})
        state.update(
            core=_json(batch.core_state),
            source=_json(batch.source_state),
            register_wh=batch.register_wh,
            published_wh=max(int(state.get("published_wh") or 0), batch.published_wh),
        )
        rows: list[dict[str, Any]] = []
        outbox: list[Any] = []
        for interval in batch.intervals:
            rows.append(
                {
                    "meter_id": meter_id,
                    "start_ns": interval.start_ns,
                    "end_ns": interval.end_ns,
                    "energy_wh": interval.energy_wh,
                    "edges": interval.edges,
                    "quality": interval.quality,
                    "flags": ",".join(interval.flags),
                    "unwatched_s": interval.unwatched_s,
                }
            )
            if batch.outbox:
                seq = state["next_interval_seq"]
                state["next_interval_seq"] = seq + 1
                payload = interval_payload(interval, seq)
                outbox.append(outbox_row(meter_id, "interval", seq, payload, now_ns))
        if rows and batch.replace_from_ns is not None:
            session.execute(
                delete(IntervalRow).where(
                    IntervalRow.meter_id == meter_id, IntervalRow.start_ns >= batch.replace_from_ns
                )
            )
            statements += 1
        if rows:
            session.execute(_insert_new(session, IntervalRow), rows)
            statements += 1
        if batch.subintervals:
            session.execute(
                _insert_new(session, SubIntervalRow),
                [
                    {
                        "meter_id": meter_id,
                        "start_ns": sub.start_us * NS_PER_US,
                        "end_ns": sub.end_us * NS_PER_US,
                        "energy_wh": sub.energy,
                        "complete": sub.complete,
                    }
                    for sub in batch.subintervals
                ],
            )
            statements += 1
        for item in batch.events:
            session.add(event_row(meter_id, item))
            statements += 1
            if batch.outbox:
                seq = state["next_event_seq"]
                state["next_event_seq"] = seq + 1
                payload = event_payload(batch.name, item, seq)
                outbox.append(outbox_row(meter_id, "event", seq, payload, now_ns))
        session.add_all(outbox)
        statements += len(outbox)
        statements += write_reads(
            session, meter_id, batch.name, batch.reads, now_ns, outbox=batch.outbox
        )
        for reset in batch.resets:
            session.add(
                PeakRow(meter_id=meter_id, **_peak_columns(reset.peak, batch), reset_ns=reset.t_ns)
            )
            statements += 1
        # The state row, the counters and the current peak: only what differs from the database.
        if known.state is None:
            state["saved_ns"] = now_ns
            session.execute(insert(MeterStateRow), [{"meter_id": meter_id, **state}])
            statements += 1
        elif state != known.state or stamp:
            state["saved_ns"] = now_ns
            changed = {k: v for k, v in state.items() if v != known.state.get(k)}
            if changed:  # a stamp at the time already stamped (a clock that stood) changes none
                session.execute(
                    update(MeterStateRow).where(MeterStateRow.meter_id == meter_id).values(changed)
                )
                statements += 1
        counters = dict(known.counters)
        for channel, values in batch.counters.items():
            before = known.counters.get(channel)
            if before is None:
                row = {"meter_id": meter_id, "channel": channel, **values}
                session.execute(insert(CounterRow), [row])
            elif values != before:
                changed = {k: v for k, v in values.items() if v != before.get(k)}
                session.execute(
                    update(CounterRow)
                    .where(CounterRow.meter_id == meter_id, CounterRow.channel == channel)
                    .values(changed)
                )
            else:
                continue
            counters[channel] = dict(values)
            statements += 1
        peak = known.peak
        if batch.peak is not None:
            columns = _peak_columns(batch.peak, batch)
            if peak is None:
                result = session.execute(
                    insert(PeakRow).returning(PeakRow.id), [{"meter_id": meter_id, **columns}]
                )
                peak = {"id": result.scalar_one(), **columns}
                statements += 1
            elif any(peak[k] != v for k, v in columns.items()):
                session.execute(update(PeakRow).where(PeakRow.id == peak["id"]).values(columns))
                peak = {"id": peak["id"], **columns}
                statements += 1
        elif peak is not None:  # reset (recorded above), and no window has closed since
            session.execute(delete(PeakRow).where(PeakRow.id == peak["id"]))
            peak = None
            statements += 1
        return dataclasses.replace(known, state=state, counters=counters, peak=peak), statements

    def add_lcd_reading(self, meter_id: int, t_ns: int, lcd_kwh: int, register_wh: int) -> None:
        with self.database.transaction() as session:
            row = LcdReadingRow(
                meter_id=meter_id, t_ns=t_ns, lcd_kwh=lcd_kwh, register_wh=register_wh
            )
            session.add(row)


def _meter_row(session: Session, name: str, model: str, source: str, now_ns: int) -> MeterRow:
    """Return a meter's row, registering the meter if it is new."""
    row = session.scalar(select(MeterRow).where(MeterRow.name == name))
    if row is None:
        row = MeterRow(name=name, model=model, source=source, created_ns=now_ns)
        session.add(row)
        session.flush()
    return row


def _insert_new(session: Session, table: type[IntervalRow] | type[SubIntervalRow]) -> Any:
    """An INSERT that leaves a row already there (same meter and start) as it is.

    Closed periods never change, so a retry of a commit that in fact reached the database (a
    connection lost during COMMIT) writes them again harmlessly instead of failing for ever.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing()
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    return insert(table)


_STATE_COLUMNS = (
    "core",
    "source",
    "register_wh",
    "published_wh",
    "next_interval_seq",
    "next_event_seq",
    "saved_ns",
)
_COUNTER_COLUMNS = (
    "edges",
    "wh_per_edge",
    "level",
    "last_edge_ns",
    "glitches",
    "inferred",
    "duplicates",
    "skipped",
)
_PEAK_COLUMNS = ("id", "window_energy_wh", "window_s", "window_end_ns", "partial")


def _peak_columns(peak: Peak, batch: MeterBatch) -> dict[str, Any]:
    energy_wh = peak.demand_kw * batch.peak_window_s * 1000 / 3600
    return {
        "window_energy_wh": int(energy_wh),
        "window_s": batch.peak_window_s,
        "window_end_ns": peak.window_end_us * NS_PER_US,
        "partial": peak.partial,
    }


def event_row(meter_id: int | None, item: Event) -> EventRow:
    return EventRow(
        meter_id=meter_id,
        t_ns=item.t_ns,
        kind=str(item.kind),
        channel=item.channel,
        detail=item.detail,
        missed_wh=item.missed_wh,
    )


def read_columns(read: MeterRead) -> dict[str, Any]:
    """Return a read as the meter_reads row holds it (the peak as its window's energy)."""
    peak = read.peak
    window_wh = None
    if peak is not None:
        window_wh = peak.demand_kw * read.peak_window_s * 1000 / 3600
        assert window_wh.denominator == 1  # integer Wh over the window
    low, high = read.estimate_wh or (None, None)
    return {
        "period": read.period,
        "start_ns": read.start_ns,
        "t_ns": read.t_ns,
        "register_channel": read.register_channel,
        "register_wh": read.register_wh,
        "energy_wh": read.energy_wh,
        "edges": read.edges,
        "peak_window_energy_wh": None if window_wh is None else int(window_wh),
        "peak_window_s": read.peak_window_s,
        "peak_window_end_ns": None if peak is None else peak.window_end_us * NS_PER_US,
        "peak_partial": None if peak is None else peak.partial,
        "quality": read.quality,
        "gap_s": read.gap_s,
        "glitches": read.glitches,
        "inferred": read.inferred,
        "mismatches": read.mismatches,
        "estimate_low_wh": low,
        "estimate_high_wh": high,
        "estimate_from": read.estimate_from,
    }


def write_reads(
    session: Session,
    meter_id: int,
    meter: str,
    reads: Sequence[MeterRead],
    now_ns: int,
    *,
    outbox: bool,
) -> int:
    """Insert reads (and their outbox messages) in the caller's transaction; return the
    statement count. ``seq`` counts a meter's reads, 1, 2, ... (also the message's)."""
    if not reads:
        return 0
    last = session.scalar(
        select(func.max(MeterReadRow.seq)).where(MeterReadRow.meter_id == meter_id)
    )
    seq = int(last or 0)
    statements = 1
    for read in reads:
        seq += 1
        columns = read_columns(read)
        session.add(MeterReadRow(meter_id=meter_id, seq=seq, **columns))
        statements += 1
        if outbox:
            lcd = reconciliation_summary(last_lcd(session, meter_id, read.t_ns))
            payload = read_payload(meter, columns, seq, lcd)
            session.add(outbox_row(meter_id, "read", seq, payload, now_ns))
            statements += 2
    return statements
