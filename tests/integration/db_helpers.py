"""Reading a gateway's SQLite database from a test, as ``status`` does: through a copy."""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.sinks.snapshot import copy_database


@contextmanager
def read_db(db: Path) -> Iterator[sqlite3.Connection]:
    """Open a copy of an SQLite database and its log, as it stands at its last commit.

    A running gateway, here or in another process, holds its file alone (exclusive locking),
    so the file cannot be opened beside it. Within the process that holds it, copying closes a
    descriptor of the file, which drops the process's POSIX locks on it: harmless in a test
    where nobody else opens it.
    """
    copy = copy_database(str(db))
    connection = sqlite3.connect(copy)
    try:
        yield connection
    finally:
        connection.close()
        shutil.rmtree(os.path.dirname(copy), ignore_errors=True)


@contextmanager
def sqlite_file(path: str | Path) -> Iterator[sqlite3.Connection]:
    """Open an SQLite file, commit (or roll back) and CLOSE it: a connection left to the garbage
    collector keeps the file open in shared mode, and the gateway refuses such a file."""
    connection = sqlite3.connect(path)
    try:
        with connection:
            yield connection
    finally:
        connection.close()
