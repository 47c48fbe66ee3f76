"""Time as the gateway keeps it: integer nanoseconds since the Unix epoch, UTC.

Parses the two forms SPEC section 3 allows (decimal epoch seconds with up to 9 fractional
digits, or ISO 8601 with an offset or ``Z``) exactly, with no float in between.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from meter_model.units import NS_PER_S, NS_PER_US

__all__ = [
    "MAX_TIME_NS",
    "MIN_TIME_NS",
    "NS_PER_S",
    "NS_PER_US",
    "TIME_RANGE",
    "format_epoch",
    "format_iso",
    "parse_time_ns",
    "shown",
]

# Every time the gateway reads lies in [1970-01-01, 2200-01-01) UTC (SPEC section 3): well inside
# int64 nanoseconds (which end in 2262), so no arithmetic on a time read can overflow (issue #12).
MIN_TIME_NS = 0
MAX_TIME_NS = 7_258_118_400 * NS_PER_S  # 2200-01-01T00:00:00Z, excluded
TIME_RANGE = "1970-01-01T00:00:00Z to 2200-01-01T00:00:00Z"

# ASCII digits only: re's \d would take full-width and other Unicode digits as numbers.
_EPOCH_RE = re.compile(r"(-?)([0-9]+)(?:\.([0-9]{1,9}))?", re.ASCII)
_ISO_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[T ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"(Z|[+-][0-9]{2}:?[0-9]{2})",
    re.ASCII,
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def shown(text: str, limit: int = 40) -> str:
    """Return ``text`` quoted for a one-line message, cut short when long."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def parse_time_ns(text: str) -> int:
    """Parse epoch seconds or ISO 8601 with an offset; raise ValueError when it is neither.

    A time outside :data:`TIME_RANGE` is a ValueError too.
    """
    text = text.strip()
    t_ns = _parse(text)
    if not MIN_TIME_NS <= t_ns < MAX_TIME_NS:
        raise ValueError(f"bad time {shown(text)}: outside {TIME_RANGE}")
    return t_ns


def _parse(text: str) -> int:
    match = _EPOCH_RE.fullmatch(text)
    if match:
        sign, whole, frac = match.groups()
        if len(whole) > 30:  # far out of range; spare int() a huge string
            raise ValueError(f"bad time {shown(text)}: outside {TIME_RANGE}")
        ns = int(whole) * NS_PER_S + int((frac or "").ljust(9, "0"))
        return -ns if sign else ns
    match = _ISO_RE.fullmatch(text)
    if not match:
        raise ValueError(
            f"bad time {shown(text)}: expected epoch seconds or ISO 8601 with an offset"
        )
    year, month, day, hour, minute, second, frac, zone = match.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
    except ValueError as exc:
        raise ValueError(f"bad time {shown(text)}: {exc}") from None
    offset_s = 0
    if zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        if int(digits[:2]) > 23 or int(digits[2:]) > 59:
            raise ValueError(f"bad time {shown(text)}: offset {zone} is not a time zone")
        offset_s = sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    seconds = (moment.replace(tzinfo=UTC) - _EPOCH) // timedelta(seconds=1) - offset_s
    return seconds * NS_PER_S + int((frac or "").ljust(9, "0"))


def format_epoch(t_ns: int, digits: int = 6) -> str:
    """Format as decimal epoch seconds with ``digits`` fractional digits (truncated)."""
    seconds, ns = divmod(t_ns, NS_PER_S)
    if digits == 0:
        return str(seconds)
    return f"{seconds}.{ns // 10 ** (9 - digits):0{digits}d}"


def format_iso(t_ns: int, digits: int = 6) -> str:
    """Format as ISO 8601 UTC with a ``Z``; fractional digits only when not whole seconds."""
    seconds, ns = divmod(t_ns, NS_PER_S)
    moment = _EPOCH + timedelta(seconds=seconds)
    base = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if ns == 0 or digits == 0:
        return base + "Z"
    return f"{base}.{ns // 10 ** (9 - digits):0{digits}d}Z"
