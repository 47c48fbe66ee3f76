"""One database through SQLAlchemy: the engine, its migration check, its sessions, its lock.

The store (writes), the outbox (MQTT's queue) and the read-back queries (status, export) share
one :class:`Database`. SQLite is the default, in WAL mode with ``synchronous=FULL``: every commit
is on the card before anything derived from it is published, so a power cut can never make a
published total go backwards (docs/persistence.md says what a power cut can lose, measured).
Commits are few (see :mod:`gateway.daemon.service`), so syncing each costs little. Any
SQLAlchemy URL works (PostgreSQL is tested).

One gateway writes to a database at a time: :meth:`Database.lock` takes a lock the database's
other users can see (a ``.lock`` file beside an SQLite file, an advisory lock on PostgreSQL), and
a second daemon or import is refused with a message naming the one that holds it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.pool import QueuePool

from gateway.errors import ConfigError, SinkError
from gateway.sinks.failures import sink_errors
from gateway.sinks.redact import redact
from gateway.sinks.snapshot import shm_in_use

# One engine per SQLite file in a process: its one connection holds the file exclusively, so a
# second engine (the web view's, beside the daemon's) would find it locked.
_SQLITE_ENGINES: dict[str, Engine] = {}
_SQLITE_ENGINES_LOCK = threading.Lock()


def holds_open(path: str) -> bool:
    """Return whether this process has the SQLite file at ``path`` open (and so holds it)."""
    engine = _SQLITE_ENGINES.get(os.path.realpath(path))
    if engine is None or not isinstance(engine.pool, QueuePool):
        return False
    return engine.pool.checkedin() + engine.pool.checkedout() > 0


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets small pages, WAL mode with its index in memory (exclusive
    locking, one connection, one engine per file in a process), FULL synchronous, a busy
    timeout."""
    try:
        parsed = make_url(url)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise ConfigError(f"database {redact(url)}: {exc}") from None
    path = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if not path or path == ":memory:":
        return _make_engine(url)
    with _SQLITE_ENGINES_LOCK:
        key = os.path.realpath(path)
        engine = _SQLITE_ENGINES.get(key)
        if engine is None:
            engine = _SQLITE_ENGINES[key] = _make_engine(url)
        return engine


def _make_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
        options: dict[str, Any] = {}
        if parsed.get_backend_name() == "sqlite":
            # Exclusive locking (below) holds the file while a connection is open, so a second
            # connection of this process would find it locked: one connection, taken in turn.
            options = {"poolclass": QueuePool, "pool_size": 1, "max_overflow": 0}
        engine = create_engine(parsed, **options)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        # A URL that cannot be parsed, or names a driver that is not installed: bad input.
        raise ConfigError(f"database {redact(url)}: {exc}") from None
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            path = engine.url.database
            if path and path != ":memory:" and shm_in_use(path):
                raise SinkError(
                    f"database {path}: another program has it open (its -shm file is in use); "
                    "amr-gateway holds the file alone: close that program"
                )
            cursor = dbapi_connection.cursor()
            # Small pages for a small database: a commit appends a few 1 KiB WAL frames instead
            # of 4 KiB ones (a quarter of the bytes on the card; benchmarks/bench_durability.py).
            # It takes effect when the file is created; an existing file keeps its page size.
            cursor.execute("PRAGMA page_size=1024")
            # Exclusive locking before WAL mode: the WAL index lives in this process's memory,
            # never in a -shm file. That file is mapped, not synced, so the kernel writes back
            # its pages every 30 s that a commit touched them: three 4 KiB pages for each
            # commit, more than the commit's own WAL frames (docs/persistence.md, measured).
            # The price: no other process can open the file while this connection is open; the
            # commands that only read then read a copy (gateway.sinks.snapshot).
            cursor.execute("PRAGMA locking_mode=EXCLUSIVE")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    return engine


class Database:
    """An open database, migrated to the current schema (``upgrade``) or checked to be at it."""

    def __init__(self, url: str, *, upgrade: bool = True, lock: str | None = None) -> None:
        """Open the database; ``lock`` (who asks: the command) takes it before any migration."""
        self.url = url
        self.engine = make_engine(url)
        self._lock: _FileLock | _AdvisoryLock | None = None
        from gateway.sinks.migrate import check_database, upgrade_database

        try:
            if lock is not None:
                self.lock(lock)
            if upgrade:
                upgrade_database(self.engine)
            else:
                check_database(self.engine)
        except BaseException:
            self.close()
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

    def lock(self, holder: str) -> None:
        """Take the database for this process; raise ConfigError naming whoever holds it.

        ``holder`` says who takes it (the command), for the message a second one gets.
        """
        if self._lock is not None:
            return
        if self.engine.dialect.name == "sqlite":
            path = self.engine.url.database
            if path and path != ":memory:":
                self._lock = _FileLock(path + ".lock", self.name, holder)
        elif self.engine.dialect.name == "postgresql":
            self._lock = _AdvisoryLock(self, holder)

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        self.engine.dispose()


class _FileLock:
    """An exclusive ``flock`` on a file beside the database, which says who holds it."""

    def __init__(self, path: str, what: str, holder: str) -> None:
        import fcntl

        self.path = path
        if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise ConfigError(f"{what}: no such directory; does its directory exist?")
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SinkError(f"{what}: cannot create its lock file {path}: {exc.strerror}") from exc
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(self._fd, 512, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(self._fd)
            raise ConfigError(
                f"{what} is in use by another amr-gateway ({owner}); stop it first"
            ) from None
        os.ftruncate(self._fd, 0)
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        os.pwrite(self._fd, f"{holder}, pid {os.getpid()}, since {started}\n".encode(), 0)

    def release(self) -> None:
        os.close(self._fd)  # closing drops the flock; the file stays, harmless


class _AdvisoryLock:
    """A PostgreSQL session advisory lock, held on a connection of its own."""

    KEY = 0x616D72_67770000  # "amr" "gw": one key per database (advisory locks are per database)

    def __init__(self, database: Database, holder: str) -> None:
        with sink_errors(database.name):
            self._connection = database.engine.connect()
            taken = self._connection.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": self.KEY}
            ).scalar()
            if taken:
                self._connection.execute(
                    text("SELECT set_config('application_name', :name, false)"),
                    {"name": f"amr-gateway {holder} pid {os.getpid()}"[:63]},
                )
                self._connection.commit()
                return
            owner = self._connection.execute(
                text(
                    "SELECT a.application_name, a.client_addr, a.pid FROM pg_locks l "
                    "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
                    "AND l.granted AND ((l.classid::bigint << 32) | l.objid::bigint) = :key"
                ),
                {"key": self.KEY},
            ).first()
            self._connection.close()
        who = f"{owner[0] or 'unknown'} from {owner[1] or 'local'}" if owner else "unknown"
        raise ConfigError(
            f"{database.name} is in use by another amr-gateway ({who}); stop it first"
        )

    def release(self) -> None:
        with contextlib.suppress(Exception):  # a lost connection has dropped the lock already
            self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.KEY})
        self._connection.invalidate()  # really closed, not back to the pool with the session
        self._connection.close()
