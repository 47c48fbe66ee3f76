"""The fleet database: SQLAlchemy models with their own metadata (migrations/fleet/ builds them).

Times are integer ns since the epoch (UTC), energy integer Wh. A meter is ``(gateway, meter)``,
numbered once in ``fleet_meters`` so that the big table repeats 4 bytes, not two names. Keys:

- ``fleet_intervals``: (meter, interval start): a message delivered twice lands once, and a
  later version of an interval (a higher ``seq``) replaces an earlier one. On PostgreSQL it is
  partitioned by month of ``start_ns`` (RANGE); :mod:`gateway.fleet.partitions` makes them.
- ``fleet_reads``: (meter, seq); ``fleet_events``: (meter, seq) for the gateways' events.
- ``fleet_seqs``: the highest ``seq`` seen per meter and kind; ``fleet_gaps``: the ranges missing
  below it, open until the messages arrive.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Index, Integer, MetaData, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# The Alembic revision these models describe, and the version table: kept in
# gateway/fleet/revision.py (bump it there).
from gateway.fleet.revision import FLEET_REVISION as FLEET_REVISION
from gateway.fleet.revision import VERSION_TABLE as VERSION_TABLE

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}


class FleetBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class FleetGatewayRow(FleetBase):
    """A gateway's last will and testament: ``online`` / ``offline`` and since when."""

    __tablename__ = "fleet_gateways"

    gateway: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    since_ns: Mapped[int] = mapped_column(BigInteger)


class FleetMeterRow(FleetBase):
    __tablename__ = "fleet_meters"
    __table_args__ = (UniqueConstraint("gateway", "meter"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    gateway: Mapped[str] = mapped_column(String(64))
    meter: Mapped[str] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(32), nullable=True)
    state: Mapped[str | None] = mapped_column(Text, nullable=True)  # the retained state (JSON)
    energy_wh: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # from the state
    first_ns: Mapped[int] = mapped_column(BigInteger)  # when the collector first heard of it
    last_ns: Mapped[int] = mapped_column(BigInteger)  # its last interval, read or event arrived
    last_interval_end_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    interval_s: Mapped[int | None] = mapped_column(Integer, nullable=True)


class FleetIntervalRow(FleetBase):
    """A closed interval; ``received_ns`` is when the collector stored it."""

    __tablename__ = "fleet_intervals"
    __table_args__ = (
        Index("ix_fleet_intervals_start", "start_ns", postgresql_using="brin"),
        {"postgresql_partition_by": "RANGE (start_ns)"},
    )

    meter_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    start_ns: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    end_ns: Mapped[int] = mapped_column(BigInteger)
    energy_wh: Mapped[int] = mapped_column(BigInteger)
    edges: Mapped[int] = mapped_column(BigInteger)
    seq: Mapped[int] = mapped_column(BigInteger)
    received_ns: Mapped[int] = mapped_column(BigInteger)
    quality: Mapped[str] = mapped_column(String(16))


class FleetReadRow(FleetBase):
    """A billing read as the gateway published it (``payload``: its JSON, as ``bill`` prints)."""

    __tablename__ = "fleet_reads"
    __table_args__ = (Index("ix_fleet_reads_period", "period"),)

    meter_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    period: Mapped[str] = mapped_column(String(7))
    t_ns: Mapped[int] = mapped_column(BigInteger)
    payload: Mapped[str] = mapped_column(Text)


class FleetEventRow(FleetBase):
    """An event: a gateway's (with its ``seq``), or the collector's own (a gap; ``seq`` null)."""

    __tablename__ = "fleet_events"
    __table_args__ = (
        UniqueConstraint("meter_id", "seq"),
        Index("ix_fleet_events_meter_time", "meter_id", "t_ns"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    meter_id: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    t_ns: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(24))
    origin: Mapped[str] = mapped_column(String(16))  # gateway | collector
    payload: Mapped[str] = mapped_column(Text)


class FleetSeqRow(FleetBase):
    """The highest ``seq`` seen of a meter's messages of one kind (interval, read, event)."""

    __tablename__ = "fleet_seqs"

    meter_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    high_seq: Mapped[int] = mapped_column(BigInteger)


class FleetGapRow(FleetBase):
    """Messages missing: ``first_seq``..``last_seq`` of one kind, open until they all arrive."""

    __tablename__ = "fleet_gaps"
    __table_args__ = (Index("ix_fleet_gaps_meter_id", "meter_id", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    meter_id: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    first_seq: Mapped[int] = mapped_column(BigInteger)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    opened_ns: Mapped[int] = mapped_column(BigInteger)
    closed_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    reported: Mapped[bool] = mapped_column(Boolean, default=False)
    requested_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # re-send asked
