"""One database through SQLAlchemy: the engine, its migration check, its sessions, its lock.

The store (writes), the outbox (MQTT's queue) and the read-back queries (status, export) share
one :class:`Database`. SQLite is the default, in WAL mode with ``synchronous=FULL``: every commit
is on the card before anything derived from it is published, so a power cut can never make a
published total go backwards (docs/persistence.md says what a power cut can lose, measured).
Commits are few (see :mod:`gateway.daemon.service`), so syncing each costs little. Any
SQLAlchemy URL works (PostgreSQL is tested).

One gateway writes to a database at a time: :meth:`Database.lock` takes a lock the database's
other users can see (an ``flock`` on the SQLite file itself, which follows the file through any
symbolic or hard link; an advisory lock on PostgreSQL), and a second daemon or import is refused
with a message naming the one that holds it. A PostgreSQL lock is lost with its connection (a
server restart): :meth:`Database.guard`, in each commit, notices and takes it again, or stops
the commit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping
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


def sqlite_path(url: str) -> str | None:
    """Return the file an SQLite URL names; None for another database, or one in memory (an
    unparsable URL too: opening it says what is wrong)."""
    try:
        parsed = make_url(url)
    except (SQLAlchemyError, ValueError):
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return parsed.database


def holds_open(path: str) -> bool:
    """Return whether this process has the SQLite file at ``path`` open (and so holds it)."""
    engine = _SQLITE_ENGINES.get(os.path.realpath(path))
    if engine is None or not isinstance(engine.pool, QueuePool):
        return False
    return engine.pool.checkedin() + engine.pool.checkedout() > 0


logger = logging.getLogger(__name__)


def make_engine(url: str, *, exclusive: bool = True) -> Engine:
    """Create an engine; SQLite gets small pages, WAL mode with its index in memory (exclusive
    locking, one connection, one engine per file in a process), FULL synchronous, a busy
    timeout.

    ``exclusive=False`` (the fleet collector's database, on a server's disk, read by ``status``
    and ``bill`` while the collector writes) keeps SQLite's shared mode: several connections,
    its WAL index in the ``-shm`` file.
    """
    try:
        parsed = make_url(url)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise ConfigError(f"database {redact(url)}: {exc}") from None
    path = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if not path or path == ":memory:" or not exclusive:
        return _make_engine(url, exclusive=exclusive)
    with _SQLITE_ENGINES_LOCK:
        key = os.path.realpath(path)
        engine = _SQLITE_ENGINES.get(key)
        if engine is None:
            engine = _SQLITE_ENGINES[key] = _make_engine(url)
        return engine


def _make_engine(url: str, *, exclusive: bool = True) -> Engine:
    try:
        parsed = make_url(url)
        options: dict[str, Any] = {}
        if parsed.get_backend_name() == "sqlite" and exclusive:
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
            if exclusive and path and path != ":memory:" and shm_in_use(path):
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
            if exclusive:
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
        from gateway.sinks.migrate import check_database, check_server, upgrade_database

        try:
            check_server(self.engine)  # a missing PostgreSQL database: say how to create it
            if lock is not None:
                self.lock(lock)
            # A file this process already has open (the daemon's, read by its web view) was
            # checked when it was opened; reading it again through a new descriptor would drop
            # the POSIX locks SQLite holds on it.
            if self.engine.dialect.name == "sqlite" and not (
                lock is None and holds_open(self.engine.url.database or "")
            ):
                self._check_file(locked=lock is not None)
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

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one plain query (``:name`` parameters); its rows as tuples (see
        :mod:`gateway.sinks.readback`)."""
        with self.reading() as session:
            return [tuple(row) for row in session.execute(text(sql), dict(params or {}))]

    def lock(self, holder: str) -> None:
        """Take the database for this process; raise ConfigError naming whoever holds it.

        ``holder`` says who takes it (the command), for the message a second one gets.
        """
        if self._lock is not None:
            return
        if self.engine.dialect.name == "sqlite":
            path = self.engine.url.database
            if path and path != ":memory:":
                self._lock = _FileLock(path, self.name, holder)
        elif self.engine.dialect.name == "postgresql":
            self._lock = _AdvisoryLock(self, holder)

    def _check_file(self, *, locked: bool) -> None:
        """Refuse a damaged SQLite file (:mod:`gateway.sinks.integrity`) before using it.

        Its write-ahead log is judged only by a process that holds the lock, or when no
        process does: a running daemon's log is live.
        """
        from gateway.sinks.integrity import check_sqlite_file

        path = self.engine.url.database or ""
        wal, fd = locked, None
        if isinstance(self._lock, _FileLock):
            fd = self._lock.fd
        elif not locked:
            with contextlib.suppress(OSError):
                info = os.stat(path)
                wal = _flock_holder(info) is None
                fd = _LOCKED.get((info.st_dev, info.st_ino), (None, None))[1]  # ours: open
        check_sqlite_file(self.engine, self.name, wal=wal, fd=fd)

    def guard(self, session: Session) -> bool:
        """Make sure this process still holds its lock, in a commit's transaction.

        A PostgreSQL advisory lock goes with its connection (a server restart drops it), and
        a second daemon could then take the database: take it again before writing, saying so
        once, or raise SinkError (the commit fails, and is retried) while another holds it.
        Return True when the lock was taken again: what the caller remembers of the database
        may be stale.
        """
        lock = self._lock
        if not isinstance(lock, _AdvisoryLock) or lock.held(session):
            return False
        holder = lock.holder
        lock.release()
        self._lock = None
        try:
            self._lock = _AdvisoryLock(self, holder)
        except ConfigError as exc:
            raise SinkError(
                f"{self.name} lost its lock (its connection was dropped): {exc}; "
                "not committing while the other one holds it"
            ) from None
        logger.warning(
            "%s: the lock was lost with its connection (a server restart?); taken again",
            self.name,
        )
        return True

    def close(self) -> None:
        # The engine first: closing the lock's descriptor of an SQLite file would drop the
        # POSIX locks SQLite's own connections hold on it (see _FileLock).
        self.engine.dispose()
        if self._lock is not None:
            self._lock.release()
            self._lock = None


