"""Billing read schedules: when a meter is read, and which period an instant belongs to.

A schedule is a day of the month and a time in a named time zone (issue #13). A read at local
time is a UTC instant computed with :mod:`zoneinfo`, so DST changes and short months come out
right: a day beyond the month's last is its last day; a local time that does not exist (the
spring-forward hour) or exists twice (the fall-back hour) resolves as ``fold=0`` does (the
offset before the change). The instant is then rounded up to the demand sub-interval, so a read
always falls on a sub-interval boundary and its peak window is whole; at every zone offset in use
today (whole multiples of 15 minutes) and a read time on a 5-minute mark nothing moves.

A period is named by the month it starts in: with ``read_day = 1`` period ``2026-11`` runs from
the read on 1 November to the read on 1 December, half-open ``[start, end)``.

Pure: nothing here asks the clock.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from zoneinfo import ZoneInfo

from gateway.core.errors import ConfigError
from meter_model.units import NS_PER_S

READ_TIME_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
PERIOD_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def parse_period(text: str) -> tuple[int, int]:
    """Return (year, month) of ``YYYY-MM``; raise ValueError otherwise."""
    match = PERIOD_RE.match(text)
    if not match:
        raise ValueError(f"bad period {text!r}: expected YYYY-MM")
    return int(match.group(1)), int(match.group(2))


def _next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def _previous_month(year: int, month: int) -> tuple[int, int]:
    return (year - 1, 12) if month == 1 else (year, month - 1)


class ScheduleError(ConfigError, ValueError):
    """A schedule value that cannot be; ``key`` names its field (``read_day``, ``timezone``)."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


@dataclass(frozen=True)
class ReadSchedule:
    """Read on ``read_day`` at ``read_time`` (HH:MM) in ``timezone``, on ``align_s`` marks."""

    read_day: int = 1
    read_time: str = "00:00"
    timezone: str = "UTC"
    align_s: int = 300  # the demand sub-interval S: reads fall on its boundaries

    def __post_init__(self) -> None:
        if not 1 <= self.read_day <= 31:
            raise ScheduleError(
                "read_day", f"read_day {self.read_day} is not a day of the month 1-31"
            )
        if not READ_TIME_RE.match(self.read_time):
            raise ScheduleError(
                "read_time", f"read_time {self.read_time!r}: expected HH:MM, 00:00 to 23:59"
            )
        if self.align_s <= 0:
            raise ScheduleError("align_s", "align_s must be positive")
        try:
            self.zone  # noqa: B018 - raises for an unknown zone
        except (ValueError, KeyError, OSError) as exc:  # KeyError: ZoneInfoNotFoundError
            raise ScheduleError("timezone", f"{self.timezone!r} is not a known time zone") from exc

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def read_ns(self, year: int, month: int) -> int:
        """Return the read instant that starts period ``year-month`` (UTC ns)."""
        hour, minute = (int(part) for part in self.read_time.split(":"))
        day = min(self.read_day, calendar.monthrange(year, month)[1])
        local = datetime(year, month, day, hour, minute, tzinfo=self.zone)
        seconds = int(local.astimezone(UTC).timestamp())
        aligned = -(-seconds // self.align_s) * self.align_s
        return aligned * NS_PER_S

    def period_of(self, t_ns: int) -> tuple[int, int]:
        """Return (year, month) of the period holding ``t_ns``."""
        local = datetime.fromtimestamp(t_ns // NS_PER_S, UTC).astimezone(self.zone)
        year, month = local.year, local.month
        while self.read_ns(year, month) > t_ns:
            year, month = _previous_month(year, month)
        while self.read_ns(*_next_month(year, month)) <= t_ns:
            year, month = _next_month(year, month)
        return year, month

    def bounds(self, year: int, month: int) -> tuple[int, int]:
        """Return the period's ``[start, end)`` in UTC ns."""
        return self.read_ns(year, month), self.read_ns(*_next_month(year, month))

    def start_at_or_before(self, t_ns: int) -> int:
        """Return the last read instant at or before ``t_ns``."""
        return self.read_ns(*self.period_of(t_ns))

    def next_after(self, t_ns: int) -> int:
        """Return the first read instant after ``t_ns``."""
        return self.bounds(*self.period_of(t_ns))[1]


def period_label(year: int, month: int) -> str:
    return f"{year:04d}-{month:02d}"
