"""Publishing a meter's state: the published total's floor, in one place, for every publisher.

The total never goes backwards, across restarts too: Home Assistant reads a drop on a
total_increasing sensor as a meter reset and would count everything again. Only what the
database holds is published (edges counted since the last commit could still be lost to a
crash), never below what this publisher published before nor below what the broker retains of
THIS database's (a power cut that rolled it back to an older image): only a state it signed
counts, and that floor is never stored, for nothing received from the broker is (issue #17).
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.sinks.payloads import OwnState, state_payload
from gateway.sinks.payloads import energy_time_ns as retained_time_ns
from gateway.sinks.sink import MeterState, Sink

if TYPE_CHECKING:
    from gateway.checkpoint import MeterBatch

logger = logging.getLogger(__name__)


@dataclass
class _Published:
    """What a publisher published of one meter."""

    energy_wh: int = 0  # the highest total published so far (this database's own count)
    at_ns: int | None = None  # the meter's time that total is for
    holding: bool = False  # the total shown is held above the register


class Publisher(Sink):
    """A sink that publishes states: must implement :meth:`send_state` and :meth:`commit`."""

    enabled = True

    def __init__(self) -> None:
        self._published: dict[str, _Published] = {}

    def resume(self, meter: str, published_wh: int, register_wh: int) -> None:
        """Start from the total the database says was published of a meter."""
        if published_wh > register_wh:
            # Only an older version stored more than it counted: a total it took from the broker.
            logger.warning(
                "%s: the database says %d Wh was published, above its register %d Wh; that came "
                "from the broker, not from this meter, and is ignored",
                meter,
                published_wh,
                register_wh,
            )
            published_wh = register_wh
        self._published[meter] = _Published(published_wh)

    def published_wh(self, meter: str) -> int:
        """Return the highest total published of a meter (stored with each commit)."""
        published = self._published.get(meter)
        return 0 if published is None else published.energy_wh

    def retained_state(self, meter: str) -> OwnState | None:
        """Return this database's highest state the broker retains for a meter (None: none)."""
        return None

    def state_payload(self, state: MeterState) -> dict[str, Any] | None:
        """Return a meter's state message, or None while it has no total to show yet."""
        published = self._published.setdefault(state.meter, _Published())
        committed = min(state.reading.energy_wh, state.committed_wh)
        own = self.retained_state(state.meter)
        floor = max(published.energy_wh, own.energy_wh if own is not None else 0)
        energy_wh = max(committed, floor)
        if energy_wh == 0:
            return None  # never a zero or unknown total at start-up
        if committed < floor:
            if not published.holding:  # said once a hold, not at every state
                logger.warning(
                    "%s: register %d Wh is below the %d Wh already published; holding until "
                    "it is above",
                    state.meter,
                    committed,
                    floor,
                )
            published.holding = True
            # The total shown was reached before, at the time its own state said.
            if own is not None and energy_wh == own.energy_wh:
                energy_time_ns = retained_time_ns(own)
            else:
                energy_time_ns = published.at_ns
        else:
            published.holding = False
            energy_time_ns = state.committed_at_ns
            published.energy_wh = energy_wh  # this database's own count, and only that
            published.at_ns = energy_time_ns
        return state_payload(state.reading, energy_wh, state.quality, energy_time_ns)

    def publish(self, state: MeterState) -> None:
        """Send a meter's state, never below the floor."""
        payload = self.state_payload(state)
        if payload is not None:
            self.send_state(state.meter, payload)

    @abstractmethod
    def send_state(self, meter: str, payload: dict[str, Any]) -> None:
        """Send a state message (already floored)."""

    @property
    def connected(self) -> bool:
        """Whether what is published reaches anyone now."""
        return False


class NullPublisher(Publisher):
    """The publisher when MQTT is off: it publishes nothing, so its floor never moves."""

    enabled = False

    def commit(self, batches: Sequence[MeterBatch], now_ns: int, *, stamp: bool = False) -> None:
        """Nothing waits to be published."""

    def publish(self, state: MeterState) -> None:
        """Publish nothing."""

    def send_state(self, meter: str, payload: dict[str, Any]) -> None:
        """Send nothing."""
