"""Where edges come from: one module per backend, behind one small interface.

:class:`Source` is the template every backend fills in, as gpiozero's ``Pin`` is for its pin
factories. The service's main loop polls each source and never blocks on it.

A backend **must** provide:

- ``meter``: the name of the meter whose edges it gives;
- :meth:`Source.open`: acquire the hardware or file; raise ``SourceError`` (or ``ConfigError``
  for a bad key);
- :meth:`Source.poll`: the edges that happened since the last poll, in time order per channel,
  each stamped with the time it happened (not when it was handled) and unfiltered (filtering is
  the core's), and the source's "now": wall-clock UTC for hardware, the simulated or replayed
  clock for the others. ``mono_ns`` is the service's monotonic clock, which simulated and
  replayed sources pace themselves by;
- :meth:`Source.close`: release everything; safe to call twice.

A backend **may** override (the defaults suit a source that needs none of it):

- ``live`` (False): True when its clock is the wall clock (GPIO, serial). A live source's meter
  was not watched while the gateway was down, which the service records as a gap; only live
  sources set the floor of the gateway's timeline;
- :attr:`Source.initial_levels` (``{}``): each channel's line level read at :meth:`open`, so a line
  already high at start is not counted as an edge;
- :attr:`Source.skipped` (0): edges it left out as already counted before a restart;
- :meth:`Source.resume_state` (None): JSON-able data stored with every commit and handed back to
  the backend's constructor after a restart (a simulated clock, a replay position);
- :attr:`Source.checker` (None): a :class:`Checker` comparing what the core counted with what the
  source knows independently (the simulated meter's own register).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from gateway.core.edge import Edge
from gateway.core.events import Event

if TYPE_CHECKING:
    from gateway.core.meter import MeterCore


@dataclass(frozen=True)
class Poll:
    """What one poll of a source returns."""

    edges: Sequence[Edge]
    now_ns: int
    finished: bool = False  # a replay that reached the end of its log
    events: Sequence[Event] = ()  # what the source itself noticed (a serial link lost, ...)
    gaps: Sequence[tuple[int, int, str]] = ()  # (from, to, why): time nothing was watched
    # A paced source (replay, simulate) that cannot keep up: how far its clock is behind the
    # time its speed asks for, and how much source time that speed has asked for since it
    # started (0: on pace).
    behind_ns: int = 0
    asked_ns: int = 0


class Checker(Protocol):
    """Compares a core's count with an independent one; returns events for disagreements."""

    def check(self, core: MeterCore) -> Sequence[Event]: ...


class Source:
    """One meter's edges (see the module docstring for what a backend must and may provide)."""

    meter: str
    live: ClassVar[bool] = False
    checker: Checker | None = None

    def open(self) -> None:
        raise NotImplementedError

    def poll(self, mono_ns: int) -> Poll:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    @property
    def initial_levels(self) -> Mapping[str, int]:
        return {}

    @property
    def skipped(self) -> int:
        return 0

    def resume_state(self) -> dict[str, Any] | None:
        return None
