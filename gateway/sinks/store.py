"""The store: everything the gateway knows, in one database through SQLAlchemy.

A meter's counters, its resume state, the intervals, demand sub-intervals, peaks and events
derived from the same edges, and the MQTT outbox entries for them are written in **one
transaction** per batch, so a crash loses at most the last batch and never leaves them
disagreeing. The service batches (by default at most one commit a second, to spare the SD card).

SQLite is the default, in WAL mode with ``synchronous=NORMAL``: a commit is atomic and survives a
crash of the process; a power cut may lose the last commits (never corrupt the file), and since the
counters and everything derived from them go together, the gateway resumes consistently from the
last commit that reached the disk. ``FULL`` would fsync every commit: safer by about a second of
data, at the cost of SD-card wear. Any SQLAlchemy URL works (PostgreSQL is tested).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import create_engine, delete, event, func, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from gateway.core.events import Event
from gateway.core.intervals import Interval
from gateway.errors import ConfigError, SinkError
from gateway.sinks.schema import (
    CounterRow,
    EventRow,
    IntervalRow,
    LcdReadingRow,
    MeterRow,
    MeterStateRow,
    OutboxRow,
    PeakRow,
    SubIntervalRow,
)
from meter_model.demand import Peak, SubInterval

logger = logging.getLogger(__name__)
NS_PER_US = 1_000


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL mode, NORMAL synchronous and a busy timeout."""
    try:
        engine = create_engine(url)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        # A URL that cannot be parsed, or names a driver that is not installed: bad input.
        raise ConfigError(f"database {redact(url)}: {exc}") from None
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    return engine


def redact(url: str) -> str:
    """Return a database URL without its password, fit for logs and messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is shown as the user wrote it, minus nothing secret
        return url.split("@")[-1]


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


@dataclass
class StoredMeter:
    """A meter as the store holds it."""

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


class Store:
    """The gateway's database."""

    def __init__(self, url: str, *, upgrade: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url)
        if upgrade:
            from gateway.sinks.migrate import upgrade_database

            upgrade_database(self.engine)
        else:
            from gateway.sinks.migrate import check_database

            check_database(self.engine)

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def _fail(self, exc: Exception) -> SinkError:
        text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return SinkError(f"database {redact(self.url)}: {text[0] if text else type(exc).__name__}")

    # -- meters ------------------------------------------------------------------------------

    def meter(self, name: str, model: str, source: str, now_ns: int) -> StoredMeter:
        """Return a meter's stored state, registering the meter if it is new."""
        try:
            with self._session() as session, session.begin():
                row = session.scalar(select(MeterRow).where(MeterRow.name == name))
                if row is None:
                    row = MeterRow(name=name, model=model, source=source, created_ns=now_ns)
                    session.add(row)
                    session.flush()
                return self._stored(session, row)
        except SQLAlchemyError as exc:
            raise self._fail(exc) from exc

    def find_meter(self, name: str) -> StoredMeter | None:
        with self._session() as session:
            row = session.scalar(select(MeterRow).where(MeterRow.name == name))
            return None if row is None else self._stored(session, row)

    def meters(self) -> list[StoredMeter]:
        with self._session() as session:
            rows = session.scalars(select(MeterRow).order_by(MeterRow.name)).all()
            return [self._stored(session, row) for row in rows]

    def _stored(self, session: Session, row: MeterRow) -> StoredMeter:
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

    # -- the batch ---------------------------------------------------------------------------

    def commit(self, batches: Iterable[MeterBatch], now_ns: int) -> None:
        """Write every meter's batch in one transaction."""
        try:
            with self._session() as session, session.begin():
                for batch in batches:
                    self._write(session, batch, now_ns)
        except SQLAlchemyError as exc:
            raise self._fail(exc) from exc

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

    # -- reading back ------------------------------------------------------------------------

    def intervals(
        self, meter: str | None = None, start_ns: int | None = None, end_ns: int | None = None
    ) -> list[tuple[str, IntervalRow]]:
        with self._session() as session:
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
            return [(name, row) for name, row in session.execute(query).all()]

    def events(self, meter_id: int, since_ns: int | None = None) -> list[EventRow]:
        with self._session() as session:
            query = select(EventRow).where(EventRow.meter_id == meter_id)
            if since_ns is not None:
                query = query.where(EventRow.t_ns >= since_ns)
            return list(session.scalars(query.order_by(EventRow.t_ns, EventRow.id)))

    def lcd_readings(self, meter_id: int) -> list[LcdReadingRow]:
        with self._session() as session:
            query = select(LcdReadingRow).where(LcdReadingRow.meter_id == meter_id)
            return list(session.scalars(query.order_by(LcdReadingRow.t_ns, LcdReadingRow.id)))

    def add_lcd_reading(self, meter_id: int, t_ns: int, lcd_kwh: int, register_wh: int) -> None:
        try:
            with self._session() as session, session.begin():
                session.add(
                    LcdReadingRow(
                        meter_id=meter_id, t_ns=t_ns, lcd_kwh=lcd_kwh, register_wh=register_wh
                    )
                )
        except SQLAlchemyError as exc:
            raise self._fail(exc) from exc

    def count(self, table: type[Any], meter_id: int | None = None) -> int:
        with self._session() as session:
            query = select(func.count()).select_from(table)
            if meter_id is not None:
                query = query.where(table.meter_id == meter_id)
            return int(session.scalar(query) or 0)

    # -- the outbox (used by the MQTT sink) --------------------------------------------------

    def outbox_head(self, limit: int = 100) -> list[tuple[OutboxRow, str]]:
        """Return the oldest waiting messages with their meter names, in order."""
        try:
            with self._session() as session:
                query = (
                    select(OutboxRow, MeterRow.name)
                    .join(MeterRow, MeterRow.id == OutboxRow.meter_id)
                    .order_by(OutboxRow.id)
                    .limit(limit)
                )
                return [(row, name) for row, name in session.execute(query).all()]
        except SQLAlchemyError as exc:
            raise self._fail(exc) from exc

    def outbox_done(self, ids: Sequence[int]) -> None:
        """Remove messages the broker acknowledged."""
        if not ids:
            return
        try:
            with self._session() as session, session.begin():
                session.execute(delete(OutboxRow).where(OutboxRow.id.in_(list(ids))))
        except SQLAlchemyError as exc:
            raise self._fail(exc) from exc

    def close(self) -> None:
        self.engine.dispose()


