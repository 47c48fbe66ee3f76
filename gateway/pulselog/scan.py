"""Fast, chunked reading of pulse logs into numpy arrays (the replay path).

The format itself lives in :mod:`gateway.pulselog`; this module only reads it quickly. Each chunk
of whole lines is parsed with vectorised byte arithmetic. Any line the fast path cannot vouch for
sends the chunk to :func:`gateway.pulselog.parse_row`, the reference parser, which either reads
it (ISO times, say) or raises the error naming the file and line. Memory stays flat: one chunk is
held at a time.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, cast

import numpy as np
import numpy.typing as npt

from gateway.core.edge import CHANNEL_1K
from gateway.errors import PulseLogError
from gateway.pulselog import HEADER, parse_row, valid_meter_name
from gateway.timefmt import MAX_TIME_NS, NS_PER_S, parse_time_ns

logger = logging.getLogger(__name__)

CHUNK_BYTES = 4 << 20
U8 = npt.NDArray[np.uint8]
I8 = npt.NDArray[np.int8]
I64 = npt.NDArray[np.int64]
_POW10 = 10 ** np.arange(18, -1, -1, dtype=np.int64)  # 1e18 .. 1
# Whole seconds the fast path may take: beyond them (2200 and later) the reference parser
# rejects the row, naming it; the test comes before the multiplication by 1e9 could overflow.
_MAX_SECONDS = MAX_TIME_NS // NS_PER_S - 1
BOM = b"\xef\xbb\xbf"


class GzipStream:
    """Read gzip data (several members too); a stream cut short ends, flagged, not in error."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.truncated = False
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._pending = b""
        self._started = False

    def read(self, size: int) -> bytes:
        out = [self._pending]
        have = len(self._pending)
        self._pending = b""
        while have < size:
            compressed = self.raw.read(1 << 20)
            if not compressed:
                if self._started and not self._inflate.eof:
                    self.truncated = True
                break
            self._started = True
            data = self._inflate.decompress(compressed)
            while self._inflate.eof and self._inflate.unused_data:
                rest = self._inflate.unused_data
                self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
                data += self._inflate.decompress(rest)
            out.append(data)
            have += len(data)
        joined = b"".join(out)
        self._pending = joined[size:]
        return joined[:size]


@dataclass
class Chunk:
    """Rows of one chunk: times, meter indices into ``LogScanner.meters``, channel, level."""

    t_ns: I64
    meter: npt.NDArray[np.int32]
    channel: npt.NDArray[np.int8]  # 0: `10`, 1: `1K`
    level: npt.NDArray[np.int8]

    def meter_ids(self) -> list[int]:
        """Return the meter indices present, ascending."""
        # Indices are small: counting them is one pass, where np.unique sorts the column (and
        # its first call imports numpy.ma).
        return np.flatnonzero(np.bincount(self.meter)).tolist()


