"""Per-meter reconstruction: edges in, register, power, demand, intervals and checks out.

Pure and deterministic: time comes with the edges, and "now" from the caller. One class serves
both paths: :meth:`MeterCore.push` takes one edge at a time (live), :meth:`MeterCore.push_chunk`
takes numpy arrays (replay). Both run the same hygiene, counting, demand, interval and cross-check
code on the same state, and give identical results (a property test holds them to it).

Edges of one meter must come in time order across its channels (within the glitch width);
replay sorts a log that is not.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from gateway.core.arrays import runs
from gateway.core.crosscheck import DEFAULT_TOLERANCE_NS, CrossCheck
from gateway.core.edge import CHANNEL_1K, CHANNEL_10, CHANNELS, Edge
from gateway.core.events import Event, EventKind
from gateway.core.hygiene import DEFAULT_GLITCH_NS, ChannelHygiene, Cleaned
from gateway.core.intervals import IntervalAccumulator, IntervalBatch
from gateway.core.schedule import ReadSchedule
from meter_model.demand import DemandMeter, DemandSettings, Peak, SubInterval
from meter_model.units import NS_PER_S, NS_PER_US, WH_PER_EDGE_1K, WH_PER_EDGE_10

I64 = npt.NDArray[np.int64]
J_PER_WH = 3600


@dataclass(frozen=True)
class CoreSettings:
    """How one meter's edges are reconstructed."""

    wh_per_edge: dict[str, int] = field(
        default_factory=lambda: {CHANNEL_10: WH_PER_EDGE_10, CHANNEL_1K: WH_PER_EDGE_1K}
    )
    glitch_ns: int = DEFAULT_GLITCH_NS
    coincidence_ns: int = DEFAULT_TOLERANCE_NS
    demand: DemandSettings = field(default_factory=DemandSettings)
    interval_s: int = 900
    max_power_w: float | None = None  # what the meter can physically produce; None: unchecked
    register_channel: str | None = None  # None: `10` if it has edges, else `1K`
    read_schedule: ReadSchedule | None = None  # billing reads (core/reads.py); None: defaults

    def to_state(self) -> dict[str, Any]:
        """Return the settings as JSON-able data, so any reader of a state restores exactly."""
        return {
            "wh_per_edge": dict(self.wh_per_edge),
            "glitch_ns": self.glitch_ns,
            "coincidence_ns": self.coincidence_ns,
            "sub_interval_s": self.demand.sub_interval_s,
            "window_s": self.demand.window_s,
            "interval_s": self.interval_s,
            "max_power_w": self.max_power_w,
            "register_channel": self.register_channel,
            "read_schedule": None
            if self.read_schedule is None
            else dataclasses.asdict(self.read_schedule),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> CoreSettings:
        """Return the settings :meth:`to_state` gave; the defaults for a state that has none
        (states written before settings were kept)."""
        if not state:
            return cls()
        return cls(
            wh_per_edge={ch: int(n) for ch, n in state["wh_per_edge"].items()},
            glitch_ns=int(state["glitch_ns"]),
            coincidence_ns=int(state["coincidence_ns"]),
            demand=DemandSettings(int(state["sub_interval_s"]), int(state["window_s"])),
            interval_s=int(state["interval_s"]),
            max_power_w=state["max_power_w"],
            register_channel=state["register_channel"],
            read_schedule=None
            if state.get("read_schedule") is None
            else ReadSchedule(**state["read_schedule"]),
        )

    def min_edge_gap_ns(self, channel: str) -> int:
        """Return the shortest plausible time between two edges at the meter's maximum power."""
        if self.max_power_w is None:
            return 0
        return int(self.wh_per_edge[channel] * J_PER_WH * NS_PER_S / self.max_power_w)


@dataclass
class ChannelTotals:
    """What a channel counted: the integer truth, and the last two counted edge times."""

    wh_per_edge: int
    edges: int = 0
    noise: int = 0
    last_ns: int | None = None
    previous_ns: int | None = None
    last_real_ns: int | None = None

    @property
    def energy_wh(self) -> int:
        return self.edges * self.wh_per_edge

    def to_state(self) -> dict[str, Any]:
        """Return the counts as JSON-able data (the weight is a setting)."""
        return {
            "edges": self.edges,
            "noise": self.noise,
            "last_ns": self.last_ns,
            "previous_ns": self.previous_ns,
            "last_real_ns": self.last_real_ns,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], wh_per_edge: int) -> ChannelTotals:
        """Return a channel's counts as :meth:`to_state` left them."""
        return cls(
            wh_per_edge,
            edges=state["edges"],
            noise=state["noise"],
            last_ns=state["last_ns"],
            previous_ns=state["previous_ns"],
            last_real_ns=state["last_real_ns"],
        )


