"""Capture: every raw edge the daemon receives, before any filtering, as pulse logs.

Files are ``capture-YYYYMMDDTHHMMSSZ-METER.csv.gz`` in ``[gateway] capture_dir``, one per meter,
in the SPEC section 3 format (so ``amr-gateway replay`` reads them back). Each meter's files are
named and stamped in that meter's own clock: the wall clock for GPIO and serial, the simulated or
replayed clock for the others (a file stamped in wall time would make a replay of a simulated
meter's edges invent hours of empty intervals, issue #11). A new file starts at each start of the
gateway, at each UTC midnight (by edge time) and on SIGHUP (for log rotation tools); files older
than ``capture_keep_days`` are deleted. Each file carries ``start=`` metadata and, when it is
closed (a stop, midnight, SIGHUP), an ``end=`` line as its last, so consecutive files touch and a
replay of them sees no hole, while the time a crashed or stopped gateway did not watch stays a
gap between them (SPEC 2). Files are flushed at every commit, so a crash loses at most what the
database also lost; the reader takes what a truncated last gzip block held.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gateway.core.edge import Edge
from gateway.errors import ConfigError, os_errors
from gateway.pulselog import PulseLogWriter
from gateway.timefmt import NS_PER_S, format_iso
from gateway.trouble import Trouble

logger = logging.getLogger(__name__)

DAY_NS = 86_400 * NS_PER_S


@dataclass
class _File:
    """One meter's open capture file."""

    writer: PulseLogWriter
    day: int
    path: Path


class Capture:
    """Write raw edges to daily gzip pulse logs, one file per meter."""

    def __init__(self, directory: str, keep_days: int, gateway_id: str) -> None:
        self.directory = Path(directory)
        self.keep_days = keep_days
        self.gateway_id = gateway_id
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"gateway.capture_dir {directory}: {exc.strerror or exc}") from None
        if not os.access(self.directory, os.W_OK):
            raise ConfigError(f"gateway.capture_dir {directory}: not writable")
        self._files: dict[str, _File] = {}
        # Pruning runs at every new file, for every meter: a file that cannot go is said once.
        self._pruning = Trouble(logger, "pruning old capture files", level=logging.WARNING)

    @property
    def paths(self) -> list[Path]:
        """The files open now."""
        return [f.path for f in self._files.values()]

    def _open(self, meter: str, t_ns: int) -> _File:
        self._close(meter)
        stamp = datetime.fromtimestamp(t_ns // NS_PER_S, tz=UTC).strftime("%Y%m%dT%H%M%SZ")
        path = self.directory / f"capture-{stamp}-{meter}.csv.gz"
        n = 1
        while path.exists():
            path = self.directory / f"capture-{stamp}-{meter}-{n}.csv.gz"
            n += 1
        comments = [
            f"amr-gateway capture gateway={self.gateway_id} meter={meter}",
            f"start={format_iso(t_ns)}",
        ]
        opened = self._files[meter] = _File(PulseLogWriter(path, comments), t_ns // DAY_NS, path)
        logger.info("capturing %s's raw edges to %s", meter, path)
        self.prune()
        return opened

    def write(self, edges: Sequence[Edge], now_ns: int) -> None:
        """Append one meter's raw edges (in time order), ``now_ns`` in that meter's clock; start
        a new file at UTC midnight. A file that cannot be written raises SinkError."""
        with os_errors(f"capture {self.directory}"):
            start = 0
            while start < len(edges):
                meter, first = edges[start].meter, edges[start].t_ns
                current = self._files.get(meter)
                if current is None:
                    current = self._open(meter, min(now_ns, first))
                elif first // DAY_NS != current.day:
                    # Watched without a break: the old file ends and the new one starts at
                    # midnight.
                    midnight = first // DAY_NS * DAY_NS
                    self._close(meter, midnight)
                    current = self._open(meter, midnight)
                stop = start + 1
                while (
                    stop < len(edges)
                    and edges[stop].meter == meter
                    and edges[stop].t_ns // DAY_NS == current.day
                ):
                    stop += 1
                current.writer.write_edges(edges[start:stop])
                start = stop

    def flush(self) -> None:
        with os_errors(f"capture {self.directory}"):
            for current in self._files.values():
                current.writer.flush()

    def reopen(self, now_by_meter: Mapping[str, int]) -> None:
        """Start new files (SIGHUP), each at its meter's "now": the old ones can be moved away."""
        with os_errors(f"capture {self.directory}"):
            for meter in list(self._files):
                if meter in now_by_meter:
                    self._close(meter, now_by_meter[meter])
                    self._open(meter, now_by_meter[meter])

    def prune(self, now_s: float | None = None) -> list[Path]:
        """Delete capture files older than ``keep_days``; return what was deleted."""
        cutoff = (time.time() if now_s is None else now_s) - self.keep_days * 86_400
        removed = []
        failed: list[tuple[Path, OSError]] = []
        open_now = set(self.paths)
        for path in self.directory.glob("capture-*.csv.gz"):
            if path in open_now:
                continue
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed.append(path)
            except OSError as exc:
                failed.append((path, exc))
        if failed:
            first, error = failed[0]
            self._pruning.failed(
                "could not prune %d old capture file(s), %s the first: %s",
                len(failed),
                first,
                error.strerror or error,
            )
        else:
            self._pruning.cleared()
        return removed

    def _close(self, meter: str, end_ns: int | None = None) -> None:
        """Close a meter's file; ``end_ns``: watched until then, written as ``end=``."""
        current = self._files.pop(meter, None)
        if current is not None:
            with os_errors(f"capture {current.path}"):
                if end_ns is not None:
                    current.writer.write_comment(f"end={format_iso(end_ns)}")
                current.writer.close()

    def close(self, now_by_meter: Mapping[str, int] | None = None) -> None:
        """Close every file, each ending at its meter's "now" when given."""
        for meter in list(self._files):
            self._close(meter, (now_by_meter or {}).get(meter))
