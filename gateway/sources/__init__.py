"""Where edges come from: one module per source, one interface.

A source is polled by the service's main loop and never blocks it:

- ``open()`` acquires the hardware or file; it raises SourceError (or ConfigError for a bad key).
- ``poll(mono_ns)`` returns the edges that happened since the last poll, in time order per
  channel, and the source's "now": wall-clock UTC for hardware, the simulated or replayed clock
  for the others. ``mono_ns`` is the service's monotonic clock, which simulated sources pace by.
- ``close()`` releases everything; it is safe to call twice.

A source must: stamp each edge with the time it happened (not when it was handled), and report
every edge it saw, unfiltered; filtering belongs to the core.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.core.edge import Edge
from gateway.core.events import Event


@dataclass(frozen=True)
class Poll:
    """What one poll of a source returns."""

    edges: Sequence[Edge]
    now_ns: int
    finished: bool = False  # a replay that reached the end of its log
    events: Sequence[Event] = ()  # what the source itself noticed (a serial link lost, ...)
    gaps: Sequence[tuple[int, int, str]] = ()  # (from, to, why): time nothing was watched


class Source(Protocol):
    """One meter's edges (see the module docstring for the contract)."""

    meter: str

    def open(self) -> None: ...

    def poll(self, mono_ns: int) -> Poll: ...

    def close(self) -> None: ...
