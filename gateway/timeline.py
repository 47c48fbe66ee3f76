"""The gateway's timeline: UTC nanoseconds that never run backwards.

Edges are stamped from the monotonic clock (GPIO ticks, serial heartbeats), anchored to the wall
clock. A Raspberry Pi without a real-time clock boots with a stale time and steps it when NTP
answers; the timeline notices the step on the next check and re-anchors forward, so intervals are
labelled in true UTC from then on, while the energy counted is untouched (it is integer edges,
whatever their labels). A backward step is reported but not followed: timestamps keep running
forward from where they were, because going back would make new edges look older than counted
ones. Each step is logged here, and recorded as an event of every live meter by its pipeline.

The timeline starts no earlier than a floor (the last edge already counted). Once the system
clock is known to be synchronised (systemd-timesyncd's flag), the floor may lift it at most
``FLOOR_LEAD_NS`` above the wall clock: a stored time in the future (an earlier bug, a clock that
was wrong) must not drag every later timestamp into the future with it. Before that, a clock
behind the last counted edge is more likely stale (a Pi without a real-time clock, booted after
a power cut with fake-hwclock's time) than the edge wrong, so the floor holds, and the timeline
follows the clock forward when NTP steps it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

STEP_THRESHOLD_NS = 2_000_000_000
# How far the floor may lift the timeline above the wall clock: the NTP step threshold, so that
# a floor the timeline may follow is never taken for a clock step.
FLOOR_LEAD_NS = 2_000_000_000
SYNCHRONIZED_FLAG = "/run/systemd/timesync/synchronized"


def clock_synchronized() -> bool:
    """Return whether systemd-timesyncd has synchronised the system clock since boot.

    A file test, not adjtimex(2): the unit's ProtectClock= forbids the clock system calls.
    """
    return os.path.exists(SYNCHRONIZED_FLAG)


@dataclass(frozen=True)
class ClockStep:
    """The wall clock moved by ``delta_ns`` relative to the timeline, at timeline time ``at_ns``."""

    at_ns: int
    delta_ns: int
    followed: bool

    @property
    def followed_to_ns(self) -> int | None:
        """Return the time the intervals now follow (None: not followed); the labels between
        ``at_ns`` and it were never real time."""
        return self.at_ns + self.delta_ns if self.followed else None

    @property
    def detail(self) -> str:
        """Return what a meter's clock_step event says of the step."""
        return f"system clock stepped by {self.delta_ns / 1e9:+.3f} s; " + (
            "intervals now follow it" if self.followed else "timestamps keep running on"
        )

    def log(self) -> None:
        """Say the step in the log, once, where the timeline notices it."""
        seconds = self.delta_ns / 1e9
        if self.followed:
            logger.warning("the system clock stepped forward by %.1f s; timestamps follow", seconds)
        else:
            logger.warning(
                "the system clock stepped back by %.1f s; timestamps keep running forward",
                -seconds,
            )


class Timeline:
    """Map monotonic time to UTC; re-anchor when the wall clock steps forward."""

    def __init__(
        self,
        *,
        wall_ns: Callable[[], int] = time.time_ns,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        floor_ns: int = 0,
        threshold_ns: int = STEP_THRESHOLD_NS,
        synchronized: Callable[[], bool] = clock_synchronized,
    ) -> None:
        self._wall_ns = wall_ns
        self._monotonic_ns = monotonic_ns
        self.threshold_ns = threshold_ns
        mono = monotonic_ns()
        wall = wall_ns()
        if floor_ns > wall + FLOOR_LEAD_NS:
            lead_s = (floor_ns - wall) / 1e9
            if synchronized():
                logger.warning(
                    "the last counted edge is %.1f s ahead of the system clock, which is "
                    "synchronised; the timeline starts %.1f s ahead instead",
                    lead_s,
                    FLOOR_LEAD_NS / 1e9,
                )
                floor_ns = wall + FLOOR_LEAD_NS
            else:
                logger.warning(
                    "the system clock is %.1f s behind the last counted edge and not known to be "
                    "synchronised; timestamps go on from that edge until the clock catches up",
                    lead_s,
                )
        # Never start behind what was already counted (a clock that lost time while we slept).
        self._anchor_wall = max(wall, floor_ns)
        self._anchor_mono = mono
        self._reported_back = False

    def from_monotonic(self, mono_ns: int) -> int:
        """Return the UTC time of a monotonic instant."""
        return self._anchor_wall + (mono_ns - self._anchor_mono)

    def now(self) -> int:
        return self.from_monotonic(self._monotonic_ns())

    def monotonic_ns(self) -> int:
        """Return the monotonic clock the timeline is built on."""
        return self._monotonic_ns()

    def check(self) -> ClockStep | None:
        """Compare with the wall clock; follow a forward step, report a backward one once."""
        mono = self._monotonic_ns()
        timeline = self.from_monotonic(mono)
        wall = self._wall_ns()
        delta = wall - timeline
        step = None
        if delta > self.threshold_ns:
            self._anchor_wall, self._anchor_mono = wall, mono
            self._reported_back = False
            step = ClockStep(timeline, delta, True)
        elif delta < -self.threshold_ns and not self._reported_back:
            self._reported_back = True
            step = ClockStep(timeline, delta, False)
        elif abs(delta) <= self.threshold_ns:
            self._reported_back = False
        if step is not None:
            step.log()
        return step
