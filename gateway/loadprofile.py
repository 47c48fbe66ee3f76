"""Load profiles for the simulator: CSV ``time,kw`` (SPEC section 4).

The meter sees each row's total active power from that row's time until the next row's; the last
row's time ends the run (its kW must still be a number). Times are epoch seconds or ISO 8601 as in
pulse logs, kept to the microsecond (finer digits are truncated). ``#`` lines and blank lines are
skipped.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

import numpy as np
import numpy.typing as npt

from gateway.errors import PulseLogError
from gateway.pulselog import open_text
from gateway.timefmt import NS_PER_US, parse_time_ns, shown

HEADER = "time,kw"
_SIMPLE_KW = re.compile(r"([0-9]+)(?:\.([0-9]{1,6}))?", re.ASCII)
# Decimal() reads full-width and other Unicode digits too: only ASCII is a number here.
_DECIMAL_KW = re.compile(r"[0-9.eE+-]+|[+-]?(nan|inf|infinity)", re.ASCII | re.IGNORECASE)
# No meter the gateway reads carries a gigawatt (1e6 kW); beyond it a figure is a typo.
MAX_KW = 1_000_000


@dataclass(frozen=True)
class LoadProfile:
    """Rows of power in integer mW from integer-µs times; ``lines`` maps rows to file lines."""

    path: str
    t_us: npt.NDArray[np.int64]  # every row's start; the last is the end of the run
    power_mw: npt.NDArray[np.int64]  # one per row but the last
    lines: npt.NDArray[np.int64]

    @property
    def start_us(self) -> int:
        return int(self.t_us[0])

    @property
    def end_us(self) -> int:
        return int(self.t_us[-1])


def parse_kw_to_mw(text: str) -> int:
    """Parse a kW figure exactly into integer milliwatts; raise ValueError if it is not one."""
    match = _SIMPLE_KW.fullmatch(text)
    if match and len(match.group(1)) <= 7:
        whole, frac = match.groups()
        power_mw = int(whole) * 1_000_000 + int((frac or "").ljust(6, "0"))
        if power_mw > MAX_KW * 1_000_000:
            raise ValueError(f"kw {shown(text)} is beyond {MAX_KW} kW")
        return power_mw
    if not _DECIMAL_KW.fullmatch(text) or len(text) > 40:
        raise ValueError(f"kw {shown(text)} is not a number")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"kw {text!r} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"kw {text!r} is not a finite number")
    if value < 0:
        raise ValueError(f"kw {text!r} is negative; a meter registers consumption only")
    if value > MAX_KW:
        raise ValueError(f"kw {shown(text)} is beyond {MAX_KW} kW")
    return int((value * 1_000_000).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def read_profile(path: str | os.PathLike[str]) -> LoadProfile:
    """Read and validate a load profile; raise PulseLogError naming the file and line."""
    name = str(path)
    times: list[int] = []
    powers: list[int] = []
    lines: list[int] = []
    try:
        with open_text(path, "r") as handle:
            header_seen = False
            for line_no, line in enumerate(handle, 1):
                text = line.strip()
                if line_no == 1:
                    text = text.removeprefix("\ufeff").strip()  # a byte-order mark: no content
                if not text or text.startswith("#"):
                    continue
                if not header_seen:
                    if text.replace(" ", "").lower() != HEADER:
                        raise PulseLogError(name, line_no, f"expected header {HEADER!r}")
                    header_seen = True
                    continue
                fields = text.split(",")
                if len(fields) != 2:
                    raise PulseLogError(
                        name, line_no, f"expected 2 fields ({HEADER}), got {len(fields)}"
                    )
                try:
                    t_us = parse_time_ns(fields[0]) // NS_PER_US
                    power_mw = parse_kw_to_mw(fields[1].strip())
                except ValueError as exc:
                    raise PulseLogError(name, line_no, str(exc)) from None
                if times and t_us <= times[-1]:
                    raise PulseLogError(
                        name, line_no, "times must increase strictly (rows are not sorted)"
                    )
                times.append(t_us)
                powers.append(power_mw)
                lines.append(line_no)
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise PulseLogError(name, None, f"cannot read: {exc}") from None
    if not header_seen:
        raise PulseLogError(name, None, f"no header {HEADER!r}")
    if len(times) < 2:
        raise PulseLogError(name, None, "a profile needs at least two rows (the last ends the run)")
    return LoadProfile(
        name,
        np.array(times, np.int64),
        np.array(powers[:-1], np.int64),
        np.array(lines, np.int64),
    )
