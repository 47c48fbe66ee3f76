"""Read a pulse log back as edges, through the gateway's own scanner (for assertions)."""

from __future__ import annotations

from pathlib import Path

from gateway.core.edge import CHANNELS, Edge
from gateway.pulselog.scan import LogScanner


def read_log(path: str | Path) -> list[Edge]:
    """Return every row of a pulse log, in file order."""
    return read_log_and_metadata(path)[0]


def read_log_and_metadata(path: str | Path) -> tuple[list[Edge], dict[str, str]]:
    """Return every row of a pulse log, in file order, and its ``start=``/``end=`` metadata."""
    scanner = LogScanner(str(path))
    edges = []
    for chunk in scanner.chunks():
        for t, meter, channel, level in zip(
            chunk.t_ns.tolist(),
            chunk.meter.tolist(),
            chunk.channel.tolist(),
            chunk.level.tolist(),
            strict=True,
        ):
            edges.append(Edge(t, scanner.meters[meter], CHANNELS[channel], level))
    return edges, scanner.metadata
