"""The ``simulate`` source: the meter model under a load profile, paced in simulated time."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from gateway.core.edge import Edge
from gateway.sources import Poll
from gateway.timefmt import NS_PER_US
from meter_model import Meter, MeterConfig
from meter_model.electrical import balanced_inputs
from meter_model.profiles import builtin_segments

logger = logging.getLogger(__name__)

FAR_FUTURE_US = 2**62


class SimulateSource:
    """A simulated meter whose clock runs ``speed`` times faster than the service's."""

    def __init__(
        self,
        meter: str,
        config: MeterConfig,
        *,
        start_ns: int,
        speed: float = 1.0,
        segments: Iterator[tuple[int, int]] | None = None,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.meter = meter
        self.config = config
        self.speed = speed
        self._start_us = start_ns // NS_PER_US
        self.model = Meter(config, start_us=self._start_us)
        self._segments = segments or builtin_segments(self._start_us, FAR_FUTURE_US)
        self._next: tuple[int, int] | None = next(self._segments, None)
        self._mono0_ns: int | None = None

    def open(self) -> None:
        logger.info("simulating %s (%s) at %gx", self.meter, self.config.model.text, self.speed)

    def close(self) -> None:
        pass

    def simulated_now_us(self, mono_ns: int) -> int:
        if self._mono0_ns is None:
            self._mono0_ns = mono_ns
        return self._start_us + int((mono_ns - self._mono0_ns) * self.speed) // NS_PER_US

    def poll(self, mono_ns: int) -> Poll:
        now_us = self.simulated_now_us(mono_ns)
        made = []
        while self._next is not None and self._next[0] <= now_us:
            t_us, power_mw = self._next
            made += self.model.apply(t_us, balanced_inputs(self.config, power_mw / 1e6))
            self._next = next(self._segments, None)
        made += self.model.advance(now_us)
        edges = [Edge(e.t_us * NS_PER_US, self.meter, e.channel, e.level) for e in made]
        return Poll(edges, now_us * NS_PER_US)
