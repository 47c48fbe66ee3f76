"""Read an SQLite database that a running gateway holds to itself, through a copy.

The daemon keeps its SQLite file in exclusive locking mode, so that the WAL index lives in its
memory and no ``-shm`` file is written back to the SD card every few seconds
(:func:`gateway.sinks.database.make_engine`). While it runs, no other process can open the
file. The commands that only read (``status``, ``export``, ``bill``) then read a copy: the
database file and its write-ahead log are copied to memory-backed storage (``/dev/shm``) and
opened there, and SQLite's own recovery takes the log up to its last complete commit, exactly
as after a power cut. So they show what the daemon has committed, and the card sees no write.

The copy is consistent when, while it was taken, no checkpoint wrote the database file and the
log did not start over (a restart rewrites the log's header before any frame): both are
compared before and after (a database file written in the last 50 ms is waited out, so that a
write during the copy moves its time), and the copy is taken again if anything moved.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import struct
import tempfile
import time

from gateway.errors import SinkError

# SQLite's unix VFS: a connection that holds the file exclusively write-locks these bytes.
_SHARED_FIRST = 0x40000002
_SHARED_SIZE = 510
_SHM_DMS = 128  # in the -shm file: every connection that uses it read-locks this byte
# File times move in clock ticks (at most 10 ms): a write during the copy changes the database
# file's time only if its last write is at least a tick older than the copy's start.
QUIET_NS = 50_000_000
_ATTEMPTS = 250


def held_elsewhere(path: str) -> bool:
    """Return whether another process holds the SQLite file at ``path`` exclusively."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        # Ask for the read lock a reader would take, and give it back at once.
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, _SHARED_SIZE, _SHARED_FIRST)
        fcntl.lockf(fd, fcntl.LOCK_UN, _SHARED_SIZE, _SHARED_FIRST)
    except OSError:  # EAGAIN or EACCES: someone holds it
        return True
    finally:
        os.close(fd)
    return False


def shm_in_use(path: str) -> bool:
    """Return whether another process has the database at ``path`` open in shared WAL mode.

    Such a connection (another program, opened before the gateway took the file) keeps a WAL
    index in the ``-shm`` file that the gateway's in-memory one never updates: after the gateway
    stops it would read stale pages, and a write from it could undo the gateway's commits. Every
    such connection holds a read lock on the file's dead-man-switch byte.
    """
    try:
        fd = os.open(path + "-shm", os.O_RDONLY)
    except OSError:
        return False
    try:
        probe = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, _SHM_DMS, 1, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, probe)  # asks, takes nothing
    finally:
        os.close(fd)
    return bool(struct.unpack("hhqqi", answer)[0] != fcntl.F_UNLCK)


def copy_database(path: str) -> str:
    """Copy the database at ``path`` and its log into a new directory; return the copy's path.

    The caller removes the directory (``os.path.dirname`` of the result) when done.
    """
    if not os.path.isfile(path):
        raise SinkError(f"database {path}: no such file")
    where = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    directory = tempfile.mkdtemp(prefix="amr-gateway-", dir=where)
    copy = os.path.join(directory, os.path.basename(path))
    try:
        for _ in range(_ATTEMPTS):
            before = marks(path)
            if before is not None and time.time_ns() - before[0][2] >= QUIET_NS:
                shutil.copyfile(path, copy)
                if os.path.exists(path + "-wal"):
                    shutil.copyfile(path + "-wal", copy + "-wal")
                if marks(path) == before:
                    return copy
            time.sleep(0.02)  # a checkpoint under way: they take milliseconds
    except OSError as exc:
        shutil.rmtree(directory, ignore_errors=True)
        raise SinkError(f"database {path}: cannot copy it to read it: {exc.strerror}") from exc
    shutil.rmtree(directory, ignore_errors=True)
    raise SinkError(f"database {path}: it kept changing while it was copied to be read; try again")


def marks(path: str) -> tuple[tuple[int, int, int], bytes] | None:
    """What a checkpoint or a log restart changes: the file's identity, size and time, and the
    log's header (its salts change at each restart)."""
    try:
        stat = os.stat(path)
        header = b""
        if os.path.exists(path + "-wal"):
            with open(path + "-wal", "rb") as log:
                header = log.read(32)
    except OSError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns), header
