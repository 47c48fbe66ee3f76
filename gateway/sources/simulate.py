"""The ``simulate`` source: the meter model under a load profile, paced in simulated time.

Its clock starts at the wall-clock time (or the profile's first row) and runs ``speed`` times
faster than the service's. After a restart it continues the simulated clock and register where
the database says they stopped, so the simulated meter never jumps or repeats.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.config import check_readable, meter_config
from gateway.core.edge import CHANNEL_10, Edge
from gateway.core.events import Event, EventKind
from gateway.errors import ConfigError
from gateway.sources import SPEED_RANGE, Poll, Source, SourceContext, SourceSettings, SourceStart
from meter_model import Meter, MeterConfig
from meter_model.electrical import balanced_inputs
from meter_model.profiles import BUILTIN_PEAK_MW, builtin_segments
from meter_model.units import NS_PER_US, WH_PER_EDGE_10

if TYPE_CHECKING:
    from gateway.config import MeterSettings
    from gateway.core.meter import MeterCore

__all__ = ["ModelChecker", "SimulateSettings", "SimulateSource", "profile_segments"]

logger = logging.getLogger(__name__)

FAR_FUTURE_US = 2**62
MAX_STEP_US = 6 * 3600 * 1_000_000


class ModelChecker:
    """Compare what the gateway counted with the simulated meter's own register, to the edge.

    The only allowed difference is an edge the core still holds pending (it waits out the glitch
    width). Any other difference is reported once, as a ``model`` event, until the two agree
    again.
    """

    def __init__(self, model: Meter) -> None:
        self.model = model
        self._baseline: int | None = None
        self._disagreeing = False

    def check(self, core: MeterCore) -> list[Event]:
        pending = 1 if core.hygiene[CHANNEL_10].pending_t_ns is not None else 0
        counted = core.totals[CHANNEL_10].edges + pending
        if self._baseline is None:
            self._baseline = self.model.edges_10 - counted
        expected = self.model.edges_10 - self._baseline
        if counted == expected:
            self._disagreeing = False
            return []
        if self._disagreeing:
            return []
        self._disagreeing = True
        return [
            Event(
                self.model.t_us * NS_PER_US,
                EventKind.MODEL,
                CHANNEL_10,
                f"counted {counted} `10` edges where the model's register made {expected} "
                f"(model LCD {self.model.lcd_kwh} kWh)",
                abs(expected - counted) * WH_PER_EDGE_10,
            )
        ]


def profile_segments(path: str, start_us: int) -> Iterator[tuple[int, int]]:
    """Yield (t_us, power_mw) of a profile file from ``start_us`` on; power 0 after its end."""
    from gateway.loadprofile import read_profile

    profile = read_profile(path)
    times = profile.t_us.tolist()
    powers = [*profile.power_mw.tolist(), 0]  # the last row ends the run
    current = bisect.bisect_right(times, start_us) - 1
    yield start_us, powers[current] if current >= 0 else 0
    yield from zip(times[current + 1 :], powers[current + 1 :], strict=True)


@dataclass(frozen=True)
class SimulateSettings(SourceSettings):
    """``source = "simulate"``: how fast simulated time runs, and the load it follows."""

    speed: float = field(default=1.0, metadata=SPEED_RANGE)
    profile: str | None = None  # a ``time,kw`` CSV; None: the built-in household profile


class SimulateSource(Source):
    """A simulated meter whose clock runs ``speed`` times faster than the service's."""

    settings_type = SimulateSettings

    @classmethod
    def from_settings(
        cls, settings: MeterSettings, start: SourceStart, context: SourceContext
    ) -> SimulateSource:
        backend = settings.backend
        assert isinstance(backend, SimulateSettings)
        return cls(
            settings.name,
            start.model,
            start_ns=start.start_ns,
            speed=backend.speed,
            profile=backend.profile,
            state=start.source_state,
        )

    @classmethod
    def check_inputs(cls, settings: MeterSettings, where: str, *, ports: bool = True) -> None:
        """Refuse a profile that cannot be read, or a load the CTs cannot carry: the meter
        model would raise mid-run."""
        from gateway.loadprofile import read_profile

        backend = settings.backend
        assert isinstance(backend, SimulateSettings)
        peak_mw, peak = BUILTIN_PEAK_MW, "the built-in profile peaks at {kw:g} kW"
        if backend.profile is not None:
            check_readable(f"{where}.profile", backend.profile)
            profile = read_profile(backend.profile)  # two rows at least: one has a power
            row = int(profile.power_mw.argmax())
            peak_mw = int(profile.power_mw[row])
            peak = f"{backend.profile}:{int(profile.lines[row])} asks {{kw:g}} kW"
        model = meter_config(settings, where)
        if peak_mw > model.nominal_max_power_kw * 1_000_000:
            raise ConfigError(
                f"{where}.ct_rating_a: {settings.ct_rating_a:g} A CTs carry at most "
                f"{model.nominal_max_power_kw:g} kW on a {model.model.text} (nominal voltage, CT "
                f"rating + 10 %), but {peak.format(kw=peak_mw / 1e6)}; give CTs rated for the load"
            )

    def __init__(
        self,
        meter: str,
        config: MeterConfig,
        *,
        start_ns: int,
        speed: float = 1.0,
        profile: str | None = None,
        state: dict[str, Any] | None = None,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.meter = meter
        self.config = config
        self.speed = speed
        self.profile = profile
        if state is not None:
            self._start_us = int(state["t_us"])
            self.model = Meter(config, start_us=self._start_us, energy_nj=int(state["energy_nj"]))
        else:
            self._start_us = start_ns // NS_PER_US
            if profile is not None:
                from gateway.loadprofile import read_profile

                self._start_us = read_profile(profile).start_us
            self.model = Meter(config, start_us=self._start_us)
        self._segments: Iterator[tuple[int, int]] | None = None
        self._next: tuple[int, int] | None = None
        self._mono0_ns: int | None = None
        self.checker = ModelChecker(self.model)

    def open(self) -> None:
        if self.profile is not None:
            self._segments = profile_segments(self.profile, self._start_us)
        else:
            self._segments = builtin_segments(self._start_us, FAR_FUTURE_US)
        self._next = next(self._segments, None)
        logger.info("simulating %s (%s) at %gx", self.meter, self.config.model.text, self.speed)

    def close(self) -> None:
        self.closed = True

    def resume_state(self) -> dict[str, Any]:
        """Return what a restart needs to continue: the simulated clock and register."""
        return {"t_us": self.model.t_us, "energy_nj": self.model.energy_nj}

    def simulated_now_us(self, mono_ns: int) -> int:
        if self._mono0_ns is None:
            self._mono0_ns = mono_ns
        return self._start_us + int((mono_ns - self._mono0_ns) * self.speed) // NS_PER_US

    def poll(self, mono_ns: int) -> Poll:
        self.check_open()
        assert self._segments is not None, "open() first"
        # At most MAX_STEP_US of simulated time per poll: a fast simulation falls behind its
        # pace rather than making one poll (and its memory) as large as the speed allows.
        asked_us = self.simulated_now_us(mono_ns)
        now_us = min(asked_us, self.model.t_us + MAX_STEP_US)
        made = []
        while self._next is not None and self._next[0] <= now_us:
            t_us, power_mw = self._next
            made += self.model.apply(t_us, balanced_inputs(self.config, power_mw / 1e6))
            self._next = next(self._segments, None)
        made += self.model.advance(now_us)
        edges = [Edge(e.t_us * NS_PER_US, self.meter, e.channel, e.level) for e in made]
        return Poll(
            edges,
            now_us * NS_PER_US,
            behind_ns=(asked_us - now_us) * NS_PER_US,
            asked_ns=(asked_us - self._start_us) * NS_PER_US,
        )