# The SQLite files this process has locked, by (device, inode): who and the descriptor. A second
# lock of one is refused without opening it, and the file is read through that descriptor
# (closing any other would drop SQLite's POSIX locks on the file).
_LOCKED: dict[tuple[int, int], tuple[str, int]] = {}


class _FileLock:
    """An exclusive ``flock`` on the SQLite file itself: per inode, so it follows the file.

    A lock file beside the URL's path let a second daemon in through a symbolic or a hard link.
    ``flock`` and the POSIX (``fcntl``) locks SQLite takes are separate on Linux, but closing
    any descriptor of a file drops every POSIX lock the process holds on it: the descriptor is
    kept open as long as the lock, closed only after the engine (see :meth:`Database.close`),
    and a file this process has locked already is refused without being opened.
    """

    def __init__(self, path: str, what: str, holder: str) -> None:
        import fcntl

        if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise ConfigError(f"{what}: no such directory; does its directory exist?")
        with contextlib.suppress(OSError):
            info = os.stat(path)
            if (info.st_dev, info.st_ino) in _LOCKED:
                held = _LOCKED[(info.st_dev, info.st_ino)][0]
                raise ConfigError(
                    f"{what} is in use by another amr-gateway (pid {os.getpid()}: {held}); "
                    "stop it first"
                )
        _forget_lock_file(path, what)
        try:
            # An empty file is what SQLite creates for a new database: creating it is the same.
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise SinkError(f"{what}: cannot open it to lock it: {exc.strerror}") from exc
        info = os.fstat(self.fd)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)  # this process has no SQLite connection on it (_LOCKED)
            raise ConfigError(
                f"{what} is in use by another amr-gateway ({_describe_pid(_flock_holder(info))});"
                " stop it first"
            ) from None
        self._key = (info.st_dev, info.st_ino)
        _LOCKED[self._key] = (holder, self.fd)
        if info.st_nlink > 1:
            # The lock holds for every name, but SQLite finds its write-ahead log by name: a
            # log left by a crash under one name is not seen when the file is opened by another.
            logger.warning(
                "%s has %d names (hard links); SQLite keeps its write-ahead log by name, so "
                "always open it by the same one (a symbolic link is fine)",
                what,
                info.st_nlink,
            )

    def release(self) -> None:
        _LOCKED.pop(self._key, None)
        os.close(self.fd)  # closing drops the flock


def _forget_lock_file(path: str, what: str) -> None:
    """Remove the ``.lock`` file an older version kept beside the database, unless held."""
    import fcntl

    try:
        fd = os.open(path + ".lock", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "unknown"
        raise ConfigError(
            f"{what} is in use by an older amr-gateway ({owner}); stop it first"
        ) from None
    else:
        with contextlib.suppress(OSError):
            os.unlink(path + ".lock")
    finally:
        os.close(fd)


def _flock_holder(info: os.stat_result) -> str | None:
    """Return the pid of a process holding an ``flock`` on a file (Linux's /proc/locks)."""
    device = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" (a waiter's line has "->" after "1:").
    # The device is the file system's, which stat may not give (btrfs): the inode decides then.
    found = [
        (fields[5], fields[4])
        for fields in (line.split() for line in lines)
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5].endswith(f":{info.st_ino}")
    ]
    if not found:
        return None
    return min(found, key=lambda entry: entry[0] != device)[1]  # the exact device first


def _describe_pid(pid: str | None) -> str:
    """``pid 1234: gateway run --config ...``, for a message."""
    if pid is None:
        return "unknown"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            words = handle.read().decode("utf-8", "replace").split("\0")
    except OSError:
        return f"pid {pid}"
    words = [w for w in words if w]
    if "-m" in words:  # python -m gateway run ...
        words = words[words.index("-m") + 1 :]
    elif words:
        words[0] = os.path.basename(words[0])
    return f"pid {pid}: {' '.join(words)[:200]}"


class _AdvisoryLock:
    """A PostgreSQL session advisory lock, held on a connection of its own."""

    KEY = 0x616D72_67770000  # "amr" "gw": one key per database (advisory locks are per database)

    def __init__(self, database: Database, holder: str) -> None:
        self.holder = holder
        with sink_errors(database.name):
            self._connection = database.engine.connect()
            taken = self._connection.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": self.KEY}
            ).scalar()
            if taken:
                self.pid = self._connection.execute(
                    text("SELECT set_config('application_name', :name, false), pg_backend_pid()"),
                    {"name": f"amr-gateway {holder} pid {os.getpid()}"[:63]},
                ).one()[1]
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

    def held(self, session: Session) -> bool:
        """Whether the lock's connection still holds it, asked on another connection."""
        row = session.execute(
            text(
                "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = :pid "
                "AND ((classid::bigint << 32) | objid::bigint) = :key"
            ),
            {"pid": self.pid, "key": self.KEY},
        ).first()
        return row is not None

    def release(self) -> None:
        with contextlib.suppress(Exception):  # a lost connection has dropped the lock already
            self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.KEY})
        with contextlib.suppress(Exception):
            self._connection.invalidate()  # really closed, not back to the pool with the session
            self._connection.close()
