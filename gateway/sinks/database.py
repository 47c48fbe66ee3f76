"""One database through SQLAlchemy: the engine, its migration check and its sessions.

The store (writes), the outbox (MQTT's queue) and the read-back queries (status, export) share
one :class:`Database`. SQLite is the default, in WAL mode with ``synchronous=NORMAL``: a commit is
atomic and survives a crash of the process; see docs/persistence.md for what a power cut can
lose. Any SQLAlchemy URL works (PostgreSQL is tested).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from gateway.errors import ConfigError
from gateway.sinks.failures import sink_errors
from gateway.sinks.redact import redact


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


class Database:
    """An open database, migrated to the current schema (``upgrade``) or checked to be at it."""

    def __init__(self, url: str, *, upgrade: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url)
        from gateway.sinks.migrate import check_database, upgrade_database

        try:
            if upgrade:
                upgrade_database(self.engine)
            else:
                check_database(self.engine)
        except BaseException:
            self.engine.dispose()
            raise

    @property
    def name(self) -> str:
        """The URL without its password, for messages."""
        return f"database {redact(self.url)}"

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in one transaction; any failure is a SinkError naming the database."""
        with sink_errors(self.name), self.session() as session, session.begin():
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for queries; any failure is a SinkError naming the database."""
        with sink_errors(self.name), self.session() as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()
