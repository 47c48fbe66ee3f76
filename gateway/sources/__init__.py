"""Where edges come from: one module per backend, behind one small interface, found by name.

:class:`Source` is the abstract base every backend fills in, as python-can's ``BusABC`` is for its
interfaces; :data:`BACKENDS` maps each ``source = "..."`` name to the module and class that
implement it, as python-can's ``can/interfaces/__init__.py`` does. Nothing else in the tree lists
the backends: a new source is one module plus one line in :data:`BACKENDS`::

    BACKENDS = {
        ...
        "modbus": ("gateway.sources.modbus", "ModbusSource"),
    }

The service's main loop polls each source and never blocks on it. A source is a context
manager: ``with source:`` opens it and closes it.

A backend **must** provide:

- ``settings_type``: a frozen dataclass subclassing :class:`SourceSettings`, holding the keys of a
  ``[[meters]]`` table only this backend takes (the configuration accepts exactly its fields);
- :meth:`Source.from_settings`: build the source for a configured meter from its settings, a
  :class:`SourceStart` (the model, the start time, what the last commit stored) and the
  :class:`SourceContext` sources share;
- ``meter``: the name of the meter whose edges it gives;
- :meth:`Source.open`: acquire the hardware or file; raise ``SourceError`` (or ``ConfigError``
  for a bad key);
- :meth:`Source.poll`: the edges that happened since the last poll, in time order per channel,
  each stamped with the time it happened (not when it was handled) and unfiltered (filtering is
  the core's), and the source's "now": wall-clock UTC for hardware, the simulated or replayed
  clock for the others. ``mono_ns`` is the service's monotonic clock, which simulated and
  replayed sources pace themselves by. "Now" never goes back. A poll after :meth:`close` raises
  :class:`~gateway.errors.SourceClosedError` (call :meth:`check_open` first);
- :meth:`Source.close`: release everything and set ``closed``; safe to call twice.

tests/contract/test_sources.py runs every backend in :data:`BACKENDS` through this contract.

A backend **may** override (the defaults suit a source that needs none of it):

- ``live`` (False): True when its clock is the wall clock (GPIO, serial). A live source's meter
  was not watched while the gateway was down, which the service records as a gap; only live
  sources set the floor of the gateway's timeline;
- :meth:`Source.check_host` and :meth:`Source.check_inputs`: start-up checks, before anything is
  created (a library missing, a file or port that is not there);
- :attr:`Source.initial_levels` (``{}``): each channel's line level read at :meth:`open`, so a line
  already high at start is not counted as an edge;
- :attr:`Source.skipped` (0): edges it left out as already counted before a restart;
- :meth:`Source.resume_state` (None): JSON-able data stored with every commit and handed back to
  the backend's constructor after a restart (a simulated clock, a replay position);
- :attr:`Source.checker` (None): a :class:`Checker` comparing what the core counted with what the
  source knows independently (the simulated meter's own register).

A backend's :class:`SourceSettings` may override :meth:`~SourceSettings.check` (keys required
together), :meth:`~SourceSettings.register_channel` (the output whose count is the meter's
register) and :meth:`~SourceSettings.claims` (inputs only one meter may use); a field's
``metadata={"range": (lo, hi)}`` bounds its value, inclusive. A backend whose channels are
numbered lines (pins, a board's inputs) subclasses :class:`WiredSettings`, which does all three.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from gateway.core.edge import CHANNEL_1K, CHANNEL_10, Edge
from gateway.core.events import Event
from gateway.errors import ConfigError, SourceClosedError

if TYPE_CHECKING:
    from gateway.config import MeterSettings
    from gateway.core.meter import MeterCore
    from gateway.timeline import Timeline
    from meter_model import MeterConfig

__all__ = [
    "BACKENDS",
    "MAX_SPEED",
    "SPEED_RANGE",
    "Checker",
    "Gap",
    "Poll",
    "Source",
    "SourceContext",
    "SourceSettings",
    "SourceStart",
    "WiredSettings",
    "is_live",
    "source_class",
]

# source name -> (module, class): the one list of backends. Modules are imported when a meter
# names them, so a gateway without GPIO never imports gpiozero.
BACKENDS: dict[str, tuple[str, str]] = {
    "gpio": ("gateway.sources.gpio", "GpioSource"),
    "serial": ("gateway.sources.serial", "SerialSource"),
    "simulate": ("gateway.sources.simulate", "SimulateSource"),
    "replay": ("gateway.sources.replay", "ReplaySource"),
}


# A million times real time replays a year in 32 s: faster only starves the loop and memory.
MAX_SPEED = 1e6
SPEED_RANGE = {"range": (1e-6, MAX_SPEED)}  # a paced source's ``speed`` key


def source_class(name: str) -> type[Source]:
    """Return the backend registered as ``name``; ConfigError naming the known ones if none."""
    try:
        module, cls = BACKENDS[name]
    except (KeyError, TypeError):  # TypeError: not a string at all (a TOML list, a table)
        raise ConfigError(f"source: {name!r} is not one of {', '.join(BACKENDS)}") from None
    found: type[Source] = getattr(importlib.import_module(module), cls)
    return found


def is_live(name: str) -> bool:
    """Return whether the backend ``name`` runs on the wall clock (False for an unknown name)."""
    return name in BACKENDS and source_class(name).live


@dataclass(frozen=True)
class Gap:
    """Time nothing was watched, from ``from_ns`` to ``to_ns``, and why."""

    from_ns: int
    to_ns: int
    why: str


@dataclass(frozen=True)
class Poll:
    """What one poll of a source returns."""

    edges: Sequence[Edge]
    now_ns: int
    finished: bool = False  # a replay that reached the end of its log
    events: Sequence[Event] = ()  # what the source itself noticed (a serial link lost, ...)
    gaps: Sequence[Gap] = ()  # time nothing was watched
    # A paced source (replay, simulate) that cannot keep up: how far its clock is behind the
    # time its speed asks for, and how much source time that speed has asked for since it
    # started (0: on pace).
    behind_ns: int = 0
    asked_ns: int = 0


class Checker(Protocol):
    """Compares a core's count with an independent one; returns events for disagreements."""

    def check(self, core: MeterCore) -> Sequence[Event]: ...


