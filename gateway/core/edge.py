"""The edge: the one fact every source produces and every part of the gateway consumes."""

from __future__ import annotations

from dataclasses import dataclass

CHANNEL_10 = "10"
CHANNEL_1K = "1K"
CHANNELS = (CHANNEL_10, CHANNEL_1K)


@dataclass(frozen=True, slots=True, order=True)
class Edge:
    """One edge on one meter's output: when (UTC ns), which meter and channel, level after it."""

    t_ns: int
    meter: str
    channel: str
    level: int
