"""Read what can still be read of a damaged SQLite file: its intervals, around the damage.

Used by ``export`` when :mod:`gateway.sinks.integrity` refuses a file: the data a property
manager bills from should not become unreadable because one page of the file is. The damaged
file is never opened by SQLite itself (its write-ahead log could be rewritten): a copy of it
and its log is, in a temporary directory, read-only. SQLite reads the log as far as it is
intact; the intervals table is then read by ranges of row ids, halving a range that fails
until the damaged pages are fenced off, and every row is checked before it is believed.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field

from gateway.sinks.readback import StoredInterval

MAX_ROWID = 2**40  # more than any intervals table holds; empty ranges cost one query each
MAX_UNREADABLE = 1000  # damaged parts fenced off one by one before the rest is given up


@dataclass
class Salvage:
    """The intervals read from a damaged file, and how much could not be read."""

    rows: list[tuple[str, StoredInterval]] = field(default_factory=list)
    unreadable: int = 0  # ranges of row ids that could not be read
    rejected: int = 0  # rows read that were not believable (damaged values)


def salvage_intervals(
    path: str, meter: str | None, start_ns: int | None, end_ns: int | None
) -> Salvage:
    """Return the intervals that can be read of a damaged SQLite file, by meter and time."""
    result = Salvage()
    with tempfile.TemporaryDirectory(prefix="amr-salvage-") as directory:
        copy = os.path.join(directory, "copy.db")
        shutil.copyfile(path, copy)
        if os.path.exists(path + "-wal"):
            shutil.copyfile(path + "-wal", copy + "-wal")
        connection = sqlite3.connect(copy)
        try:
            connection.execute("PRAGMA query_only=ON")
            names = _meter_names(connection)
            try:  # the table itself, before any of its rows
                connection.execute("SELECT meter_id FROM intervals WHERE rowid < 0").fetchall()
            except sqlite3.DatabaseError:
                result.unreadable += 1
                return result
            for row in _rows(connection, 1, MAX_ROWID, result):
                interval = _interval(row)
                if interval is None:
                    result.rejected += 1
                    continue
                name = names.get(interval.meter_id, f"meter-id-{interval.meter_id}")
                if meter is not None and name != meter:
                    continue
                if start_ns is not None and interval.start_ns < start_ns:
                    continue
                if end_ns is not None and interval.end_ns > end_ns:
                    continue
                result.rows.append((name, interval))
        finally:
            connection.close()
    result.rows.sort(key=lambda pair: (pair[0], pair[1].start_ns))
    return result


def _meter_names(connection: sqlite3.Connection) -> dict[int, str]:
    try:
        return {
            int(id_): str(name)
            for id_, name in connection.execute("SELECT id, name FROM meters")
            if isinstance(id_, int) and isinstance(name, str)
        }
    except sqlite3.DatabaseError:
        return {}


def _rows(connection: sqlite3.Connection, low: int, high: int, result: Salvage) -> Iterator[tuple]:  # type: ignore[type-arg]
    """Yield the rows with row ids in [low, high], halving a range that cannot be read."""
    try:
        rows = connection.execute(
            "SELECT meter_id, start_ns, end_ns, energy_wh, edges, quality FROM intervals "
            "WHERE rowid BETWEEN ? AND ? ORDER BY rowid",
            (low, high),
        ).fetchall()
    except sqlite3.DatabaseError:
        if low == high or result.unreadable >= MAX_UNREADABLE:
            result.unreadable += 1
            return
        middle = (low + high) // 2
        yield from _rows(connection, low, middle, result)
        yield from _rows(connection, middle + 1, high, result)
        return
    yield from rows


def _interval(row: tuple) -> StoredInterval | None:  # type: ignore[type-arg]
    """The row as an interval, or None when its values cannot be right."""
    meter_id, start_ns, end_ns, energy_wh, edges, quality = row
    numbers = (meter_id, start_ns, end_ns, energy_wh, edges)
    if not all(isinstance(n, int) and n >= 0 for n in numbers):
        return None
    if not isinstance(quality, str) or not quality.isalpha() or not quality.islower():
        return None
    if not 0 < end_ns - start_ns <= 86_400 * 10**9:
        return None
    return StoredInterval(
        meter_id=meter_id,
        start_ns=start_ns,
        end_ns=end_ns,
        energy_wh=energy_wh,
        edges=edges,
        quality=quality,
        unwatched_s=0,  # not kept by a damaged file's salvage: estimates are left out
    )
