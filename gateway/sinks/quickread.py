"""Read an SQLite database with the stdlib's ``sqlite3``, read-only: ``status`` in a glance.

``status`` through SQLAlchemy and Alembic spends almost all its time importing them (issue
21); the read-back queries (:mod:`gateway.sinks.readback`) are plain SQL, so on an SQLite
file they run here instead. Nothing here imports SQLAlchemy, and nothing here is written: no
checkpoint, no ``-wal`` or ``-shm`` file beside the database on the card.

This path only takes the ordinary case, and hands every other to the full one
(:class:`~gateway.sinks.database.Database`), which says what is wrong exactly as it always
has: :func:`open_quick` returns None when the file is missing, empty, not SQLite, damaged
(its write-ahead log or ``PRAGMA quick_check``), foreign, or not at
:data:`~gateway.sinks.revision.SCHEMA_REVISION`, or has a write-ahead log to recover.

- A file a running gateway holds (or another program has open in shared mode) is read
  through a copy, as the full path does (:mod:`gateway.sinks.snapshot`), its log checked
  (:func:`~gateway.sinks.integrity.wal_damage`) before SQLite reads it.
- A file nobody holds, without a log, is opened ``immutable``: SQLite then takes no lock and
  creates no file. That is safe only while nobody writes it, so the file's marks (identity,
  size, time, its log's header) are taken before and compared after: a reader whose file
  moved meanwhile (:meth:`QuickReader.close` answers False) reads again the full way.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

from gateway.errors import SinkError, first_line
from gateway.sinks.integrity import is_sqlite, wal_damage
from gateway.sinks.revision import SCHEMA_REVISION
from gateway.sinks.snapshot import QUIET_NS, copy_database, held_elsewhere, marks, shm_in_use

__all__ = ["QuickReader", "open_quick", "sqlite_path"]


def sqlite_path(url: str) -> str | None:
    """Return the file of a plain ``sqlite:///PATH`` URL; None for any other URL (a server,
    ``:memory:``, query options), which the full path reads."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///")
    if not path or path == ":memory:" or "?" in path or path.startswith("file:"):
        return None
    return path


class QuickReader:
    """A read-only ``sqlite3`` connection that answers ``rows(sql, params)`` (a RowSource)."""

    def __init__(self, connection: sqlite3.Connection, name: str, watch: str | None) -> None:
        self.connection = connection
        self.name = name  # "database URL", for messages
        self._watch = watch  # the file read in place (immutable): its marks must not move
        self._before = marks(watch) if watch is not None else None
        self._copy: str | None = None  # the directory of a copy, removed at close

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        try:
            return self.connection.execute(sql, dict(params or {})).fetchall()
        except sqlite3.Error as exc:
            raise SinkError(f"{self.name}: {first_line(exc)}") from exc

    def steady(self) -> bool:
        """Whether the file read in place is still as it was when it was opened."""
        return self._watch is None or marks(self._watch) == self._before

    def close(self) -> bool:
        """Close; return whether what was read holds (the file did not move meanwhile)."""
        self.connection.close()
        if self._copy is not None:
            shutil.rmtree(self._copy, ignore_errors=True)
            self._copy = None
        return self.steady()


def open_quick(path: str, name: str) -> QuickReader | None:
    """Open the SQLite file at ``path`` read-only; None: the full path must open it."""
    if not os.path.isfile(path):
        return None
    database = sys.modules.get("gateway.sinks.database")
    if database is not None and database.holds_open(path):
        return None  # this process's own engine holds it (the daemon's web view)
    if held_elsewhere(path) or shm_in_use(path):
        copy = copy_database(path)  # its failure is the full path's too: SinkError
        reader = _open_copy(copy, name)
        if reader is None:
            shutil.rmtree(os.path.dirname(copy), ignore_errors=True)
        return reader
    before = _quiet_marks(path)
    if before is None or before[1]:
        return None  # a log to recover (a gateway that stopped without closing), or writes
    if os.path.exists(path + "-wal") and os.path.getsize(path + "-wal") > 0:
        return None
    if not is_sqlite(path):
        return None
    try:
        connection = sqlite3.connect(_uri(path, immutable=True), uri=True)
    except sqlite3.Error:
        return None
    reader = QuickReader(connection, name, path)
    if reader._before != before or not _sound(connection):
        reader.close()
        return None
    return reader


def _quiet_marks(path: str) -> tuple[tuple[int, int, int], bytes] | None:
    """The file's marks once its last write is QUIET_NS old (so that a write during the read
    moves its time); None: it kept being written."""
    for _ in range(5):
        found = marks(path)
        if found is None:
            return None
        wait_ns = QUIET_NS - (time.time_ns() - found[0][2])
        if wait_ns <= 0:
            return found
        time.sleep(wait_ns / 1e9)
    return None


def _open_copy(copy: str, name: str) -> QuickReader | None:
    if not is_sqlite(copy) or wal_damage(copy) is not None:
        return None
    try:
        # The copy is this process's own, in a directory of its own: SQLite may keep its
        # WAL index beside it, and recover its log, as with any file.
        connection = sqlite3.connect(_uri(copy, immutable=False), uri=True)
    except sqlite3.Error:
        return None
    reader = QuickReader(connection, name, None)
    reader._copy = os.path.dirname(copy)
    if not _sound(connection):
        reader.close()
        return None
    return reader


def _uri(path: str, *, immutable: bool) -> str:
    where = urllib.parse.quote(os.path.abspath(path))
    return f"file:{where}?mode=ro" + ("&immutable=1" if immutable else "")


def _sound(connection: sqlite3.Connection) -> bool:
    """Whether the file passes ``PRAGMA quick_check`` and is an amr-gateway database at the
    current revision (anything else: the full path says what)."""
    try:
        if connection.execute("PRAGMA quick_check(3)").fetchall() != [("ok",)]:
            return False
        query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
        if connection.execute(query).fetchone() is None:
            return False
        revisions = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        return False
    return revisions == [(SCHEMA_REVISION,)]
