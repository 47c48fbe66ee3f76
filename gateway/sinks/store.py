"""The store: counters kept in a database through SQLAlchemy, committed in batches."""

from __future__ import annotations

import logging

from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from gateway.core.meter import MeterCore
from gateway.errors import SinkError
from gateway.sinks.schema import Base, CounterRow, MeterRow

logger = logging.getLogger(__name__)


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL mode and a busy timeout."""
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

    return engine


class Store:
    """Keep each meter's counters; ``save`` writes them all in one transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine = make_engine(url)
            Base.metadata.create_all(self.engine)
        except SQLAlchemyError as exc:
            raise SinkError(f"database {url}: {exc}") from exc

    def load(self, core: MeterCore, model: str, source: str) -> None:
        """Restore a meter's counters into ``core``; register the meter if it is new."""
        with Session(self.engine) as session, session.begin():
            meter = session.scalar(select(MeterRow).where(MeterRow.name == core.name))
            if meter is None:
                session.add(MeterRow(name=core.name, model=model, source=source))
                return
            for row in session.scalars(select(CounterRow).where(CounterRow.meter_id == meter.id)):
                core.totals[row.channel].edges = row.edges
                core.hygiene[row.channel].level = row.level

    def save(self, cores: list[MeterCore]) -> None:
        """Write every meter's counters in one transaction."""
        try:
            with Session(self.engine) as session, session.begin():
                for core in cores:
                    meter = session.scalar(select(MeterRow).where(MeterRow.name == core.name))
                    if meter is None:
                        raise SinkError(f"meter {core.name} is not registered")
                    for channel, totals in core.totals.items():
                        session.merge(
                            CounterRow(
                                meter_id=meter.id,
                                channel=channel,
                                edges=totals.edges,
                                level=core.hygiene[channel].level,
                                last_edge_ns=core.hygiene[channel].last_t_ns,
                            )
                        )
        except SQLAlchemyError as exc:
            raise SinkError(f"database {self.url}: {exc}") from exc

    def close(self) -> None:
        self.engine.dispose()
