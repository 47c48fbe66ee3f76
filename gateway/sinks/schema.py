"""The database schema: SQLAlchemy 2.x models. Integer edge counts are the stored truth."""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class MeterRow(Base):
    __tablename__ = "meters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    model: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(16))


class CounterRow(Base):
    """One channel's counter: edges, last level and last edge time (UTC ns)."""

    __tablename__ = "channel_counters"

    meter_id: Mapped[int] = mapped_column(ForeignKey("meters.id"), primary_key=True)
    channel: Mapped[str] = mapped_column(String(4), primary_key=True)
    edges: Mapped[int] = mapped_column(BigInteger, default=0)
    level: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_edge_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