@dataclass(frozen=True)
class SourceSettings:
    """A backend's own keys in a ``[[meters]]`` table (none by default)."""

    def check(self, where: str) -> None:
        """Raise ConfigError naming ``where.key`` when keys required together are missing."""

    def register_channel(self) -> str | None:
        """Return the channel whose count is the meter's register (None: the core's default)."""
        return None

    def claims(self) -> Iterator[tuple[str, tuple[str, ...]]]:
        """Yield (key, resource) for each input this meter alone may use (a pin, a board's
        input)."""
        return iter(())


@dataclass(frozen=True)
class WiredSettings(SourceSettings):
    """Settings of a backend whose channels are wired to numbered lines (a pin, an input):
    ``wired_keys`` names the keys of the `10` and `1K` lines, of which one at least is set."""

    wired_keys: ClassVar[tuple[str, str]]

    def wired(self) -> dict[str, int]:
        """Return the line of each wired channel."""
        numbers = (getattr(self, key) for key in self.wired_keys)
        lines = zip((CHANNEL_10, CHANNEL_1K), numbers, strict=True)
        return {channel: number for channel, number in lines if number is not None}

    def line(self, number: int) -> tuple[str, ...]:
        """Return what names line ``number`` among every meter's (``("gpio", "17")``)."""
        raise NotImplementedError

    def check(self, where: str) -> None:
        if not self.wired():
            key_10, key_1k = self.wired_keys
            raise ConfigError(
                f"{where}.{key_10}: a {self.line(0)[0]} meter needs {key_10} or {key_1k}"
            )

    def register_channel(self) -> str:
        return CHANNEL_10 if CHANNEL_10 in self.wired() else CHANNEL_1K

    def claims(self) -> Iterator[tuple[str, tuple[str, ...]]]:
        keys = dict(zip((CHANNEL_10, CHANNEL_1K), self.wired_keys, strict=True))
        for channel, number in self.wired().items():
            yield keys[channel], self.line(number)


@dataclass(frozen=True)
class SourceStart:
    """Where a meter's source starts: its model, the time, and what the last commit stored.

    ``source_state`` is what :meth:`Source.resume_state` gave at the last commit, ``last_seen``
    the last edge the core saw per channel: a resumed source continues from them.
    """

    model: MeterConfig
    start_ns: int
    source_state: dict[str, Any] | None = None
    last_seen: Mapping[str, tuple[int, int]] = field(default_factory=dict)


@dataclass
class SourceContext:
    """What sources share: the timeline, serial boards by port, a GPIO pin factory for tests."""

    timeline: Timeline
    pin_factory: Any = None
    boards: dict[str, Any] = field(default_factory=dict)
    serial_opener: Any = None


class Source(ABC):
    """One meter's edges (see the module docstring for what a backend must and may provide)."""

    meter: str
    settings_type: ClassVar[type[SourceSettings]] = SourceSettings
    live: ClassVar[bool] = False
    checker: Checker | None = None
    closed: bool = False

    @classmethod
    @abstractmethod
    def from_settings(
        cls, settings: MeterSettings, start: SourceStart, context: SourceContext
    ) -> Source:
        """Return the source for a configured meter, starting (or resuming) at ``start``."""

    @classmethod
    def check_host(cls) -> None:
        """Raise ConfigError when this machine cannot run the backend (a library missing)."""
        return None  # most backends need nothing of the host

    @classmethod
    def check_inputs(cls, settings: MeterSettings, where: str, *, ports: bool = True) -> None:
        """Raise ConfigError (or PulseLogError) for a file or port ``settings`` names that cannot
        be used; ``where`` names the meter (``FILE: meters[0]``)."""
        return None  # a backend that names no file or port has nothing to check

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def poll(self, mono_ns: int) -> Poll: ...

    @abstractmethod
    def close(self) -> None: ...

    def check_open(self) -> None:
        """Raise SourceClosedError once the source was closed."""
        if self.closed:
            raise SourceClosedError(f"{self.meter}: the source was closed")

    def __enter__(self) -> Source:
        self.open()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def initial_levels(self) -> Mapping[str, int]:
        return {}

    @property
    def skipped(self) -> int:
        return 0

    def resume_state(self) -> dict[str, Any] | None:
        return None
