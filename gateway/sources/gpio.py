"""The ``gpio`` source: the meter's isolated outputs on Raspberry Pi GPIO pins, with gpiozero.

- The lgpio pin factory is chosen explicitly; if it cannot be had that is an error, never a
  silent fall-back to another factory (whose timing and pin access differ).
- Pins are inputs with the pull-up on: the outputs are open collector, so the line is pulled low
  while the output conducts. The pulse-log level is the *output's* level, so a low line is 1.
- Each edge is stamped from the backend's own edge ticks (the kernel's event time), not from when
  the callback ran; the callback only queues ``(ticks, state)``. Filtering is the core's job, so
  gpiozero's ``bounce_time`` stays off.
- The line's level at start is read and handed to the core, so a line already high at start is
  not counted twice.
"""

from __future__ import annotations

import glob
import importlib
import logging
import os
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.core.edge import CHANNEL_10, Edge
from gateway.errors import ConfigError, SourceError
from gateway.sources import Poll, Source, SourceContext, SourceStart, WiredSettings
from gateway.timeline import Timeline
from meter_model.units import NS_PER_S

if TYPE_CHECKING:
    from gateway.config import MeterSettings

__all__ = ["GpioSettings", "GpioSource", "check_lgpio", "lgpio_factory"]

logger = logging.getLogger(__name__)
CALLBACK_LATENCY_NS = 50_000_000
GPIOCHIP_DIR = "/dev"


INSTALL_LGPIO = "sudo apt install python3-lgpio (or pip install lgpio in the gateway's venv)"


def check_lgpio() -> None:
    """Raise ConfigError saying what to install when the lgpio module is missing.

    Called at start-up, before the database or a pin is opened: a missing library is the
    installation's fault, and a service restarted every few seconds cannot fix it (exit 2).
    """
    try:
        importlib.import_module("lgpio")
    except ImportError as exc:
        raise ConfigError(f"source gpio needs the lgpio library ({exc}): {INSTALL_LGPIO}") from None
    chips = sorted(glob.glob(os.path.join(GPIOCHIP_DIR, "gpiochip*")))
    if not chips:
        raise ConfigError(
            f"source gpio: no {GPIOCHIP_DIR}/gpiochip* on this machine (not a Raspberry Pi,"
            " or its GPIO driver is not loaded)"
        )
    if not any(os.access(chip, os.R_OK | os.W_OK) for chip in chips):
        raise ConfigError(
            f"source gpio: {', '.join(chips)} cannot be opened by this user: add it to the"
            " gpio group (sudo usermod -aG gpio USER)"
        )


def lgpio_factory() -> Any:
    """Return gpiozero's lgpio pin factory, or raise SourceError saying why it is unavailable."""
    try:
        from gpiozero.pins.lgpio import LGPIOFactory

        return LGPIOFactory()
    except Exception as exc:  # ImportError, or lgpio failing to open /dev/gpiochip*
        raise SourceError(
            f"the lgpio pin factory is unavailable ({exc}); {INSTALL_LGPIO}, and give the "
            "service access to /dev/gpiochip*"
        ) from None


PIN_RANGE = {"range": (0, 27)}  # the Raspberry Pi's header GPIOs, BCM 0-27


@dataclass(frozen=True)
class GpioSettings(WiredSettings):
    """``source = "gpio"``: the BCM pins the meter's outputs are wired to."""

    wired_keys = ("pin_10", "pin_1k")
    pin_10: int | None = field(default=None, metadata=PIN_RANGE)
    pin_1k: int | None = field(default=None, metadata=PIN_RANGE)

    def line(self, number: int) -> tuple[str, ...]:
        return ("gpio", str(number))


class GpioSource(Source):
    """One meter's `10` and/or `1K` outputs on GPIO pins."""

    settings_type = GpioSettings
    live = True

    @classmethod
    def from_settings(
        cls, settings: MeterSettings, start: SourceStart, context: SourceContext
    ) -> GpioSource:
        assert isinstance(settings.backend, GpioSettings)
        pins = settings.backend.wired()
        return cls(settings.name, pins, context.timeline, pin_factory=context.pin_factory)

    @classmethod
    def check_host(cls) -> None:
        check_lgpio()  # before anything is opened: a restart cannot install it

    def __init__(
        self,
        meter: str,
        pins: dict[str, int],
        timeline: Timeline,
        *,
        pin_factory: Any = None,
    ) -> None:
        self.meter = meter
        self.pins = pins
        self.timeline = timeline
        self._factory = pin_factory
        self._pins: dict[str, Any] = {}
        self._callbacks: dict[str, Any] = {}
        self._queue: deque[tuple[str, float, int]] = deque()
        self._ticks0: float = 0.0
        self._mono0_ns = 0
        self._levels: dict[str, int] = {}

    def open(self) -> None:
        factory = self._factory if self._factory is not None else lgpio_factory()
        self._factory = factory
        for channel, number in self.pins.items():
            try:
                pin = factory.pin(number)
                pin.function = "input"
                pin.pull = "up"
                pin.bounce = None
                pin.edges = "both"
            except Exception as exc:
                self.close()
                raise SourceError(f"{self.meter}: GPIO pin {number} ({channel}): {exc}") from None
            self._pins[channel] = pin
        # Tie the backend's ticks to the timeline once; every edge is placed by its own ticks.
        self._ticks0 = factory.ticks()
        self._mono0_ns = self.timeline.monotonic_ns()
        for channel, pin in self._pins.items():
            self._levels[channel] = 0 if pin.state else 1
            # gpiozero holds callbacks weakly: keep ours alive here.
            self._callbacks[channel] = self._callback(channel)
            pin.when_changed = self._callbacks[channel]
        logger.info(
            "%s: GPIO %s",
            self.meter,
            ", ".join(f"{ch} on pin {n}" for ch, n in self.pins.items()),
        )

    def _callback(self, channel: str) -> Any:
        queue = self._queue

        def changed(ticks: float, state: int) -> None:
            queue.append((channel, ticks, state))  # nothing else here: the callback must be quick

        return changed

    @property
    def initial_levels(self) -> dict[str, int]:
        return self._levels

    def poll(self, mono_ns: int) -> Poll:
        self.check_open()
        edges = []
        factory = self._factory
        while True:
            try:
                channel, ticks, state = self._queue.popleft()
            except IndexError:
                break
            seconds = factory.ticks_diff(ticks, self._ticks0)
            t_ns = self.timeline.from_monotonic(self._mono0_ns + round(seconds * NS_PER_S))
            edges.append(Edge(t_ns, self.meter, channel, 0 if state else 1))
        edges.sort(key=lambda e: (e.t_ns, e.channel != CHANNEL_10, e.level))
        # "Now" lags a little: an edge whose callback is still on its way must not land in a
        # period the core has already closed.
        return Poll(edges, self.timeline.from_monotonic(mono_ns) - CALLBACK_LATENCY_NS)

    def close(self) -> None:
        self.closed = True
        for pin in self._pins.values():
            try:
                pin.when_changed = None
                pin.close()
            except Exception:  # closing is best effort
                logger.debug("closing a pin failed", exc_info=True)
        self._pins.clear()
