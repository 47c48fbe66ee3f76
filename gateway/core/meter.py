"""Per-meter reconstruction: edges in, register, power and demand out. Pure; time comes in."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction

from gateway.core.edge import CHANNEL_1K, CHANNEL_10, CHANNELS, Edge
from gateway.timefmt import NS_PER_S, NS_PER_US
from meter_model.demand import DemandMeter, DemandSettings
from meter_model.units import WH_PER_EDGE_1K, WH_PER_EDGE_10

J_PER_WH = 3600


@dataclass
class ChannelCounter:
    """One channel's integer truth: edges counted, last level and last edge time."""

    wh_per_edge: int
    edges: int = 0
    level: int | None = None
    last_edge_ns: int | None = None
    previous_edge_ns: int | None = None

    @property
    def energy_wh(self) -> int:
        return self.edges * self.wh_per_edge


@dataclass(frozen=True)
class Reading:
    """A meter's state at one moment, as the gateway reports it."""

    meter: str
    t_ns: int
    energy_wh: int
    edges: dict[str, int]
    power_kw: float
    demand_kw: Fraction
    peak_demand_kw: Fraction | None
    peak_end_ns: int | None


@dataclass
class MeterCore:
    """Count one meter's edges; the register is `10` when wired, else `1K`."""

    name: str
    start_ns: int
    register_channel: str = CHANNEL_10
    wh_per_edge: dict[str, int] = field(
        default_factory=lambda: {CHANNEL_10: WH_PER_EDGE_10, CHANNEL_1K: WH_PER_EDGE_1K}
    )
    demand_settings: DemandSettings = field(default_factory=DemandSettings)

    def __post_init__(self) -> None:
        self.channels = {ch: ChannelCounter(self.wh_per_edge[ch]) for ch in CHANNELS}
        self.demand = DemandMeter(
            self.demand_settings, Fraction(J_PER_WH), self.start_ns // NS_PER_US
        )

    @property
    def register(self) -> ChannelCounter:
        return self.channels[self.register_channel]

    def feed(self, edges: Iterable[Edge]) -> None:
        """Count edges, which arrive in time order per channel."""
        for edge in edges:
            counter = self.channels[edge.channel]
            counter.edges += 1
            counter.level = edge.level
            counter.previous_edge_ns = counter.last_edge_ns
            counter.last_edge_ns = edge.t_ns
            if edge.channel == self.register_channel:
                self.demand.add(edge.t_ns // NS_PER_US, counter.wh_per_edge)

    def advance(self, now_ns: int) -> None:
        """Close the demand sub-intervals that have ended by ``now_ns``."""
        self.demand.close_through(now_ns // NS_PER_US)

    def power_kw(self, now_ns: int) -> float:
        """Return the power implied by the last two edges, never more than the time since the
        last edge allows, so it falls toward 0 when pulses stop (SPEC section 2)."""
        counter = self.register
        if counter.last_edge_ns is None or counter.previous_edge_ns is None:
            return 0.0
        interval_ns = max(
            counter.last_edge_ns - counter.previous_edge_ns, now_ns - counter.last_edge_ns
        )
        if interval_ns <= 0:
            return 0.0
        return counter.wh_per_edge * J_PER_WH * NS_PER_S / interval_ns / 1000.0

    def reading(self, now_ns: int) -> Reading:
        self.advance(now_ns)
        peak = self.demand.peak
        return Reading(
            self.name,
            now_ns,
            self.register.energy_wh,
            {ch: counter.edges for ch, counter in self.channels.items()},
            self.power_kw(now_ns),
            self.demand.instantaneous_kw(),
            peak.demand_kw if peak else None,
            peak.window_end_us * NS_PER_US if peak else None,
        )
