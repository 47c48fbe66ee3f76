"""Load profiles for the simulator: CSV ``time,kw`` (SPEC section 4).

The meter sees each row's total active power from that row's time until the next row's; the last
row's time ends the run (its kW must still be a number). Times are epoch seconds or ISO 8601 as in
pulse logs, kept to the microsecond (finer digits are truncated). ``#`` lines and blank lines are
skipped.

A profile is read in chunks of whole lines. A chunk of plain rows (decimal epoch seconds, decimal
kW, LF or CRLF line ends) is parsed with vectorised byte arithmetic, as pulse logs are
(:mod:`gateway.pulselog.scan`); any other chunk goes line by line through the reference parser
(:meth:`Rows.line`), which reads ISO times, exponents, comments and the like. Should anything
fail, the whole file is read again by the reference parser alone, as it always was, so an error
names the file and line exactly as it did, and the fast path only ever has to agree on good
input (a property test holds the two to it).
"""

from __future__ import annotations

import gzip
import io
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

import numpy as np
import numpy.typing as npt

from gateway.errors import PulseLogError
from gateway.pulselog import open_text
from gateway.timefmt import MAX_TIME_NS, NS_PER_US, parse_time_ns, shown

HEADER = "time,kw"
_SIMPLE_KW = re.compile(r"([0-9]+)(?:\.([0-9]{1,6}))?", re.ASCII)
# Decimal() reads full-width and other Unicode digits too: only ASCII is a number here.
_DECIMAL_KW = re.compile(r"[0-9.eE+-]+|[+-]?(nan|inf|infinity)", re.ASCII | re.IGNORECASE)
# No meter the gateway reads carries a gigawatt (1e6 kW); beyond it a figure is a typo.
MAX_KW = 1_000_000
CHUNK_BYTES = 1 << 20  # 1 MB of lines at a time: parsing needs some 10x that
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
# Bytes a plain row may hold: digits, '.', ',', CR (only before LF) and LF.
_PLAIN_BYTES = np.zeros(256, np.bool_)
_PLAIN_BYTES[[*b"0123456789.,\r\n"]] = True
_MAX_WHOLE_DIGITS = 12  # times below 1e12 s and powers below 1e12 kW: int64 holds µs and mW


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
    try:
        rows = _read_chunks(name)
    except (PulseLogError, _Unsure, OSError, UnicodeDecodeError, EOFError, zlib.error):
        # Whatever went wrong, the reference parser says what, as it always has.
        rows = read_lines(name)
    return rows.profile()


class _Unsure(Exception):
    """The chunked reader cannot vouch for the file's lines: read it line by line instead."""


