"""The database schema: SQLAlchemy 2.x models. Times are integer ns since the epoch (UTC);
energy is integer edges and Wh, never floats. Alembic migrations in ``migrations/`` build it."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# The Alembic revision these models describe: kept in gateway/sinks/revision.py (bump it there).
from gateway.sinks.revision import SCHEMA_REVISION as SCHEMA_REVISION

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class MeterRow(Base):
    __tablename__ = "meters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    model: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(16))
    created_ns: Mapped[int] = mapped_column(BigInteger)


class CounterRow(Base):
    """One channel's counter: the integer truth, readable without the state blob."""

    __tablename__ = "channel_counters"

    meter_id: Mapped[int] = mapped_column(ForeignKey("meters.id"), primary_key=True)
    channel: Mapped[str] = mapped_column(String(4), primary_key=True)
    edges: Mapped[int] = mapped_column(BigInteger, default=0)
    wh_per_edge: Mapped[int] = mapped_column(Integer)
    level: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_edge_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    glitches: Mapped[int] = mapped_column(BigInteger, default=0)
    inferred: Mapped[int] = mapped_column(BigInteger, default=0)
    duplicates: Mapped[int] = mapped_column(BigInteger, default=0)
    skipped: Mapped[int] = mapped_column(BigInteger, default=0)


class MeterStateRow(Base):
    """Everything needed to resume a meter exactly: the core's and the source's state (JSON)."""

    __tablename__ = "meter_state"

    meter_id: Mapped[int] = mapped_column(ForeignKey("meters.id"), primary_key=True)
    core: Mapped[str] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(Text, nullable=True)
    register_wh: Mapped[int] = mapped_column(BigInteger)
    published_wh: Mapped[int] = mapped_column(BigInteger, default=0)
    next_interval_seq: Mapped[int] = mapped_column(BigInteger, default=1)
    next_event_seq: Mapped[int] = mapped_column(BigInteger, default=1)
    saved_ns: Mapped[int] = mapped_column(BigInteger)


class IntervalRow(Base):
    __tablename__ = "intervals"

    meter_id: Mapped[int] = mapped_column(ForeignKey("meters.id"), primary_key=True)
    start_ns: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    end_ns: Mapped[int] = mapped_column(BigInteger)
    energy_wh: Mapped[int] = mapped_column(BigInteger)
    edges: Mapped[int] = mapped_column(BigInteger)
    quality: Mapped[str] = mapped_column(String(16))
    flags: Mapped[str] = mapped_column(String(128), default="")
    # Seconds of the interval nobody watched (0: watched whole; the length: a gap), for an
    # estimate of what was not counted.
    unwatched_s: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class SubIntervalRow(Base):
    """A closed demand sub-interval (5 minutes by default)."""

    __tablename__ = "demand_subintervals"

    meter_id: Mapped[int] = mapped_column(ForeignKey("meters.id"), primary_key=True)
    start_ns: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    end_ns: Mapped[int] = mapped_column(BigInteger)
    energy_wh: Mapped[int] = mapped_column(BigInteger)
    complete: Mapped[bool] = mapped_column(Boolean)


class PeakRow(Base):
    """A peak demand: the current one has no ``reset_ns``; reset ones keep when they were reset."""

    __tablename__ = "demand_peaks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    meter_id: Mapped[int] = mapped_column(ForeignKey("meters.id"), index=True)
    window_energy_wh: Mapped[int] = mapped_column(BigInteger)
    window_s: Mapped[int] = mapped_column(Integer)
    window_end_ns: Mapped[int] = mapped_column(BigInteger)
    partial: Mapped[bool] = mapped_column(Boolean)
    reset_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class EventRow(Base):
    """An anomaly, a restart, a gap, a clock step, a peak reset."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_meter_time", "meter_id", "t_ns"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    meter_id: Mapped[int | None] = mapped_column(ForeignKey("meters.id"), nullable=True)
    t_ns: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(24))
    channel: Mapped[str | None] = mapped_column(String(4), nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="")
    missed_wh: Mapped[int] = mapped_column(BigInteger, default=0)


class LcdReadingRow(Base):
    """A reading taken off the meter's LCD, with the counted register at that moment."""

    __tablename__ = "lcd_readings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    meter_id: Mapped[int] = mapped_column(ForeignKey("meters.id"), index=True)
    t_ns: Mapped[int] = mapped_column(BigInteger)
    lcd_kwh: Mapped[int] = mapped_column(BigInteger)
    register_wh: Mapped[int] = mapped_column(BigInteger)


class OutboxRow(Base):
    """A message waiting for the broker's acknowledgement (QoS 1), in order per meter."""

    __tablename__ = "mqtt_outbox"
    __table_args__ = (UniqueConstraint("meter_id", "kind", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    meter_id: Mapped[int] = mapped_column(ForeignKey("meters.id"))
    kind: Mapped[str] = mapped_column(String(16))  # interval | event
    seq: Mapped[int] = mapped_column(BigInteger)
    payload: Mapped[str] = mapped_column(Text)
    created_ns: Mapped[int] = mapped_column(BigInteger)


class MeterReadRow(Base):
    """A scheduled billing read: the determinants of the period ending at ``t_ns``."""

    __tablename__ = "meter_reads"
    __table_args__ = (UniqueConstraint("meter_id", "t_ns"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    meter_id: Mapped[int] = mapped_column(ForeignKey("meters.id"))
    seq: Mapped[int] = mapped_column(BigInteger)  # 1, 2, ... per meter
    period: Mapped[str] = mapped_column(String(7))  # YYYY-MM, the month the period starts in
    start_ns: Mapped[int] = mapped_column(BigInteger)
    t_ns: Mapped[int] = mapped_column(BigInteger)
    register_channel: Mapped[str] = mapped_column(String(4))
    register_wh: Mapped[int] = mapped_column(BigInteger)
    energy_wh: Mapped[int] = mapped_column(BigInteger)
    edges: Mapped[int] = mapped_column(BigInteger)
    peak_window_energy_wh: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    peak_window_s: Mapped[int] = mapped_column(Integer)
    peak_window_end_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    peak_partial: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    quality: Mapped[str] = mapped_column(String(16))
    gap_s: Mapped[int] = mapped_column(BigInteger)
    glitches: Mapped[int] = mapped_column(BigInteger)
    inferred: Mapped[int] = mapped_column(BigInteger)
    mismatches: Mapped[int] = mapped_column(BigInteger)
    estimate_low_wh: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    estimate_high_wh: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    estimate_from: Mapped[str | None] = mapped_column(String(8), nullable=True)


class DatabaseIdentityRow(Base):
    """Who this database is, created once with it (migration 0004): one row.

    ``database_id`` goes into every published state; ``secret`` never leaves the database and
    signs those states, so a retained state is known to be this database's own (issue #17).
    """

    __tablename__ = "database_identity"

    database_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret: Mapped[str] = mapped_column(String(64))
    created_ns: Mapped[int] = mapped_column(BigInteger)