def outbox_row(
    meter_id: int, kind: str, seq: int, payload: dict[str, Any], now_ns: int
) -> OutboxRow:
    """Return a message for the MQTT outbox: ``seq`` counts per meter and kind, without gaps."""
    return OutboxRow(
        meter_id=meter_id, kind=kind, seq=seq, payload=json.dumps(payload), created_ns=now_ns
    )


def event_row(meter_id: int | None, item: Event) -> EventRow:
    return EventRow(
        meter_id=meter_id,
        t_ns=item.t_ns,
        kind=str(item.kind),
        channel=item.channel,
        detail=item.detail,
        missed_wh=item.missed_wh,
    )


def interval_payload(interval: Interval, seq: int) -> dict[str, Any]:
    """Return the MQTT payload of an interval (SPEC section 5)."""
    from gateway.timefmt import format_iso
    from meter_model.units import round_kw

    return {
        "meter": interval.meter,
        "start": format_iso(interval.start_ns),
        "end": format_iso(interval.end_ns),
        "energy_wh": interval.energy_wh,
        "edges": interval.edges,
        "demand_kw": float(round_kw(interval.demand_kw)),
        "quality": interval.quality,
        "seq": seq,
    }


def event_payload(meter: str, item: Event, seq: int) -> dict[str, Any]:
    """Return the MQTT payload of an event."""
    from gateway.timefmt import format_iso

    return {
        "meter": meter,
        "time": format_iso(item.t_ns),
        "kind": str(item.kind),
        "channel": item.channel,
        "detail": item.detail,
        "missed_wh": item.missed_wh,
        "seq": seq,
    }
