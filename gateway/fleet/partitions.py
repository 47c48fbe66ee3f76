"""Monthly partitions of ``fleet_intervals`` on PostgreSQL (declarative RANGE partitioning).

A partition per UTC calendar month of ``start_ns``, named ``fleet_intervals_YYYYMM``. They are
made ahead of time (at upgrade, and by the collector for the coming months) and on demand for
the months a batch of intervals holds (a gateway catching up after months offline). No default
partition: a row for a month without a partition would make that month's partition impossible
to create later without moving rows. On SQLite the table is a plain table and nothing is done.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.engine import Connection

from gateway.timefmt import NS_PER_S

MONTHS_AHEAD = 3
# Serialises the collectors' CREATE TABLE of partitions (an advisory lock's key).
_LOCK_KEY = 0x666C_6565_7470


def month_of(t_ns: int) -> tuple[int, int]:
    """Return the UTC (year, month) holding ``t_ns``."""
    day = datetime.fromtimestamp(t_ns // NS_PER_S, UTC)
    return day.year, day.month


def _next(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def _start_ns(year: int, month: int) -> int:
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp()) * NS_PER_S


def months_from(t_ns: int, count: int) -> list[tuple[int, int]]:
    """Return the month of ``t_ns`` and the ``count - 1`` after it."""
    months = [month_of(t_ns)]
    while len(months) < count:
        months.append(_next(*months[-1]))
    return months


def partition_name(year: int, month: int) -> str:
    return f"fleet_intervals_{year:04d}{month:02d}"


def existing_partitions(connection: Connection) -> set[str]:
    rows = connection.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'fleet_intervals'"
        )
    )
    return {row[0] for row in rows}


def create_partitions(connection: Connection, months: Iterable[tuple[int, int]]) -> list[str]:
    """Create the partitions of ``months`` that do not exist (PostgreSQL); return those made.

    Runs in the caller's transaction; an advisory lock held to its end keeps two collectors
    from racing on the same CREATE.
    """
    if connection.dialect.name != "postgresql":
        return []
    wanted = sorted(set(months))
    if not wanted:
        return []
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    have = existing_partitions(connection)
    made = []
    for year, month in wanted:
        name = partition_name(year, month)
        if name in have:
            continue
        low, high = _start_ns(year, month), _start_ns(*_next(year, month))
        connection.execute(
            text(
                f"CREATE TABLE {name} PARTITION OF fleet_intervals "
                f"FOR VALUES FROM ({low}) TO ({high})"
            )
        )
        made.append(name)
    return made