@dataclass
class Rows:
    """The rows read so far, and the reference parser of one line."""

    path: str
    header_seen: bool = False
    last_t_us: int | None = None
    parts: list[tuple[I64, I64, I64]] = field(default_factory=list)  # (t_us, power_mw, lines)
    times: list[int] = field(default_factory=list)  # rows of the line parser not yet in parts
    powers: list[int] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)

    def line(self, line_no: int, line: str) -> None:
        """Take one line of the file (the reference parser)."""
        text = line.strip()
        if line_no == 1:
            text = text.removeprefix("\ufeff").strip()  # a byte-order mark: no content
        if not text or text.startswith("#"):
            return
        if not self.header_seen:
            if text.replace(" ", "").lower() != HEADER:
                raise PulseLogError(self.path, line_no, f"expected header {HEADER!r}")
            self.header_seen = True
            return
        fields = text.split(",")
        if len(fields) != 2:
            raise PulseLogError(
                self.path, line_no, f"expected 2 fields ({HEADER}), got {len(fields)}"
            )
        try:
            t_us = parse_time_ns(fields[0]) // NS_PER_US
            power_mw = parse_kw_to_mw(fields[1].strip())
        except ValueError as exc:
            raise PulseLogError(self.path, line_no, str(exc)) from None
        if self.last_t_us is not None and t_us <= self.last_t_us:
            raise PulseLogError(
                self.path, line_no, "times must increase strictly (rows are not sorted)"
            )
        self.last_t_us = t_us
        self.times.append(t_us)
        self.powers.append(power_mw)
        self.lines.append(line_no)

    def _flush_lines(self) -> None:
        if self.times:
            self.parts.append(
                (
                    np.array(self.times, np.int64),
                    np.array(self.powers, np.int64),
                    np.array(self.lines, np.int64),
                )
            )
            self.times, self.powers, self.lines = [], [], []

    def add(self, t_us: I64, power_mw: I64, lines: I64) -> None:
        """Take rows the fast parser read (already checked to follow the rows before)."""
        self._flush_lines()
        self.parts.append((t_us, power_mw, lines))
        self.last_t_us = int(t_us[-1])

    def profile(self) -> LoadProfile:
        """Return the profile the rows make, once the file has been read."""
        if not self.header_seen:
            raise PulseLogError(self.path, None, f"no header {HEADER!r}")
        self._flush_lines()
        rows = sum(len(part[0]) for part in self.parts)
        if rows < 2:
            raise PulseLogError(
                self.path, None, "a profile needs at least two rows (the last ends the run)"
            )
        t_us, power_mw, lines = (np.concatenate([p[i] for p in self.parts]) for i in range(3))
        return LoadProfile(self.path, t_us, power_mw[:-1], lines)


def read_lines(name: str) -> Rows:
    """Read the whole file through the reference parser, line by line."""
    rows = Rows(name)
    try:
        with open_text(name, "r") as handle:
            for line_no, line in enumerate(handle, 1):
                rows.line(line_no, line)
    except (OSError, UnicodeDecodeError, EOFError, zlib.error) as exc:
        raise PulseLogError(name, None, f"cannot read: {exc}") from None
    return rows


def _whole_lines(name: str) -> Iterator[bytes]:
    """Yield the file's bytes in chunks of whole lines (LF-terminated; the last one made so)."""
    with gzip.open(name, "rb") if name.endswith(".gz") else open(name, "rb") as raw:
        rest = b""
        while True:
            block = raw.read(CHUNK_BYTES)
            if not block:
                if rest:
                    yield rest + b"\n"
                return
            data = rest + block
            cut = data.rfind(b"\n") + 1
            data, rest = data[:cut], data[cut:]
            if data:
                yield data


def _read_chunks(name: str) -> Rows:
    """Read the file chunk by chunk, plain rows vectorised; raise _Unsure when in doubt."""
    rows = Rows(name)
    line_no = 0  # lines consumed, counted as the reference parser counts them
    for data in _whole_lines(name):
        if not rows.header_seen:
            data, line_no = _head(rows, data, line_no)
        if not data:
            continue
        fast = _plain_rows(data, rows.last_t_us)
        if fast is not None:
            t_us, power_mw = fast
            rows.add(t_us, power_mw, np.arange(line_no + 1, line_no + 1 + len(t_us)))
            line_no += len(t_us)
            continue
        # Universal newlines, as the reference parser's text file has them (CR, LF, CRLF).
        # Chunks end with LF, so no CRLF is ever split between two.
        with io.StringIO(data.decode("utf-8"), newline="") as lines:
            for line in lines:
                line_no += 1
                rows.line(line_no, line)
    return rows


def _head(rows: Rows, data: bytes, line_no: int) -> tuple[bytes, int]:
    """Take the comment lines and the header; return the rest of ``data`` and the lines read."""
    offset = 0
    while offset < len(data) and not rows.header_seen:
        end = data.index(b"\n", offset) + 1
        line = data[offset:end].decode("utf-8")
        if "\r" in line[:-2]:
            raise _Unsure  # a bare CR ends a line too: leave such a file to the line parser
        line_no += 1
        rows.line(line_no, line)
        offset = end
    return data[offset:], line_no


