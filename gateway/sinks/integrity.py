"""Is an SQLite file sound? Checked when it is opened, before anything is written to it.

A damaged file used as if sound loses what it held without a word (issue 17): random bytes in
the middle of the file, and then every write and every export fails; a damaged write-ahead log,
and SQLite quietly reads the database as it was before the damage (a register resumed lower, or
"started counting from zero"), and rewrites the log at the next commit, so the evidence is gone.
Three checks, cheapest first:

- the file's header (:func:`is_sqlite`): a file that is not SQLite at all is the user's mistake
  (the migration check refuses it, exit 2); everything below is for a file that was a database;
- the write-ahead log (:func:`wal_damage`), read before SQLite opens the file: SQLite ignores a
  log whose header is damaged, and everything from a damaged frame on. A power cut can tear
  only the transaction being written (``synchronous=FULL`` syncs each commit before the next
  begins), so a frame SQLite would ignore is damage only when a later, intact transaction
  proves it was committed, and only when it changes what the database reads;
- ``PRAGMA quick_check`` (:func:`quick_check`): the b-trees and their pages, all of the file.

A damaged file raises :class:`DamagedDatabase` (exit status 1), with what to do; the file is
left exactly as it was (docs/persistence.md, "A damaged database").
"""

from __future__ import annotations

import os
import struct
import sys
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.errors import SinkError, first_line

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

# SQLAlchemy is imported by the checks that take an engine, not here: the log's check
# (wal_damage) also serves the read-only path of ``status`` (gateway.sinks.quickread).

SQLITE_MAGIC = b"SQLite format 3\x00"
WAL_MAGIC = (0x377F0682, 0x377F0683)  # checksums in little-endian, big-endian words
WAL_VERSION = 3007000
WAL_HEADER = 32
FRAME_HEADER = 24
MASK = 0xFFFFFFFF

WHAT_TO_DO = (
    "it is left as it was. Keep it as it is (copy it with its -wal file somewhere safe), "
    "then restore it from a backup, or move it aside and let the gateway start a new file "
    "(see 'A damaged database' in docs/persistence.md)"
)


class DamagedDatabase(SinkError):
    """The database file is damaged: the gateway must not write to it."""

    def __init__(self, what: str, why: str) -> None:
        self.what, self.why = what, why
        super().__init__(f"{what} is damaged ({why}); {WHAT_TO_DO}")


def _read(path: str, offset: int, size: int, fd: int | None) -> bytes:
    """Read part of the database file: through ``fd`` when this process holds one open.

    Closing any descriptor of a file drops every POSIX lock the process holds on it, SQLite's
    included: a process that has the file open (locked) reads it through that descriptor.
    """
    if fd is not None:
        return os.pread(fd, size, offset)
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(size)


def is_sqlite(path: str, fd: int | None = None) -> bool:
    """Whether a file starts as an SQLite database does (an empty file is a new database)."""
    try:
        return _read(path, 0, len(SQLITE_MAGIC), fd) == SQLITE_MAGIC
    except OSError:
        return False


def _checksum(data: bytes, big_endian: bool, s0: int, s1: int) -> tuple[int, int]:
    """SQLite's WAL checksum of ``data`` (a multiple of 8 bytes), continuing from (s0, s1)."""
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    for k in range(0, len(words), 2):
        s0 = (s0 + words[k] + s1) & MASK
        s1 = (s1 + words[k + 1] + s0) & MASK
    return s0, s1


@dataclass(frozen=True)
class _Frame:
    offset: int  # in the log, which holds its page (not copied: a log can be large)
    page: int
    commit: bool  # the last frame of a transaction (it carries the database size)
    salt: bytes
    checksum: tuple[int, int]


