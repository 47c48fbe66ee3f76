"""Anomalies the core reports: what happened, when, on which channel, and what it implies."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class EventKind(StrEnum):
    MISMATCH = "mismatch"  # `10` and `1K` differ by 500 Wh or more
    COUNT = "count"  # not 100 `10` edges between consecutive `1K` edges
    COINCIDENCE = "coincidence"  # a `1K` edge with no `10` edge at the same time
    SILENT = "silent"  # a channel stopped while the other kept moving
    NOISE = "noise"  # edges faster than the meter can physically produce
    GLITCH = "glitch"  # levels shorter than the glitch width were removed
    INFERRED = "inferred"  # repeated levels: missed edges were counted back
    GAP = "gap"  # time when nothing was counted (the gateway was down)
    PEAK_RESET = "peak_reset"
    RESTART = "restart"  # the gateway started and resumed from the database
    LINK = "link"  # a source's link was lost or came back (serial heartbeats, a USB unplug)
    MODEL = "model"  # in simulation: the gateway's count differs from the model's register
    CLOCK_STEP = "clock_step"
    CAPTURE = "capture"  # the raw-edge capture failed (disk full, read-only) and was turned off
    STORAGE = "storage"  # the database failed (commits wait in memory) or came back
    CONFLICT = "conflict"  # another database publishes on this meter's MQTT topic (issue #17)


@dataclass(frozen=True, slots=True)
class Event:
    """One anomaly. ``channel`` is the one at fault when known; ``missed_wh`` what it implies."""

    t_ns: int
    kind: EventKind
    channel: str | None
    detail: str
    missed_wh: int = 0
