"""The ``replay`` source: a captured pulse log played back live, paced at ``speed``.

Reading the log is :mod:`gateway.pulselog.scan`'s job; this module only paces it (as python-can
keeps reading in ``can/io`` and pacing in ``can/io/player.py``). After a restart it skips every edge
the database says was already seen (per channel, at or before the last stored edge) and continues
the replay clock where it stopped, so a log is counted exactly once whatever happens.

Memory stays bounded whatever the log's size: :meth:`ReplaySource.open` reads the log once,
keeping only its window and whether the meter's rows come in order; the rows are then read
again chunk by chunk as the replay clock reaches them. Rows out of order go through the
external sort replay uses (:mod:`gateway.batch.extsort`, with smaller runs), whose temporary
files last as long as the source is open.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from gateway.batch.extsort import RunSorter, sort_columns
from gateway.config import check_readable
from gateway.core.edge import CHANNEL_1K, CHANNEL_10, Edge
from gateway.errors import ConfigError, SourceError
from gateway.pulselog.scan import Chunk, LogScanner
from gateway.sources import SPEED_RANGE, Poll, Source, SourceContext, SourceSettings, SourceStart
from gateway.timefmt import parse_time_ns

if TYPE_CHECKING:
    from gateway.config import MeterSettings

__all__ = ["ReplaySettings", "ReplaySource"]

logger = logging.getLogger(__name__)

MAX_EDGES_PER_POLL = 20_000
# The log is read in chunks of this many bytes; an out-of-order log is sorted in runs of this
# many rows (some 8 MB while a run is sorted) and merged holding this many: the source adds
# some 20 MB to the daemon whatever the log's size.
LIVE_CHUNK_BYTES = 1 << 20
LIVE_RUN_ROWS = 1 << 18
LIVE_MERGE_ROWS = 1 << 18

I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]
Rows = tuple[I64, I8, I8]  # time, channel (0: `10`, 1: `1K`), level; by (time, channel, level)
_EMPTY: Rows = (np.empty(0, np.int64), np.empty(0, np.int8), np.empty(0, np.int8))


@dataclass(frozen=True)
class ReplaySettings(SourceSettings):
    """``source = "replay"``: the pulse log to play, and how fast."""

    speed: float = field(default=1.0, metadata=SPEED_RANGE)
    file: str | None = None

    def check(self, where: str) -> None:
        if not self.file:
            raise ConfigError(f'{where}.file: missing required key for source "replay"')


class ReplaySource(Source):
    """One meter's rows of a pulse log, emitted as their times come in the replay clock."""

    settings_type = ReplaySettings

    @classmethod
    def from_settings(
        cls, settings: MeterSettings, start: SourceStart, context: SourceContext
    ) -> ReplaySource:
        backend = settings.backend
        assert isinstance(backend, ReplaySettings) and backend.file is not None
        return cls(
            settings.name,
            backend.file,
            speed=backend.speed,
            resume=dict(start.last_seen),
            state=start.source_state,
        )

    @classmethod
    def check_inputs(cls, settings: MeterSettings, where: str, *, ports: bool = True) -> None:
        """Refuse a log that cannot be read, is malformed, or has no rows for the meter."""
        backend = settings.backend
        assert isinstance(backend, ReplaySettings)
        if backend.file is None:
            return
        check_readable(f"{where}.file", backend.file)
        scanner = LogScanner(backend.file)
        for _chunk in scanner.chunks():
            pass
        if settings.name not in scanner.meters:
            raise ConfigError(
                f"{where}.file: {backend.file} has no rows for meter {settings.name!r}"
            )

    def __init__(
        self,
        meter: str,
        path: str,
        *,
        speed: float = 1.0,
        resume: dict[str, tuple[int, int]] | None = None,
        state: dict[str, Any] | None = None,
    ) -> None:
        self.meter = meter
        self.path = path
        self.speed = speed
        self.resume = resume or {}
        self._skipped = 0
        self._state = state
        self._stream: Iterator[Rows] | None = None  # the rows not yet at hand, block by block
        self._sorter: RunSorter | None = None
        self._rows: Rows = _EMPTY  # the block at hand, and the next row of it to hand over
        self._position = 0
        self._start_ns = 0
        self._mono0_ns: int | None = None
        self._now_ns = 0
        self._stop_ns = 0

    def _meter_rows(self, scanner: LogScanner, chunk: Chunk) -> Rows | None:
        """Return the chunk's rows of this meter, sorted by (time, channel, level)."""
        ids = [i for i, name in enumerate(scanner.meters) if name == self.meter]
        if not ids:
            return None
        mine = chunk.meter == ids[0]
        if mine.all():
            t, channel, level = chunk.t_ns, chunk.channel, chunk.level
        elif mine.any():
            t, channel, level = chunk.t_ns[mine], chunk.channel[mine], chunk.level[mine]
        else:
            return None
        # One meter: sorted on a packed key, nearly free when the rows are already in order.
        t, _, channel, level = sort_columns((t, np.zeros(len(t), np.int32), channel, level))
        return t, channel, level

    def _seen(self, rows: Rows) -> npt.NDArray[np.bool_] | None:
        """Mark the rows at or before each channel's last edge already counted (None: none)."""
        t, channel, level = rows
        seen: npt.NDArray[np.bool_] | None = None
        for code, name in ((0, CHANNEL_10), (1, CHANNEL_1K)):
            last = self.resume.get(name)
            if last is not None:
                mask = (channel == code) & ((t < last[0]) | ((t == last[0]) & (level <= last[1])))
                seen = mask if seen is None else seen | mask
        return seen if seen is not None and seen.any() else None

    def _unseen(self, rows: Rows) -> Rows:
        """Drop the rows at or before each channel's last edge already counted."""
        seen = self._seen(rows)
        if seen is None:
            return rows
        keep = ~seen
        return rows[0][keep], rows[1][keep], rows[2][keep]

    def _log_rows(self) -> Iterator[Rows]:
        """The meter's unseen rows, chunk by chunk, as the log holds them (each chunk sorted)."""
        scanner = LogScanner(self.path, chunk_bytes=LIVE_CHUNK_BYTES)
        for chunk in scanner.chunks():
            rows = self._meter_rows(scanner, chunk)
            if rows is not None:
                yield self._unseen(rows)

    def open(self) -> None:
        # One pass that keeps nothing but the window, the count and whether rows are in order.
        scanner = LogScanner(self.path, chunk_bytes=LIVE_CHUNK_BYTES)
        first_row: int | None = None
        last_row = 0
        rows_total = 0
        in_order = True
        last_key = (-1, -1, -1)
        for chunk in scanner.chunks():
            rows = self._meter_rows(scanner, chunk)
            if rows is None or not len(rows[0]):
                continue
            t, channel, level = rows
            rows_total += len(t)
            seen = self._seen(rows)
            self._skipped += 0 if seen is None else int(seen.sum())
            first_row = int(t[0]) if first_row is None else min(first_row, int(t[0]))
            last_row = max(last_row, int(t[-1]))
            if (int(t[0]), int(channel[0]), int(level[0])) < last_key:
                in_order = False
            last_key = max(last_key, (int(t[-1]), int(channel[-1]), int(level[-1])))
        if first_row is None:
            raise SourceError(f"{self.path}: no rows for meter {self.meter!r}")
        if in_order:
            self._stream = self._log_rows()
        else:
            self._sorter = RunSorter(run_rows=LIVE_RUN_ROWS, merge_rows=LIVE_MERGE_ROWS)
            for t, channel, level in self._log_rows():
                self._sorter.add(Chunk(t, np.zeros(len(t), np.int32), channel, level))
            self._stream = (
                (chunk.t_ns, chunk.channel, chunk.level) for chunk in self._sorter.chunks()
            )
        # The replay clock runs from where the log says observation started (its ``start=``
        # metadata, else its first row) to where it ended (``end=``, else its last row), and
        # then holds still: the service finishes the meter there, as `replay` does (SPEC 3).
        start = first_row
        if "start" in scanner.metadata:
            start = min(start, parse_time_ns(scanner.metadata["start"]))
        self._start_ns = int(self._state["now_ns"]) if self._state is not None else start
        self._now_ns = self._start_ns
        end = parse_time_ns(scanner.metadata["end"]) if "end" in scanner.metadata else last_row
        self._stop_ns = max(end, last_row)
        self._peek()
        logger.info(
            "replaying %s for %s at %gx%s: %d edges to go, %d already counted",
            self.path,
            self.meter,
            self.speed,
            "" if in_order else " (sorted: its rows are out of order)",
            rows_total - self._skipped,
            self._skipped,
        )

    def _peek(self) -> bool:
        """Make sure a row is at hand; return False once the log has no more."""
        while self._position >= len(self._rows[0]):
            if self._stream is None:
                return False
            block = next(self._stream, None)
            if block is None:
                self._stream = None
                self._rows = _EMPTY
                self._position = 0
                return False
            self._rows = block
            self._position = 0
        return True

    def close(self) -> None:
        self.closed = True
        self._stream = None
        self._rows = _EMPTY
        if self._sorter is not None:
            self._sorter.close()  # its temporary files go
            self._sorter = None

    @property
    def finished(self) -> bool:
        return not self._peek() and self._now_ns >= self._stop_ns

    @property
    def skipped(self) -> int:
        return self._skipped

    def resume_state(self) -> dict[str, Any]:
        return {"now_ns": self._now_ns}

    def poll(self, mono_ns: int) -> Poll:
        self.check_open()
        if self._mono0_ns is None:
            self._mono0_ns = mono_ns
        asked_ns = min(self._stop_ns, self._start_ns + int((mono_ns - self._mono0_ns) * self.speed))
        self._now_ns = asked_ns
        parts: list[Rows] = []
        budget = MAX_EDGES_PER_POLL
        while budget and self._peek():
            t, channel, level = self._rows
            stop = int(np.searchsorted(t, self._now_ns, "right"))
            stop = min(max(stop, self._position), self._position + budget)
            if stop == self._position:
                break
            parts.append(
                (
                    t[self._position : stop],
                    channel[self._position : stop],
                    level[self._position : stop],
                )
            )
            budget -= stop - self._position
            self._position = stop
            if stop < len(t):
                break
        if not budget and self._peek() and int(self._rows[0][self._position]) <= self._now_ns:
            # Far behind (a high speed): hand over a bounded batch and hold the clock there.
            self._now_ns = int(parts[-1][0][-1])
        edges = [
            Edge(t, self.meter, CHANNEL_1K if c else CHANNEL_10, lv)
            for t_part, c_part, lv_part in parts
            for t, c, lv in zip(t_part.tolist(), c_part.tolist(), lv_part.tolist(), strict=True)
        ]
        return Poll(
            edges,
            self._now_ns,
            self.finished,
            behind_ns=asked_ns - self._now_ns,
            asked_ns=asked_ns - self._start_ns,
        )