def _digits_value(buf: U8, starts: I64, width: int) -> I64:
    """Return the integers written with ``width`` digits from each of ``starts`` in ``buf``."""
    value = np.zeros(len(starts), np.int64)
    for column in range(width):  # column by column: no matrix of rows x digits in memory
        value *= 10
        value += buf[starts + column]
        value -= 48
    return value


def _decimals(buf: U8, lo: I64, hi: I64, frac_digits: int) -> tuple[I64, I64] | None:
    """Read the numbers ``D+`` or ``D+.D{1,frac_digits}`` in ``buf[lo:hi]``, one per row.

    Return their whole parts and their fractions in units of 10**-frac_digits, or None when any
    is not such a number. The bytes are known to be digits and dots only.
    """
    dots = np.flatnonzero(buf == 46)
    first_dot = np.searchsorted(dots, lo)
    has_dot = np.searchsorted(dots, hi) - first_dot
    if has_dot.max(initial=0) > 1:
        return None
    dot = (
        np.where(has_dot == 1, dots[np.minimum(first_dot, len(dots) - 1)], hi) if len(dots) else hi
    )
    whole_len = dot - lo
    frac_len = np.where(has_dot == 1, hi - dot - 1, 0)
    if whole_len.min() < 1 or whole_len.max() > _MAX_WHOLE_DIGITS:
        return None
    if np.any((has_dot == 1) & (frac_len < 1)) or frac_len.max() > frac_digits:
        return None
    whole = np.empty(len(lo), np.int64)
    frac = np.zeros(len(lo), np.int64)
    # Rows of one layout (whole digits, fraction digits) at a time: as byte matrices.
    layout = whole_len * 16 + frac_len
    for code in np.unique(layout).tolist():
        rows = np.flatnonzero(layout == code)
        width, places = divmod(code, 16)
        whole[rows] = _digits_value(buf, lo[rows], width)
        if places:
            frac[rows] = _digits_value(buf, dot[rows] + 1, places) * 10 ** (frac_digits - places)
    return whole, frac


def _plain_rows(data: bytes, last_t_us: int | None) -> tuple[I64, I64] | None:
    """Parse whole lines of plain rows into (t_us, power_mw); None unless every line is one.

    A plain row is ``D+[.D{1,9}],D+[.D{1,6}]`` with at most 12 whole digits each, ending in LF
    or CRLF, its time after the one before: exactly what the reference parser reads the same.
    """
    buf = np.frombuffer(data, np.uint8)
    if not _PLAIN_BYTES[buf].all():
        return None
    ends = np.flatnonzero(buf == 10)
    starts = np.empty(len(ends), np.int64)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    carriage = np.flatnonzero(buf == 13)
    if len(carriage) and np.any(buf[carriage + 1] != 10):  # a CR only ever ends a line
        return None
    stops = ends - (buf[ends - 1] == 13)  # a CRLF line's fields stop at its CR
    commas = np.flatnonzero(buf == 44)
    # One comma a line, inside it: the counts match and each line holds the one of its rank.
    if len(commas) != len(ends) or np.any(commas <= starts) or np.any(commas >= stops - 1):
        return None
    times = _decimals(buf, starts, commas, 9)
    powers = _decimals(buf, commas + 1, stops, 6)
    if times is None or powers is None:
        return None
    seconds, frac_ns = times
    t_us = seconds * 1_000_000 + frac_ns // NS_PER_US
    if np.any(t_us[1:] <= t_us[:-1]) or (last_t_us is not None and int(t_us[0]) <= last_t_us):
        return None  # the line parser names the row out of order
    whole_kw, frac_mw = powers
    power_mw = whole_kw * 1_000_000 + frac_mw
    # Beyond the bounds the line parser names (times from 2200 on, kW beyond MAX_KW).
    if int(t_us[-1]) >= MAX_TIME_NS // NS_PER_US or int(power_mw.max()) > MAX_KW * 1_000_000:
        return None
    return t_us, power_mw
