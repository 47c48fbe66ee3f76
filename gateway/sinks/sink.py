"""What a sink is: where the loop sends what its meters produced.

A backend **must** implement:

- :meth:`Sink.commit`: take every meter's :class:`~gateway.checkpoint.MeterBatch` of one commit;
  raise :class:`~gateway.errors.SinkError` if they could not be kept (the loop keeps them and
  tries again), never half of them;
- :meth:`Sink.publish`: take a meter's :class:`MeterState` (what the database holds of it now).

It **may** override:

- :meth:`Sink.start`: begin working (connect in the background); the default does nothing;
- :meth:`Sink.pump`: act on what arrived meanwhile, on the loop's thread; return the commands
  received for the meters (the default: none);
- :meth:`Sink.take_conflicts`: (meter, detail) of each other publisher seen as this gateway;
- :meth:`Sink.tell`: say an event at once, outside any commit (the database itself fails);
- :meth:`Sink.close`: release what it holds; safe to call twice.

A sink is a context manager that closes on exit. The backends: the store
(:class:`~gateway.sinks.store.Store`), the MQTT publisher
(:class:`~gateway.sinks.mqtt.MqttPublisher`) and, with MQTT off,
:class:`~gateway.sinks.publisher.NullPublisher`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from gateway.core.events import Event
from gateway.core.meter import Reading

if TYPE_CHECKING:
    from gateway.checkpoint import MeterBatch


@dataclass(frozen=True)
class MeterState:
    """A meter as it may be published: its reading now, and what the database holds of it."""

    meter: str
    reading: Reading
    committed_wh: int  # the register as the database holds it: nothing above may be shown
    committed_at_ns: int | None  # the meter's time that committed register is for
    quality: str


@dataclass(frozen=True)
class Command:
    """A command received for a meter."""

    meter: str
    name: str
    payload: str


class Sink(ABC):
    """Where results go; see the module docstring for what a backend must and may do."""

    @abstractmethod
    def commit(self, batches: Sequence[MeterBatch], now_ns: int, *, stamp: bool = False) -> Any:
        """Keep every meter's batch of one commit, all or none (``stamp``: see Store.commit)."""

    @abstractmethod
    def publish(self, state: MeterState) -> None:
        """Take a meter's state."""

    def start(self) -> None:  # noqa: B027 - may be overridden, need not be
        """Begin working."""

    def pump(self) -> list[Command]:
        """Act on what arrived meanwhile; return the commands received."""
        return []

    def take_conflicts(self) -> list[tuple[str, str]]:
        """Return (meter, detail) of each conflict noticed since the last call."""
        return []

    def tell(self, meter: str, event: Event) -> None:  # noqa: B027 - may be overridden
        """Say an event at once, outside any commit."""

    def close(self) -> None:  # noqa: B027 - may be overridden, need not be
        """Release what the sink holds."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
