"""Capture: every raw edge the daemon receives, before any filtering, as pulse logs.

Files are ``capture-YYYYMMDDTHHMMSSZ.csv.gz`` in ``[gateway] capture_dir``, in the SPEC section 3
format (so ``amr-gateway replay`` reads them back). A new file starts at each start of the
gateway, at each UTC midnight (by edge time) and on SIGHUP (for log rotation tools); files older
than ``capture_keep_days`` are deleted. Each file carries ``start=`` metadata and is flushed at
every commit, so a crash loses at most what the database also lost; the reader takes what a
truncated last gzip block held.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from gateway.core.edge import Edge
from gateway.errors import ConfigError
from gateway.pulselog import PulseLogWriter
from gateway.sinks.failures import sink_errors
from gateway.timefmt import NS_PER_S, format_iso

logger = logging.getLogger(__name__)

NAME_RE = re.compile(r"^capture-(\d{8}T\d{6}Z)\.csv\.gz$")
DAY_NS = 86_400 * NS_PER_S


class Capture:
    """Write raw edges to daily gzip pulse logs."""

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
        self._writer: PulseLogWriter | None = None
        self._day: int | None = None
        self.path: Path | None = None

    def _open(self, t_ns: int) -> None:
        self.close()
        stamp = datetime.fromtimestamp(t_ns // NS_PER_S, tz=UTC).strftime("%Y%m%dT%H%M%SZ")
        path = self.directory / f"capture-{stamp}.csv.gz"
        n = 1
        while path.exists():
            path = self.directory / f"capture-{stamp}-{n}.csv.gz"
            n += 1
        comments = [
            f"amr-gateway capture gateway={self.gateway_id}",
            f"start={format_iso(t_ns)}",
        ]
        self._writer = PulseLogWriter(path, comments)
        self._day = t_ns // DAY_NS
        self.path = path
        logger.info("capturing raw edges to %s", path)
        self.prune()

    def write(self, edges: Sequence[Edge], now_ns: int) -> None:
        """Append raw edges (in time order); start a new file at UTC midnight.

        A file that cannot be written (disk full, read-only) raises SinkError.
        """
        with sink_errors(f"capture {self.path or self.directory}"):
            self._write(edges, now_ns)

    def _write(self, edges: Sequence[Edge], now_ns: int) -> None:
        start = 0
        while start < len(edges):
            first = edges[start].t_ns
            if self._writer is None or first // DAY_NS != self._day:
                self._open(first if self._writer is not None else now_ns)
            assert self._writer is not None and self._day is not None
            stop = start + 1
            while stop < len(edges) and edges[stop].t_ns // DAY_NS == self._day:
                stop += 1
            self._writer.write_edges(edges[start:stop])
            start = stop

    def flush(self) -> None:
        if self._writer is not None:
            with sink_errors(f"capture {self.path}"):
                self._writer.flush()

    def reopen(self, now_ns: int) -> None:
        """Start a new file (SIGHUP): the old one can be moved or compressed away."""
        with sink_errors(f"capture {self.directory}"):
            self._open(now_ns)

    def prune(self, now_s: float | None = None) -> list[Path]:
        """Delete capture files older than ``keep_days``; return what was deleted."""
        cutoff = (time.time() if now_s is None else now_s) - self.keep_days * 86_400
        removed = []
        for path in self.directory.glob("capture-*.csv.gz"):
            if path == self.path:
                continue
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed.append(path)
            except OSError:
                logger.warning("could not prune %s", path, exc_info=True)
        return removed

    def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            with sink_errors(f"capture {self.path}"):
                writer.close()
