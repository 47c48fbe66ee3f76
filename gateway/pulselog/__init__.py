"""Pulse logs (SPEC section 3): the format, its fast reader and the daemon's capture.

CSV, UTF-8, optionally gzip (by the ``.gz`` suffix). ``#`` lines are comments; the first other
line is the header ``time,meter,channel,level``; then one row per edge.

This module is the format itself: the header, the reference row parser and the one writer.
:mod:`gateway.pulselog.scan` reads logs fast into numpy arrays (falling back to
:func:`parse_row` for any line it cannot vouch for); :mod:`gateway.pulselog.capture` writes the
daemon's raw edges as daily logs through :class:`PulseLogWriter`.
"""

from __future__ import annotations

import gzip
import os
import re
from collections.abc import Iterable, Sequence
from typing import IO, cast

import numpy as np
import numpy.typing as npt

from gateway.core.edge import CHANNEL_1K, CHANNELS, Edge
from gateway.errors import PulseLogError
from gateway.timefmt import NS_PER_S, format_epoch, parse_time_ns

__all__ = [
    "GZIP_LEVEL",
    "HEADER",
    "METER_NAME_RE",
    "PulseLogWriter",
    "format_rows",
    "open_text",
    "parse_row",
    "valid_meter_name",
]

HEADER = "time,meter,channel,level"
METER_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)  # fullmatch: "$" takes a "\n"
# Logs are written far more often than read: level 1 is 3x faster than 6 for 15 % more bytes.
GZIP_LEVEL = 1


def open_text(path: str | os.PathLike[str], mode: str) -> IO[str]:
    """Open a pulse log (or any text file) for reading or writing, gzip by the ``.gz`` suffix."""
    if str(path).endswith(".gz"):
        return cast(
            IO[str],
            gzip.open(path, mode + "t", encoding="utf-8", newline="", compresslevel=GZIP_LEVEL),
        )
    return open(path, mode, encoding="utf-8", newline="")


def valid_meter_name(name: str) -> bool:
    return METER_NAME_RE.fullmatch(name) is not None


def _digits(values: npt.NDArray[np.int64], width: int) -> npt.NDArray[np.uint8]:
    out = np.empty((len(values), width), np.uint8)
    rest = values.copy()
    for column in range(width - 1, -1, -1):
        out[:, column] = rest % 10 + 48
        rest //= 10
    return out


def format_rows(
    t_ns: npt.NDArray[np.int64],
    meter: str,
    channels: npt.NDArray[np.bool_],
    levels: npt.NDArray[np.int64],
) -> bytes:
    """Format rows for one meter, vectorised; ``channels`` is True for `1K`, False for `10`.

    Times are written with 6 fractional digits when all are whole microseconds, else 9.
    """
    n = len(t_ns)
    if n == 0:
        return b""
    digits = 6 if not np.any(t_ns % 1000) else 9
    seconds = t_ns // NS_PER_S
    frac = (t_ns % NS_PER_S) // 10 ** (9 - digits)
    lo, hi = int(seconds.min()), int(seconds.max())
    if lo < 0 or len(str(lo)) != len(str(hi)):
        return "".join(
            f"{format_epoch(int(t), digits)},{meter},{CHANNELS[int(c)]},{int(lv)}\n"
            for t, c, lv in zip(t_ns, channels, levels, strict=True)
        ).encode()

    def const(text: str) -> npt.NDArray[np.uint8]:
        return np.broadcast_to(np.frombuffer(text.encode(), np.uint8), (n, len(text)))

    channel_bytes = np.where(
        channels[:, None],
        np.frombuffer(b"1K", np.uint8)[None, :],
        np.frombuffer(b"10", np.uint8)[None, :],
    ).astype(np.uint8)
    table = np.concatenate(
        [
            _digits(seconds, len(str(hi))),
            const("."),
            _digits(frac, digits),
            const(f",{meter},"),
            channel_bytes,
            const(","),
            (levels.astype(np.uint8) + 48)[:, None],
            const("\n"),
        ],
        axis=1,
    )
    return table.tobytes()


class PulseLogWriter:
    """Write a pulse log: comments, the header, then rows (plain or gzip by suffix)."""

    def __init__(self, path: str | os.PathLike[str], comments: Iterable[str] = ()) -> None:
        self.path = str(path)
        raw: IO[bytes]
        if self.path.endswith(".gz"):
            raw = cast(IO[bytes], gzip.open(self.path, "wb", compresslevel=GZIP_LEVEL))  # noqa: SIM115
        else:
            raw = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self._file = raw
        head = "".join(f"# {line}\n" for line in comments) + HEADER + "\n"
        self._file.write(head.encode())

    def write_rows(
        self,
        t_ns: npt.NDArray[np.int64],
        meter: str,
        channels: npt.NDArray[np.bool_],
        levels: npt.NDArray[np.int64],
    ) -> None:
        """Append one meter's rows (see :func:`format_rows`)."""
        self._file.write(format_rows(t_ns, meter, channels, levels))

    def write_edges(self, edges: Sequence[Edge]) -> None:
        """Append edges in the order given, a run of one meter's rows at a time."""
        start = 0
        while start < len(edges):
            meter = edges[start].meter
            stop = start + 1
            while stop < len(edges) and edges[stop].meter == meter:
                stop += 1
            run = edges[start:stop]
            self.write_rows(
                np.fromiter((e.t_ns for e in run), np.int64, len(run)),
                meter,
                np.fromiter((e.channel == CHANNEL_1K for e in run), np.bool_, len(run)),
                np.fromiter((e.level for e in run), np.int64, len(run)),
            )
            start = stop

    def write_comment(self, text: str) -> None:
        """Append a ``#`` line (metadata such as ``end=``, read wherever it stands)."""
        self._file.write(f"# {text}\n".encode())

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> PulseLogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_row(path: str, line_no: int, line: str) -> Edge:
    """Parse one data row; raise PulseLogError naming the file and line."""
    fields = line.rstrip("\r\n").split(",")
    if len(fields) != 4:
        raise PulseLogError(path, line_no, f"expected 4 fields ({HEADER}), got {len(fields)}")
    time_text, meter, channel, level_text = fields
    try:
        t_ns = parse_time_ns(time_text)
    except ValueError as exc:
        raise PulseLogError(path, line_no, str(exc)) from None
    if not valid_meter_name(meter):
        raise PulseLogError(path, line_no, f"bad meter name {meter!r}: [A-Za-z0-9_-]{{1,64}}")
    if channel not in CHANNELS:
        raise PulseLogError(path, line_no, f"bad channel {channel!r}: expected 10 or 1K")
    if level_text not in ("0", "1"):
        raise PulseLogError(path, line_no, f"bad level {level_text!r}: expected 0 or 1")
    return Edge(t_ns, meter, channel, int(level_text))