@dataclass
class LogScanner:
    """Read one pulse log in chunks; collects the metadata of its ``#`` lines."""

    path: str
    meters: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    rows: int = 0
    chunk_bytes: int = field(default_factory=lambda: CHUNK_BYTES)  # read at a time
    _meter_index: dict[str, int] = field(default_factory=dict)

    def meter_id(self, name: str) -> int:
        index = self._meter_index.get(name)
        if index is None:
            index = self._meter_index[name] = len(self.meters)
            self.meters.append(name)
        return index

    def spans(self, rows: dict[str, tuple[int, int]]) -> dict[str, LogSpan]:
        """Return each meter's :class:`LogSpan` in this log, read whole, given its (first, last)
        row times."""
        meta = self.metadata
        start = parse_time_ns(meta["start"]) if "start" in meta else None
        end = parse_time_ns(meta["end"]) if "end" in meta else None
        return {
            name: LogSpan(
                lo, hi, lo if start is None else min(start, lo), hi if end is None else max(end, hi)
            )
            for name, (lo, hi) in rows.items()
        }

    def chunks(self, progress: Callable[[int], None] | None = None) -> Iterator[Chunk]:
        """Yield the log's rows chunk by chunk; ``progress`` gets bytes of the file read."""
        try:
            raw = open(self.path, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise PulseLogError(self.path, None, f"cannot read: {exc.strerror or exc}") from None
        with raw:
            stream: IO[bytes] | GzipStream = raw
            if self.path.endswith(".gz"):
                stream = GzipStream(raw)
            try:
                yield from self._chunks(stream, raw, progress)
            except (OSError, EOFError, zlib.error) as exc:
                raise PulseLogError(self.path, None, f"cannot read: {exc}") from None

    def _chunks(
        self,
        stream: IO[bytes] | GzipStream,
        raw: IO[bytes],
        progress: Callable[[int], None] | None,
    ) -> Iterator[Chunk]:
        line_no = 0
        header_seen = False
        rest = b""
        while True:
            block = stream.read(self.chunk_bytes)
            data = rest + block
            if not block:
                if isinstance(stream, GzipStream) and stream.truncated:
                    # A capture cut short by a crash: keep every whole line it holds.
                    logger.warning("%s: the gzip stream is cut short; read what it held", self.path)
                    data = data[: data.rfind(b"\n") + 1]
                elif data and not data.endswith(b"\n"):
                    data += b"\n"
                rest = b""
            else:
                cut = data.rfind(b"\n") + 1
                data, rest = data[:cut], data[cut:]
            if data:
                if not header_seen:
                    data, line_no, header_seen = self._head(data, line_no)
                if data:
                    chunk, lines = self._parse(data, line_no)
                    line_no += lines
                    self.rows += len(chunk.t_ns)
                    if len(chunk.t_ns):
                        yield chunk
            if progress is not None:
                progress(raw.tell())
            if not block:
                break
        if not header_seen:
            raise PulseLogError(self.path, None, f"no header {HEADER!r}")

    def _head(self, data: bytes, line_no: int) -> tuple[bytes, int, bool]:
        """Consume comment lines and the header; return the rest of the data."""
        offset = 0
        if line_no == 0 and data.startswith(BOM):
            offset = len(BOM)  # a byte-order mark, as spreadsheets save "CSV UTF-8": no content
        while offset < len(data):
            end = data.index(b"\n", offset)
            line = data[offset:end].decode("utf-8", errors="replace").rstrip("\r")
            line_no += 1
            offset = end + 1
            if line.startswith("#"):
                self._metadata(line, line_no)
                continue
            if not line.strip():
                continue
            if line.strip() != HEADER:
                raise PulseLogError(self.path, line_no, f"expected header {HEADER!r}")
            return data[offset:], line_no, True
        return b"", line_no, False

    def _metadata(self, line: str, line_no: int) -> None:
        """Keep ``start=`` and ``end=``, validated like the times of rows (SPEC section 3)."""
        for token in line[1:].split():
            key, sep, value = token.partition("=")
            if sep and key in ("start", "end"):
                try:
                    parse_time_ns(value)
                except ValueError as exc:
                    raise PulseLogError(self.path, line_no, f"{key}=: {exc}") from None
                self.metadata[key] = value

    def _parse(self, data: bytes, first_line: int) -> tuple[Chunk, int]:
        """Parse whole lines; return the rows and how many lines they took."""
        fast = _fast_parse(data, self)
        if fast is not None:
            return fast, len(fast.t_ns)  # the fast path takes only rows, one per line
        return self._slow_parse(data, first_line), data.count(b"\n")

    def _slow_parse(self, data: bytes, first_line: int) -> Chunk:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad_line = first_line + data[: exc.start].count(b"\n") + 1
            raise PulseLogError(self.path, bad_line, "not UTF-8 text") from None
        times: list[int] = []
        meters: list[int] = []
        channels: list[int] = []
        levels: list[int] = []
        for offset, line in enumerate(text.split("\n")[:-1], first_line + 1):
            if line.startswith("#"):
                self._metadata(line, offset)  # a capture's end= comes last
                continue
            if not line.strip():
                continue
            edge = parse_row(self.path, offset, line)
            times.append(edge.t_ns)
            meters.append(self.meter_id(edge.meter))
            channels.append(1 if edge.channel == CHANNEL_1K else 0)
            levels.append(edge.level)
        return Chunk(
            np.array(times, np.int64),
            np.array(meters, np.int32),
            np.array(channels, np.int8),
            np.array(levels, np.int8),
        )


def _digits_value(matrix: U8) -> I64 | None:
    """Return the integers written in the rows of a digit matrix, or None if any is not a digit."""
    if matrix.shape[1] == 0:
        return np.zeros(matrix.shape[0], np.int64)
    if matrix.shape[1] > 18:
        return None
    digits = matrix.astype(np.int64) - 48
    if digits.min() < 0 or digits.max() > 9:
        return None
    return cast(I64, digits @ _POW10[-matrix.shape[1] :])


def _column_value(matrix: U8, lo: int, hi: int) -> I64 | None:
    """Return the integers in columns lo..hi of a byte matrix, or None if any is not a digit."""
    if hi - lo > 18:
        return None
    value = np.zeros(matrix.shape[0], np.int64)
    for column in range(lo, hi):
        digit = matrix[:, column] - np.uint8(48)  # wraps below '0', so one test suffices
        if digit.max(initial=0) > 9:
            return None
        value *= 10
        value += digit
    return value


def _fixed_width_parse(data: bytes, buf: U8, scanner: LogScanner) -> Chunk | None:
    """Parse a chunk whose lines all have the first line's layout, as a byte matrix (no copy)."""
    width = data.find(b"\n", 0, 512) + 1
    if width < 8 or len(buf) % width:
        return None
    matrix = buf.reshape(-1, width)
    first = bytes(matrix[0])
    c1 = first.find(b",")
    c2 = first.find(b",", c1 + 1)
    c3 = first.find(b",", c2 + 1)
    dot = first.find(b".", 0, c1)
    if min(c1, c2, c3, dot) < 1 or c3 != width - 3 or c2 != c3 - 3:
        return None
    for column, byte in ((c1, 44), (c2, 44), (c3, 44), (dot, 46), (width - 1, 10)):
        if np.any(matrix[:, column] != byte):
            return None
    name = first[c1 + 1 : c2].decode("ascii", errors="replace")
    if not valid_meter_name(name):
        return None
    for column in range(c1 + 1, c2):  # column by column: cheaper than a 2-D comparison
        if np.any(matrix[:, column] != matrix[0, column]):
            return None
    frac_digits = c1 - dot - 1
    if not 1 <= frac_digits <= 9:
        return None
    seconds = _column_value(matrix, 0, dot)
    frac = _column_value(matrix, dot + 1, c1)
    if seconds is None or frac is None or seconds.max() > _MAX_SECONDS:
        return None
    ch_a, ch_b = matrix[:, c2 + 1], matrix[:, c2 + 2]
    is_1k = (ch_a == 49) & (ch_b == 75)
    if not np.all(is_1k | ((ch_a == 49) & (ch_b == 48))):
        return None
    level = matrix[:, width - 2] - np.uint8(48)
    if level.max(initial=0) > 1:
        return None
    t_ns = seconds * NS_PER_S + frac * 10 ** (9 - frac_digits)
    meter = np.full(len(t_ns), scanner.meter_id(name), np.int32)
    return Chunk(t_ns, meter, is_1k.view(np.int8), level.view(np.int8))


def _fast_parse(data: bytes, scanner: LogScanner) -> Chunk | None:
    """Parse whole lines of plain epoch-time rows; None when any line needs the slow path."""
    buf = np.frombuffer(data, np.uint8)
    fixed = _fixed_width_parse(data, buf, scanner)
    if fixed is not None:
        return fixed
    ends = np.flatnonzero(buf == 10)
    starts = np.empty(len(ends), np.int64)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    if np.any(buf == 13) or np.any(buf == 35):  # CR line ends or '#' comments: slow path
        return None
    if np.any(ends == starts):  # blank lines
        return None
    commas = np.flatnonzero(buf == 44)
    first_comma = np.searchsorted(commas, starts)
    if np.any(np.searchsorted(commas, ends) - first_comma != 3):
        return None
    c1, c2, c3 = commas[first_comma], commas[first_comma + 1], commas[first_comma + 2]
    # level: one byte, 0 or 1
    if np.any(ends - c3 != 2):
        return None
    level = buf[ends - 1].astype(np.int8) - 48
    if np.any((level != 0) & (level != 1)):
        return None
    # channel: "10" or "1K"
    if np.any(c3 - c2 != 3):
        return None
    ch_a, ch_b = buf[c2 + 1], buf[c2 + 2]
    is_10 = (ch_a == 49) & (ch_b == 48)
    is_1k = (ch_a == 49) & (ch_b == 75)
    if not np.all(is_10 | is_1k):
        return None
    # meter: group rows by name length, then by name
    meter = np.empty(len(ends), np.int32)
    lengths = c2 - c1 - 1
    for length in np.unique(lengths).tolist():
        if not 1 <= length <= 64:
            return None
        rows = np.flatnonzero(lengths == length)
        names = buf[(c1[rows] + 1)[:, None] + np.arange(length)]
        void = np.ascontiguousarray(names).view(np.dtype((np.void, length))).ravel()
        if np.all(void == void[0]):
            unique, inverse = void[:1], np.zeros(len(rows), np.int64)
        else:
            unique, inverse = np.unique(void, return_inverse=True)
        ids = []
        for item in unique:
            name = bytes(item).decode("ascii", errors="replace")
            if not valid_meter_name(name):
                return None
            ids.append(scanner.meter_id(name))
        meter[rows] = np.array(ids, np.int32)[inverse.ravel()]
    # time: decimal epoch seconds, grouped by field length and dot position
    t_ns = np.empty(len(ends), np.int64)
    widths = c1 - starts
    for width in np.unique(widths).tolist():
        rows = np.flatnonzero(widths == width)
        field_bytes = buf[starts[rows][:, None] + np.arange(width)]
        dots = field_bytes == 46
        has_dot = dots.any(axis=1)
        dot_at = np.where(has_dot, dots.argmax(axis=1), width)
        for position in np.unique(dot_at).tolist():
            sub = np.flatnonzero(dot_at == position)
            matrix = field_bytes[sub]
            frac_digits = width - position - 1
            if position == 0 or frac_digits > 9 or frac_digits == 0:  # 0: a dot, no digits
                return None
            seconds = _digits_value(matrix[:, :position])
            frac = _digits_value(matrix[:, position + 1 :]) if frac_digits > 0 else 0
            if seconds is None or frac is None or seconds.max() > _MAX_SECONDS:
                return None
            scale = 10 ** (9 - frac_digits) if frac_digits > 0 else 0
            t_ns[rows[sub]] = seconds * NS_PER_S + frac * scale
    return Chunk(t_ns, meter, is_1k.astype(np.int8), level)


@dataclass(frozen=True)
class LogSpan:
    """One meter's rows in one log: where they lie, and the window the log says it watched."""

    first_ns: int  # the first row
    last_ns: int  # the last row
    start_ns: int  # start= (else the first row); a row before it moves it back
    end_ns: int  # end= (else the last row); a row after it moves it on


def check_logs(paths: Sequence[str]) -> dict[str, dict[str, LogSpan]]:
    """Read logs whole, keeping only each meter's :class:`LogSpan` per log (by path); raise
    PulseLogError at the first malformed line."""
    spans: dict[str, dict[str, LogSpan]] = {}
    for path in paths:
        scanner = LogScanner(path)
        rows: dict[str, tuple[int, int]] = {}
        for chunk in scanner.chunks():
            ids = chunk.meter_ids()
            for meter_id in ids:
                t = chunk.t_ns if len(ids) == 1 else chunk.t_ns[chunk.meter == meter_id]
                lo, hi = int(t.min()), int(t.max())
                name = scanner.meters[meter_id]
                old = rows.get(name)
                rows[name] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
        spans.setdefault(path, {}).update(scanner.spans(rows))
    return spans


def order_rows(t: I64, lv: I8) -> tuple[I64, I8]:
    """Return a channel's rows sorted by (time, level), cheaply when they already are."""
    if len(t) < 2:
        return t, lv
    dt = np.diff(t)
    if np.all((dt > 0) | ((dt == 0) & (np.diff(lv) >= 0))):
        return t, lv
    t0 = int(t.min())
    if (int(t.max()) - t0).bit_length() > 61 or lv.min() < 0 or lv.max() > 1:
        order = np.lexsort((lv, t))
        return t[order], lv[order]
    # One packed int64 key (time since the earliest row, level), sorted and unpacked: much
    # cheaper than a two-key lexsort and its gathers.
    key = t - t0
    key <<= 1
    key |= lv
    key.sort(kind="stable")  # timsort: nearly free on runs already in order, or reversed
    out_lv = (key & 1).astype(np.int8)
    key >>= 1
    key += t0
    return key, out_lv


def file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
