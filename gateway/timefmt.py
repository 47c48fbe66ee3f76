"""Time as the gateway keeps it: integer nanoseconds since the Unix epoch, UTC.

Parses the two forms SPEC section 3 allows (decimal epoch seconds with up to 9 fractional
digits, or ISO 8601 with an offset or ``Z``) exactly, with no float in between.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

NS_PER_S = 1_000_000_000
NS_PER_US = 1_000

_EPOCH_RE = re.compile(r"^(-?)(\d+)(?:\.(\d{1,9}))?$")
_ISO_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(Z|[+-]\d{2}:?\d{2})$"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_time_ns(text: str) -> int:
    """Parse epoch seconds or ISO 8601 with an offset; raise ValueError when it is neither."""
    text = text.strip()
    match = _EPOCH_RE.match(text)
    if match:
        sign, whole, frac = match.groups()
        ns = int(whole) * NS_PER_S + int((frac or "").ljust(9, "0"))
        return -ns if sign else ns
    match = _ISO_RE.match(text)
    if not match:
        raise ValueError(f"bad time {text!r}: expected epoch seconds or ISO 8601 with an offset")
    year, month, day, hour, minute, second, frac, zone = match.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
    except ValueError as exc:
        raise ValueError(f"bad time {text!r}: {exc}") from None
    offset_s = 0
    if zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
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
