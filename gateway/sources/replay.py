"""The ``replay`` source: a captured pulse log played back live, paced at ``speed``.

Reading the log is :mod:`gateway.pulselog.scan`'s job; this module only paces it (as python-can
keeps reading in ``can/io`` and pacing in ``can/io/player.py``). After a restart it skips every edge
the database says was already seen (per channel, at or before the last stored edge) and continues
the replay clock where it stopped, so a log is counted exactly once whatever happens.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from gateway.config import check_readable
from gateway.core.edge import CHANNEL_1K, CHANNEL_10, Edge
from gateway.core.hygiene import skip_seen
from gateway.errors import ConfigError, SourceError
from gateway.pulselog.scan import LogScanner, order_rows
from gateway.sources import SPEED_RANGE, Poll, Source, SourceContext, SourceSettings, SourceStart
from gateway.timefmt import parse_time_ns

if TYPE_CHECKING:
    from gateway.config import MeterSettings

__all__ = ["ReplaySettings", "ReplaySource"]

logger = logging.getLogger(__name__)

MAX_EDGES_PER_POLL = 20_000


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
        self._t = np.empty(0, np.int64)
        self._channel = np.empty(0, np.int8)
        self._level = np.empty(0, np.int8)
        self._position = 0
        self._start_ns = 0
        self._mono0_ns: int | None = None
        self._now_ns = 0
        self._stop_ns = 0

    def open(self) -> None:
        scanner = LogScanner(self.path)
        parts = []
        for chunk in scanner.chunks():
            ids = [i for i, name in enumerate(scanner.meters) if name == self.meter]
            if not ids:
                continue
            rows = chunk.meter == ids[0]
            parts.append((chunk.t_ns[rows], chunk.channel[rows], chunk.level[rows]))
        if not parts:
            raise SourceError(f"{self.path}: no rows for meter {self.meter!r}")
        t = np.concatenate([p[0] for p in parts])
        channel = np.concatenate([p[1] for p in parts])
        level = np.concatenate([p[2] for p in parts])
        first_row, last_row = int(t.min()), int(t.max())
        blocks = []
        for code, name in ((0, CHANNEL_10), (1, CHANNEL_1K)):
            on = channel == code
            block_t, block_lv = order_rows(t[on], level[on])
            block_t, block_lv, skipped = skip_seen(self.resume.get(name), block_t, block_lv)
            self._skipped += skipped
            blocks.append((block_t, np.full(len(block_t), code, np.int8), block_lv))
        t = np.concatenate([b[0] for b in blocks])
        # Merge the two sorted channels by time, `10` first at equal times (as the meter does).
        order = np.argsort(t, kind="stable")
        self._t = t[order]
        self._channel = np.concatenate([b[1] for b in blocks])[order]
        self._level = np.concatenate([b[2] for b in blocks])[order]
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
        logger.info(
            "replaying %s for %s at %gx: %d edges to go, %d already counted",
            self.path,
            self.meter,
            self.speed,
            len(self._t),
            self._skipped,
        )

    def close(self) -> None:
        self.closed = True

    @property
    def finished(self) -> bool:
        return self._position >= len(self._t) and self._now_ns >= self._stop_ns

    @property
    def skipped(self) -> int:
        return self._skipped

    def resume_state(self) -> dict[str, Any]:
        return {"now_ns": self._now_ns}

    def poll(self, mono_ns: int) -> Poll:
        self.check_open()
        if self._mono0_ns is None:
            self._mono0_ns = mono_ns
        self._now_ns = min(
            self._stop_ns, self._start_ns + int((mono_ns - self._mono0_ns) * self.speed)
        )
        stop = int(np.searchsorted(self._t, self._now_ns, "right"))
        if stop - self._position > MAX_EDGES_PER_POLL:
            # Far behind (a high speed): hand over a bounded batch and hold the clock there.
            stop = self._position + MAX_EDGES_PER_POLL
            self._now_ns = int(self._t[stop - 1])
        edges = [
            Edge(t, self.meter, CHANNEL_1K if c else CHANNEL_10, lv)
            for t, c, lv in zip(
                self._t[self._position : stop].tolist(),
                self._channel[self._position : stop].tolist(),
                self._level[self._position : stop].tolist(),
                strict=True,
            )
        ]
        self._position = max(self._position, stop)
        return Poll(edges, self._now_ns, self.finished)