def wal_damage(path: str, fd: int | None = None) -> str | None:
    """Say how the write-ahead log beside an SQLite file is damaged, or None if it is not.

    Damaged means: an intact later transaction proves that frames SQLite would drop were
    committed, and a page SQLite would read differs from the one committed last (a checkpoint
    may have copied the dropped frames into the file, but SQLite reads the frames it keeps
    before the file).
    """
    try:
        with open(path + "-wal", "rb") as handle:
            wal = handle.read()
    except FileNotFoundError:
        return None
    if len(wal) < WAL_HEADER:
        return None  # torn while it was being started: it held nothing yet
    magic, version, page_size = struct.unpack(">III", wal[:12])
    if not 512 <= page_size <= 65536 or page_size & (page_size - 1):
        page_size = _database_page_size(path, fd)
        if page_size is None:
            return "its write-ahead log's header is damaged"
    size = FRAME_HEADER + page_size
    frames = [_frame(wal, offset) for offset in range(WAL_HEADER, len(wal) - size + 1, size)]
    if not frames:
        return None
    big_endian = magic == WAL_MAGIC[1]
    salt = wal[16:24]
    seed: tuple[int, int] | None = struct.unpack(">II", wal[24:32])
    header_ok = (
        magic in WAL_MAGIC
        and version == WAL_VERSION
        and _checksum(wal[:24], big_endian, 0, 0) == seed
    )
    if not header_ok:
        # SQLite ignores the whole log: judge its frames by the salt most of them carry.
        salt = Counter(frame.salt for frame in frames[:8]).most_common(1)[0][0]
        seed = None
        if magic not in WAL_MAGIC:
            big_endian = sys.byteorder == "big"  # SQLite sums in the writer's byte order
    # The frames SQLite reads: a chain of good checksums, up to its last commit.
    sqlite_reads = 0
    if header_ok:
        chain = seed
        for index, frame in enumerate(frames):
            assert chain is not None
            if (
                frame.salt != salt
                or _frame_checksum(wal, frame, page_size, big_endian, chain) != frame.checksum
            ):
                break
            chain = frame.checksum
            if frame.commit:
                sqlite_reads = index + 1
    # The frames it would drop: each one intact if its checksum follows from the one before.
    intact_after: list[int] = []
    for index in range(sqlite_reads, len(frames)):
        frame = frames[index]
        before = frames[index - 1].checksum if index else seed
        if (
            frame.salt == salt
            and before is not None
            and _frame_checksum(wal, frame, page_size, big_endian, before) == frame.checksum
        ):
            intact_after.append(index)
    # A commit is proven when an intact frame of a later transaction follows it: that one was
    # written only once the commit was synced. A torn last transaction proves nothing.
    proven = [i for i in intact_after if frames[i].commit and any(j > i for j in intact_after)]
    if not proven:
        return None
    # What the database held at its last intact commit, page by page, against what SQLite would
    # read: the frames it keeps, else the file (a checkpoint may have copied later frames into
    # it, but SQLite reads a page from the frames it keeps first).
    last = max(i for i in intact_after if frames[i].commit)
    lost = {frames[i].page: frames[i].offset for i in intact_after if i <= last}
    reads = {frames[i].page: frames[i].offset for i in range(sqlite_reads)}

    def page_at(offset: int) -> bytes:
        return wal[offset + FRAME_HEADER : offset + FRAME_HEADER + page_size]

    changed = [
        page
        for page, offset in sorted(lost.items())
        if page_at(offset)
        != (page_at(reads[page]) if page in reads else _database_page(path, page, page_size, fd))
    ]
    if not changed:
        return None  # every page SQLite would read is as it was committed
    where = "header" if not header_ok else f"frame {sqlite_reads + 1}"
    dropped = sum(1 for i in range(sqlite_reads, proven[-1] + 1) if frames[i].commit)
    return (
        f"its write-ahead log is damaged at its {where}: SQLite would drop at least {dropped} "
        f"committed transaction(s) after it, {len(changed)} page(s) of data"
    )


def _frame(wal: bytes, offset: int) -> _Frame:
    page, size = struct.unpack_from(">II", wal, offset)
    checksum = struct.unpack_from(">II", wal, offset + 16)
    return _Frame(offset, page, size != 0, wal[offset + 8 : offset + 16], checksum)


def _frame_checksum(
    wal: bytes, frame: _Frame, page_size: int, big_endian: bool, seed: tuple[int, int]
) -> tuple[int, int]:
    """A frame's checksum: its header's first 8 bytes, then its page, from ``seed`` on."""
    start = frame.offset
    s0, s1 = _checksum(wal[start : start + 8], big_endian, *seed)
    data = wal[start + FRAME_HEADER : start + FRAME_HEADER + page_size]
    return _checksum(data, big_endian, s0, s1)


def _database_page_size(path: str, fd: int | None) -> int | None:
    try:
        header = _read(path, 0, 18, fd)
    except OSError:
        return None
    if len(header) < 18 or not header.startswith(SQLITE_MAGIC):
        return None
    size = int.from_bytes(header[16:18], "big")
    return 65536 if size == 1 else size


def _database_page(path: str, page: int, page_size: int, fd: int | None) -> bytes:
    """A page of the database file itself (zeros beyond its end, as SQLite reads them)."""
    return _read(path, (page - 1) * page_size, page_size, fd).ljust(page_size, b"\x00")


def quick_check(engine: Engine, what: str) -> None:
    """Run ``PRAGMA quick_check``; raise DamagedDatabase with its first finding."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with engine.connect() as connection:
            rows = connection.execute(text("PRAGMA quick_check(3)")).scalars().all()
    except SQLAlchemyError as exc:
        name = getattr(getattr(exc, "orig", None), "sqlite_errorname", None)
        if name != "SQLITE_CORRUPT":
            return  # not a database at all, locked, unreadable: the open's own checks say so
        raise DamagedDatabase(what, f"SQLite: {first_line(exc)}") from exc
    if rows != ["ok"]:
        first = " ".join(str(rows[0]).split()) if rows else "no answer"
        raise DamagedDatabase(what, f"quick_check: {first}")


def check_sqlite_file(engine: Engine, what: str, *, wal: bool, fd: int | None = None) -> None:
    """Refuse a damaged SQLite file, before SQLite reads (and may rewrite) its log.

    ``wal``: check the write-ahead log too; not while another process writes the database
    (its log is live then, and SQLite in that process trusts it). ``fd``: a descriptor of the
    file this process keeps open (its lock), to read it through.
    """
    path = engine.url.database
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    try:
        empty = os.path.getsize(path) == 0  # a log may hold all of it yet
    except OSError:
        return  # not there: a new database
    if not empty and not is_sqlite(path, fd):
        return  # not SQLite at all: the migration check says so (exit 2)
    if wal:
        why = wal_damage(path, fd)
        if why is not None:
            raise DamagedDatabase(what, why)
    quick_check(engine, what)