@dataclass(frozen=True)
class Reading:
    """A meter's state at one moment."""

    meter: str
    t_ns: int
    energy_wh: int
    edges: dict[str, int]
    power_kw: float
    demand_kw: Fraction
    peak: Peak | None
    peak_since_ns: int | None = None  # the peak is the largest since: counting began, or a reset


class MeterCore:
    """Reconstruct one meter from its edges."""

    def __init__(
        self,
        name: str,
        settings: CoreSettings | None = None,
        *,
        start_ns: int | None = None,
        initial_levels: dict[str, int] | None = None,
        record_subintervals: bool = False,
    ) -> None:
        self.name = name
        self.settings = settings = settings or CoreSettings()
        period_ns = settings.demand.sub_interval_s * NS_PER_S
        self.hygiene = {ch: ChannelHygiene(settings.glitch_ns, period_ns) for ch in CHANNELS}
        self.set_initial_levels(initial_levels or {})
        self.totals = {ch: ChannelTotals(settings.wh_per_edge[ch]) for ch in CHANNELS}
        self.crosscheck = CrossCheck(*self._crosscheck_settings())
        self.events: list[Event] = []  # a hand-over list: see take_events
        self.start_ns: int | None = None
        self.first_ns: int | None = None
        self.last_ns: int | None = None
        self.ended_ns: int | None = None  # where the input last ended (a log's end)
        self.peak_since_ns: int | None = None  # counting's start, then the last peak reset
        self.tail_ns: int | None = None  # see finish(keep_open=True)
        self._demand: dict[str, DemandMeter] = {}
        self._intervals: IntervalAccumulator | None = None
        self._record_subintervals = record_subintervals
        if start_ns is not None:
            self.begin(start_ns)

    def _crosscheck_settings(self) -> tuple[int, int, int, int]:
        """Return the cross-check's (wh_10, wh_1k, tolerance_ns, margin_ns)."""
        s = self.settings
        # Hygiene hands a `1K` edge over at most the glitch width after later `10` edges.
        return s.wh_per_edge[CHANNEL_10], s.wh_per_edge[CHANNEL_1K], s.coincidence_ns, s.glitch_ns

    # -- feeding -----------------------------------------------------------------------------

    def begin(self, start_ns: int) -> None:
        """Start observing at ``start_ns`` (once: later calls do nothing).

        The first edge, ``advance`` or ``mark_gap`` begins a core that was not begun.
        """
        if self.start_ns is not None:
            return
        self.start_ns = start_ns
        self.peak_since_ns = start_ns
        s = self.settings
        for ch in CHANNELS:
            # Demand counts energy in Wh: J_PER_WH joules per unit.
            self._set_demand(ch, DemandMeter(s.demand, Fraction(J_PER_WH), start_ns // NS_PER_US))
        self._intervals = IntervalAccumulator(self.name, s.interval_s, s.wh_per_edge, start_ns)

    def _set_demand(self, channel: str, demand: DemandMeter) -> None:
        if self._record_subintervals:
            demand.closed_log = []  # the store persists every closed one
        self._demand[channel] = demand

    def set_initial_levels(self, levels: dict[str, int]) -> None:
        """Set the levels the lines were read at on start: a line already high is not counted."""
        for ch, level in levels.items():
            self.hygiene[ch].level = level

    def _seen(self, first_ns: int, last_ns: int) -> None:
        if self.first_ns is None:
            self.first_ns = first_ns
        self.last_ns = last_ns if self.last_ns is None else max(self.last_ns, last_ns)

    def push(self, edge: Edge) -> None:
        """Take one edge (live). Edges come in time order across the meter's channels."""
        self.begin(edge.t_ns)
        self._seen(edge.t_ns, edge.t_ns)
        for ch in CHANNELS:
            if ch != edge.channel:
                self._take(ch, self.hygiene[ch].advance(edge.t_ns))
        self._take(edge.channel, self.hygiene[edge.channel].push(edge.t_ns, edge.level))
        self._judge_crosscheck(edge.t_ns)

    def push_chunk(self, blocks: dict[str, tuple[I64, npt.NDArray[np.int8]]]) -> None:
        """Take a chunk of edges per channel, each sorted by (time, level) (replay).

        Every edge of the chunk must come at or after every edge of earlier chunks.
        """
        present = [(ch, t, lv) for ch, (t, lv) in blocks.items() if len(t)]
        if not present:
            return
        first = min(int(t[0]) for _, t, _ in present)
        last = max(int(t[-1]) for _, t, _ in present)
        self.begin(first)
        self._seen(first, last)
        # `1K` before `10`, so the cross-check has each `1K` edge before the `10` edges after
        # it; no later chunk comes before ``last``, so each channel's pending edge can go too.
        blocks_by_channel = {ch: (t, lv) for ch, t, lv in present}
        for ch in (CHANNEL_1K, CHANNEL_10):
            if ch in blocks_by_channel:
                self._take(ch, self.hygiene[ch].push_block(*blocks_by_channel[ch]))
            self._take(ch, self.hygiene[ch].advance(last))
        self._judge_crosscheck(last)

    def _take(self, channel: str, cleaned: Cleaned) -> None:
        counted = cleaned.t_ns
        if len(counted) == 0 and len(cleaned.glitch_t_ns) == 0:
            return
        totals = self.totals[channel]
        if len(counted):
            totals.edges += len(counted)
            if len(counted) >= 2:
                totals.previous_ns = int(counted[-2])
            else:
                totals.previous_ns = totals.last_ns
            totals.last_ns = int(counted[-1])
            demand = self._demand[channel]
            s_us = self.settings.demand.sub_interval_us
            subs, counts = runs(counted // (s_us * NS_PER_US))
            demand.add_many(subs, counts * totals.wh_per_edge)
            assert self._intervals is not None
            self._intervals.add(channel, counted)
        if cleaned.inferred.any():
            self._flag(counted[cleaned.inferred], "inferred")
        if len(cleaned.glitch_t_ns):
            self._flag(cleaned.glitch_t_ns, "glitch")
        self._check_noise(channel, cleaned.real_t_ns)
        if channel == CHANNEL_10:
            self.crosscheck.add_10(counted, cleaned.inferred)
        else:
            self.crosscheck.add_1k(counted, cleaned.inferred)
        self._collect_events()

    def _check_noise(self, channel: str, real: I64) -> None:
        min_gap = self.settings.min_edge_gap_ns(channel)
        totals = self.totals[channel]
        if len(real) == 0:
            return
        if min_gap:
            previous = np.empty(len(real), np.int64)
            previous[1:] = real[:-1]
            previous[0] = real[0] - min_gap if totals.last_real_ns is None else totals.last_real_ns
            noisy = (real - previous) < min_gap
            if noisy.any():
                totals.noise += int(noisy.sum())
                self._flag(real[noisy], "noise")
        totals.last_real_ns = int(real[-1])

    def _flag(self, t_ns: I64 | list[int], flag: str) -> None:
        assert self._intervals is not None
        self._intervals.flag(t_ns, flag)

    def _collect_events(self) -> None:
        new = self.crosscheck.events
        if new:
            self.crosscheck.events = []  # handed on: the core's list is the one to read
            self.events.extend(new)
            self._flag([e.t_ns for e in new], "crosscheck")

    def take_events(self) -> list[Event]:
        """Return the events gathered since the last call, and forget them."""
        events, self.events = self.events, []
        return events

    def take_subintervals(self) -> list[SubInterval]:
        """Return the register's demand sub-intervals closed since the last call (when the core
        records them), and forget every channel's: only the register's are kept."""
        register = self.demand
        taken: list[SubInterval] = []
        for demand in self._demand.values():
            if demand.closed_log is None:
                continue
            if demand is register:
                taken = demand.closed_log
            demand.closed_log = []
        return taken

    def last_seen(self) -> dict[str, tuple[int, int]]:
        """Return, per channel, the (t_ns, level) of the last edge seen, where there is one.

        A resumed source skips what is at or before it (:func:`~gateway.core.hygiene.skip_seen`).
        """
        return {ch: h.last_raw for ch, h in self.hygiene.items() if h.last_raw is not None}

    def last_level(self, channel: str) -> int | None:
        """Return the level a channel was last seen at, its pending edge included."""
        return self.hygiene[channel].last_level

    # -- time passing ------------------------------------------------------------------------

    @property
    def register_channel(self) -> str:
        if self.settings.register_channel is not None:
            return self.settings.register_channel
        if self.totals[CHANNEL_10].edges or self.hygiene[CHANNEL_10].last_raw is not None:
            return CHANNEL_10
        return CHANNEL_1K if self.totals[CHANNEL_1K].edges else CHANNEL_10

    def advance(self, now_ns: int) -> IntervalBatch | None:
        """Let time pass to ``now_ns`` (live): confirm edges, close sub-intervals and intervals.

        Returns the register's intervals that closed.
        """
        self.begin(now_ns)
        for ch in (CHANNEL_1K, CHANNEL_10):
            self._take(ch, self.hygiene[ch].advance(now_ns))
        # Periods close once no pending edge can still land in them.
        horizon = now_ns - self.settings.glitch_ns
        for demand in self._demand.values():
            demand.close_through(horizon // NS_PER_US)
        assert self._intervals is not None
        self._judge_crosscheck(now_ns)
        waiting = self.crosscheck.waiting_since_ns
        if waiting is not None:
            horizon = min(horizon, waiting)  # its judgement may still flag its interval
        closed = self._intervals.close_through(horizon, self.register_channel)
        if self.tail_ns is not None and len(closed) and int(closed.start_ns[-1]) >= self.tail_ns:
            self.tail_ns = None  # the interval a finished log left open has closed for real
        return self._report(closed)

    def _judge_crosscheck(self, now_ns: int) -> None:
        """Let the cross-check judge `1K` edges whose `10` neighbours are all known by now
        (so a meter with only `1K` wired, or a silent `10`, keeps nothing waiting)."""
        self.crosscheck.advance(now_ns)
        self._collect_events()

    def finish(self, end_ns: int | None = None, *, keep_open: bool = False) -> IntervalBatch | None:
        """The input has ended (at ``end_ns``, else at the last edge): settle everything.

        Returns the register's intervals that closed, the last one partial when the end falls
        inside it. With ``keep_open`` (a log imported into the database, which a later log may
        continue) that last interval is returned all the same but stays open in the core's
        state: :attr:`tail_ns` is its start, so the store can replace it once it really closes.
        Finishing again at or before the same end, with nothing new since, returns None.
        """
        end = end_ns if end_ns is not None else (self.last_ns or self.start_ns)
        if end is not None and self.last_ns is not None:
            end = max(end, self.last_ns)  # an edge after the declared end extends it
        if (
            self.ended_ns is not None
            and (end is None or end <= self.ended_ns)
            and (self.last_ns or 0) <= self.ended_ns
            and not any(h.pending_t_ns is not None for h in self.hygiene.values())
        ):
            return None
        for ch in (CHANNEL_1K, CHANNEL_10):
            self._take(ch, self.hygiene[ch].finish())
        self.crosscheck.finish(end)
        self._collect_events()
        if self.start_ns is None or end is None:
            return None
        self.ended_ns = end
        for demand in self._demand.values():
            demand.close_through(end // NS_PER_US)
        assert self._intervals is not None
        register = self.register_channel
        if not keep_open:
            self.tail_ns = None
            return self._report(self._intervals.finish(end, register))
        closed = self._intervals.close_through(end, register)
        # The interval holding the end: closed on a copy, kept open here.
        copy = IntervalAccumulator.from_state(
            self._intervals.to_state(),
            self.name,
            self.settings.interval_s,
            self.settings.wh_per_edge,
            self._intervals.start_ns,
        )
        tail = copy.finish(end, register)
        self.tail_ns = int(tail.start_ns[0]) if len(tail) else None
        return self._report(closed.extend(tail))

    _HYGIENE_EVENTS: ClassVar[dict[str, tuple[EventKind, str]]] = {
        "glitch": (EventKind.GLITCH, "glitch(es) removed"),
        "inferred": (EventKind.INFERRED, "missed edge(s) counted back"),
        "noise": (EventKind.NOISE, "edge(s) faster than the meter can produce"),
    }

    def _report(self, batch: IntervalBatch) -> IntervalBatch:
        """Turn each closed interval's hygiene flags into one event per kind (SPEC 5 lists
        glitches and inferred edges among the anomalies), stamped with the interval start."""
        for start_ns, counts in batch.flag_counts():
            for flag, (kind, what) in self._HYGIENE_EVENTS.items():
                if counts.get(flag):
                    self.events.append(
                        Event(start_ns, kind, None, f"{counts[flag]} {what} in this interval")
                    )
        return batch

    # -- reading it out ----------------------------------------------------------------------

    @property
    def energy_wh(self) -> int:
        return self.totals[self.register_channel].energy_wh

    @property
    def demand(self) -> DemandMeter | None:
        return self._demand.get(self.register_channel)

    def power_kw(self, now_ns: int) -> float:
        """Return the power implied by the time between the last two counted edges, never more
        than the time since the last edge allows: it falls toward 0 when pulses stop."""
        totals = self.totals[self.register_channel]
        if totals.last_ns is None or totals.previous_ns is None:
            return 0.0
        interval_ns = max(totals.last_ns - totals.previous_ns, now_ns - totals.last_ns)
        if interval_ns <= 0:
            return 0.0
        return totals.wh_per_edge * J_PER_WH * NS_PER_S / interval_ns / 1000.0

    def reset_peak(self, now_ns: int, reason: str = "command") -> Peak | None:
        demand = self.demand
        cleared = demand.reset_peak() if demand else None
        self.peak_since_ns = now_ns
        self.events.append(Event(now_ns, EventKind.PEAK_RESET, None, reason))
        return cleared

    def reading(self, now_ns: int) -> Reading:
        demand = self.demand
        return Reading(
            self.name,
            now_ns,
            self.energy_wh,
            {ch: totals.edges for ch, totals in self.totals.items()},
            self.power_kw(now_ns),
            demand.instantaneous_kw() if demand else Fraction(0),
            demand.peak if demand else None,
            self.peak_since_ns,
        )

    @property
    def glitches(self) -> int:
        return sum(h.glitches for h in self.hygiene.values())

    @property
    def inferred_edges(self) -> int:
        return sum(h.inferred for h in self.hygiene.values())

    @property
    def duplicates(self) -> int:
        return sum(h.duplicates for h in self.hygiene.values())

    def current_quality(self, now_ns: int) -> str:
        """Return the quality of the interval now open (complete, partial or gap so far)."""
        if self._intervals is None:
            return "partial"
        return self._intervals.open_quality(now_ns)

    # -- state -------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Return everything the core will still use as JSON-able data, its settings included
        (not events or sub-intervals not yet taken)."""
        return {
            "name": self.name,
            "start_ns": self.start_ns,
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
            "hygiene": {ch: h.to_state() for ch, h in self.hygiene.items()},
            "totals": {ch: t.to_state() for ch, t in self.totals.items()},
            "demand": {ch: d.to_state() for ch, d in self._demand.items()},
            "intervals": None if self._intervals is None else self._intervals.to_state(),
            "crosscheck": self.crosscheck.to_state(),
            "ended_ns": self.ended_ns,
            "tail_ns": self.tail_ns,
            "settings": self.settings.to_state(),
            "peak_since_ns": self.peak_since_ns,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Put this core, fresh and with the same settings, in the state :meth:`to_state` gave."""
        s = self.settings
        if state["start_ns"] is not None:
            self.begin(state["start_ns"])
        self.first_ns = state["first_ns"]
        self.last_ns = state["last_ns"]
        for ch, data in state["hygiene"].items():
            self.hygiene[ch] = ChannelHygiene.from_state(
                data, s.glitch_ns, s.demand.sub_interval_s * NS_PER_S
            )
        for ch, data in state["totals"].items():
            self.totals[ch] = ChannelTotals.from_state(data, s.wh_per_edge[ch])
        for ch, data in state["demand"].items():
            self._set_demand(ch, DemandMeter.from_state(s.demand, Fraction(J_PER_WH), data))
        if state["intervals"] is not None and self.start_ns is not None:
            self._intervals = IntervalAccumulator.from_state(
                state["intervals"], self.name, s.interval_s, s.wh_per_edge, self.start_ns
            )
        self.crosscheck = CrossCheck.from_state(state["crosscheck"], *self._crosscheck_settings())
        self.ended_ns = state.get("ended_ns")  # older states lack these two
        self.tail_ns = state.get("tail_ns")
        self.peak_since_ns = state.get("peak_since_ns", self.start_ns)  # older: since the start

    def mark_gap(self, from_ns: int, to_ns: int, detail: str, missed_wh: int = 0) -> None:
        """Record time nothing was watched (the gateway was down, the clock stepped).

        Intervals it covers whole become gap, those it covers in part partial; its demand
        sub-intervals count as no data; energy is
        untouched: an edge missed meanwhile shows as a repeated level and is counted back.
        """
        if to_ns <= from_ns:
            return
        self.begin(from_ns)
        # Time passed to the gap's end with no edge seen: a pending edge is confirmed now, in
        # the sub-interval and interval it came in, not after the gap.
        for ch in (CHANNEL_1K, CHANNEL_10):
            self._take(ch, self.hygiene[ch].advance(to_ns))
        assert self._intervals is not None
        self._intervals.mark_unobserved(from_ns, to_ns)
        for demand in self._demand.values():
            demand.mark_gap()
            demand.close_through(to_ns // NS_PER_US, observed=False)
            demand.mark_gap()
        self.crosscheck.rebase()
        self.events.append(Event(from_ns, EventKind.GAP, None, detail, missed_wh))
