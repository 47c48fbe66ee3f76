"""The store: what the gateway writes to its database, one transaction per commit.

A meter's counters, its resume state, the intervals, demand sub-intervals, peaks and events
derived from the same edges, and the MQTT outbox entries for them are written in **one
transaction** per commit (:class:`MeterBatch`, built by :mod:`gateway.checkpoint`), so a crash
loses at most the last commit and never leaves them disagreeing. Reading back is
:mod:`gateway.sinks.readback`'s job, the outbox's delivery :mod:`gateway.sinks.outbox`'s.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from gateway.core.events import Event
from gateway.core.intervals import Interval
from gateway.sinks.database import Database
from gateway.sinks.outbox import outbox_row
from gateway.sinks.payloads import event_payload, interval_payload
from gateway.sinks.readback import StoredMeter, load_meter
from gateway.sinks.schema import (
    CounterRow,
    EventRow,
    IntervalRow,
    LcdReadingRow,
    MeterRow,
    MeterStateRow,
    PeakRow,
    SubIntervalRow,
)
from meter_model.demand import Peak, SubInterval

logger = logging.getLogger(__name__)
NS_PER_US = 1_000


@dataclass
class MeterBatch:
    """What one meter produced since the last commit."""

    name: str
    model: str
    source: str
    core_state: dict[str, Any]
    source_state: dict[str, Any] | None
    counters: dict[str, dict[str, int | None]]
    register_wh: int
    intervals: Sequence[Interval] = ()
    subintervals: Sequence[SubInterval] = ()
    events: Sequence[Event] = ()
    peak: Peak | None = None
    peak_window_s: int = 900
    resets: Sequence[tuple[Peak, int]] = ()  # (peak cleared, when)
    outbox: bool = True  # queue intervals and events for MQTT
    published_wh: int = 0  # the highest total published so far


class Store:
    """Writes to the gateway's database."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def meter(self, name: str, model: str, source: str, now_ns: int) -> StoredMeter:
        """Return a meter's stored state, registering the meter if it is new."""
        with self.database.transaction() as session:
            row = session.scalar(select(MeterRow).where(MeterRow.name == name))
            if row is None:
                row = MeterRow(name=name, model=model, source=source, created_ns=now_ns)
                session.add(row)
                session.flush()
            return load_meter(session, row)

    # -- the batch ---------------------------------------------------------------------------

    def commit(self, batches: Iterable[MeterBatch], now_ns: int) -> None:
        """Write every meter's batch in one transaction."""
        with self.database.transaction() as session:
            for batch in batches:
                self._write(session, batch, now_ns)

    def _write(self, session: Session, batch: MeterBatch, now_ns: int) -> None:
        meter = session.scalar(select(MeterRow).where(MeterRow.name == batch.name))
        if meter is None:
            meter = MeterRow(
                name=batch.name, model=batch.model, source=batch.source, created_ns=now_ns
            )
            session.add(meter)
            session.flush()
        state = session.get(MeterStateRow, meter.id)
        if state is None:
            state = MeterStateRow(
                meter_id=meter.id,
                core="{}",
                register_wh=0,
                published_wh=0,
                next_interval_seq=1,
                next_event_seq=1,
                saved_ns=now_ns,
            )
            session.add(state)
        state.core = json.dumps(batch.core_state, separators=(",", ":"))
        state.source = (
            json.dumps(batch.source_state, separators=(",", ":"))
            if batch.source_state is not None
            else None
        )
        state.register_wh = batch.register_wh
        state.published_wh = max(state.published_wh or 0, batch.published_wh)
        state.saved_ns = now_ns
        for channel, values in batch.counters.items():
            session.merge(CounterRow(meter_id=meter.id, channel=channel, **values))
        for interval in batch.intervals:
            session.merge(
                IntervalRow(
                    meter_id=meter.id,
                    start_ns=interval.start_ns,
                    end_ns=interval.end_ns,
                    energy_wh=interval.energy_wh,
                    edges=interval.edges,
                    quality=interval.quality,
                    flags=",".join(interval.flags),
                )
            )
            if batch.outbox:
                seq = state.next_interval_seq
                state.next_interval_seq += 1
                session.add(
                    outbox_row(meter.id, "interval", seq, interval_payload(interval, seq), now_ns)
                )
        if batch.subintervals:
            session.execute(
                insert(SubIntervalRow),
                [
                    {
                        "meter_id": meter.id,
                        "start_ns": sub.start_us * NS_PER_US,
                        "end_ns": sub.end_us * NS_PER_US,
                        "energy_wh": sub.energy,
                        "complete": sub.complete,
                    }
                    for sub in batch.subintervals
                ],
            )
        for item in batch.events:
            session.add(event_row(meter.id, item))
            if batch.outbox:
                seq = state.next_event_seq
                state.next_event_seq += 1
                session.add(
                    outbox_row(meter.id, "event", seq, event_payload(batch.name, item, seq), now_ns)
                )
        for cleared, when_ns in batch.resets:
            session.add(self._peak_row(meter.id, cleared, batch.peak_window_s, when_ns))
        session.execute(
            delete(PeakRow).where(PeakRow.meter_id == meter.id, PeakRow.reset_ns.is_(None))
        )
        if batch.peak is not None:
            session.add(self._peak_row(meter.id, batch.peak, batch.peak_window_s, None))

    @staticmethod
    def _peak_row(meter_id: int, peak: Peak, window_s: int, reset_ns: int | None) -> PeakRow:
        energy_wh = peak.demand_kw * window_s * 1000 / 3600
        return PeakRow(
            meter_id=meter_id,
            window_energy_wh=int(energy_wh),
            window_s=window_s,
            window_end_ns=peak.window_end_us * NS_PER_US,
            partial=peak.partial,
            reset_ns=reset_ns,
        )

    def add_lcd_reading(self, meter_id: int, t_ns: int, lcd_kwh: int, register_wh: int) -> None:
        with self.database.transaction() as session:
            row = LcdReadingRow(
                meter_id=meter_id, t_ns=t_ns, lcd_kwh=lcd_kwh, register_wh=register_wh
            )
            session.add(row)


def event_row(meter_id: int | None, item: Event) -> EventRow:
    return EventRow(
        meter_id=meter_id,
        t_ns=item.t_ns,
        kind=str(item.kind),
        channel=item.channel,
        detail=item.detail,
        missed_wh=item.missed_wh,
    )
