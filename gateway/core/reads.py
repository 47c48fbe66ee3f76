"""Scheduled meter reads: the billing determinants of a period, and the peak reset that ends it.

At each read instant R of its :class:`~gateway.core.schedule.ReadSchedule` a
:class:`ReadingCore` records a :class:`MeterRead` (the register and the LCD kWh at R, the
period's energy, its peak demand with the window end, the quality) and resets the peak as the
key switch would (manual 2.3.2). The service and ``replay --db`` both pass "now" in, and both
take a read at the same point of the input: every edge before ``R + glitch width`` given, time
advanced to ``R + glitch width`` (so every edge before R is confirmed, and the sub-interval and
the demand window ending at R are closed), nothing later given yet. The live daemon, a simulated
or replayed source and an import of captured logs therefore read the same values.

The register at R is what landed in sub-intervals ending by R: the register minus the open
sub-interval ``[R, R+S)``. Period energy is the register at R minus the register at the previous
read, in integer edges. A period is *partial* when part of it was not watched (counting began
after it started, the gateway was down) or edges were inferred, glitches removed or the two
channels disagreed; the energy is then still only what was counted, and a bounded estimate is
given beside it: from the `1K` channel when it watched the whole period (the two channels'
period energies differ by less than one `1K` edge), else, across a gap, from what the pin levels
prove was missed up to what the meter could carry meanwhile.

A restored core whose schedule differs from the one its state was read on (a changed
``timezone``, ``read_day`` or ``read_time``) keeps the old schedule's instants up to the moment
time first passes after the restore (the change), and the new one's after it: the open period
ends at the new schedule's first instant after the change, never at one already past, and a
``schedule`` event says so (SPEC 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.core.edge import CHANNEL_1K, CHANNEL_10, CHANNELS, Edge
from gateway.core.events import Event, EventKind
from gateway.core.intervals import IntervalBatch
from gateway.core.meter import I64, J_PER_WH, CoreSettings, MeterCore
from gateway.core.schedule import ReadSchedule, period_label
from meter_model.demand import Peak
from meter_model.units import NS_PER_S


@dataclass(frozen=True)
class MeterRead:
    """One scheduled read: the billing determinants of the period ending at ``t_ns``."""

    meter: str
    period: str  # YYYY-MM, the month the period starts in
    start_ns: int  # the period's scheduled start
    t_ns: int  # the read instant: the period's end
    register_channel: str
    register_wh: int
    energy_wh: int  # register at this read minus register at the previous one
    edges: int  # register-channel edges in the period
    peak: Peak | None  # the peak demand of the period (the one this read reset)
    peak_window_s: int
    gap_s: int  # seconds of the period not watched
    glitches: int
    inferred: int
    mismatches: int
    estimate_wh: tuple[int, int] | None = None  # (low, high) when partial and boundable
    estimate_from: str | None = None  # "1K" or "gap"

    @property
    def lcd_kwh(self) -> int:
        return self.register_wh // 1000

    @property
    def quality(self) -> str:
        clean = not (self.gap_s or self.glitches or self.inferred or self.mismatches)
        return "complete" if clean else "partial"


@dataclass
class _Period:
    """What the open period started from (cumulative figures at its start)."""

    start_ns: int
    energy_wh: dict[str, int]
    edges: dict[str, int]
    glitches: int = 0
    inferred: int = 0
    mismatches: int = 0
    gap_ns: int = 0
    missed_wh: int = 0
    gaps: list[tuple[int, int]] = field(default_factory=list)  # marked after the period began
    not_before_ns: int | None = None  # the schedule changed here: no read of the new one before

    def to_state(self) -> dict[str, Any]:
        return {
            "start_ns": self.start_ns,
            "energy_wh": self.energy_wh,
            "edges": self.edges,
            "glitches": self.glitches,
            "inferred": self.inferred,
            "mismatches": self.mismatches,
            "gap_ns": self.gap_ns,
            "missed_wh": self.missed_wh,
            "not_before_ns": self.not_before_ns,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> _Period:
        return cls(
            state["start_ns"],
            dict(state["energy_wh"]),
            dict(state["edges"]),
            state["glitches"],
            state["inferred"],
            state["mismatches"],
            state["gap_ns"],
            state["missed_wh"],
            not_before_ns=state.get("not_before_ns"),  # states before schedule changes lack it
        )


class ReadingCore(MeterCore):
    """A :class:`MeterCore` that takes scheduled reads (see the module docstring)."""

    def __init__(
        self,
        name: str,
        settings: CoreSettings | None = None,
        *,
        start_ns: int | None = None,
        initial_levels: dict[str, int] | None = None,
        record_subintervals: bool = False,
    ) -> None:
        # Set before MeterCore.__init__, which may begin the core.
        demand_s = (settings or CoreSettings()).demand.sub_interval_s
        self.schedule = (settings.read_schedule if settings else None) or ReadSchedule(
            align_s=demand_s
        )
        self._period: _Period | None = None
        self._old_schedule: ReadSchedule | None = None  # in effect until the change (see top)
        self._change_pending = False
        self._reads: list[MeterRead] = []
        self._held: list[IntervalBatch] = []  # intervals closed by a read's advance
        super().__init__(
            name,
            settings,
            start_ns=start_ns,
            initial_levels=initial_levels,
            record_subintervals=record_subintervals,
        )

    # -- the period --------------------------------------------------------------------------

    def begin(self, start_ns: int) -> None:
        fresh = self.start_ns is None
        super().begin(start_ns)
        if fresh and self._period is None:
            self._period = self._new_period(self.schedule.start_at_or_before(start_ns))
            self._period.gap_ns = start_ns - self._period.start_ns  # not watched before start

    def _new_period(self, start_ns: int) -> _Period:
        return _Period(
            start_ns,
            {ch: self._energy_before_open(ch) for ch in CHANNELS},
            {ch: self.totals[ch].edges - self._open_edges(ch) for ch in CHANNELS},
            glitches=self.glitches,
            inferred=self.inferred_edges,
            mismatches=self.crosscheck.mismatches,
        )

    def _open_edges(self, channel: str) -> int:
        demand = self._demand.get(channel)
        return 0 if demand is None else demand.current_energy // self.totals[channel].wh_per_edge

    def _energy_before_open(self, channel: str) -> int:
        """Return the channel's energy in sub-intervals already closed."""
        demand = self._demand.get(channel)
        open_wh = 0 if demand is None else demand.current_energy
        return self.totals[channel].energy_wh - open_wh

    @property
    def next_read_ns(self) -> int | None:
        return None if self._period is None else self._next_read()[0]

    def _next_read(self) -> tuple[int, ReadSchedule]:
        """Return the open period's read instant and the schedule it is one of."""
        period = self._period
        assert period is not None
        start, changed = period.start_ns, period.not_before_ns
        if changed is None:
            return self.schedule.next_after(start), self.schedule
        old = self._old_schedule
        if old is not None and old.next_after(start) <= changed:
            return old.next_after(start), old  # due before the change: the old one held
        return self.schedule.next_after(max(start, changed)), self.schedule

    def _settle_change(self, at_ns: int) -> None:
        """Time passes for the first time since a restore on a changed schedule: the change
        takes effect now."""
        if not self._change_pending or self._period is None:
            return
        self._change_pending = False
        self._period.not_before_ns = at_ns
        old = self._old_schedule
        assert old is not None
        read_ns = self.next_read_ns
        self.events.append(
            Event(
                at_ns,
                EventKind.SCHEDULE,
                None,
                f"billing schedule changed from {_describe(old)} to {_describe(self.schedule)}; "
                f"the period that began {format_iso(self._period.start_ns)} ends at "
                f"{format_iso(read_ns) if read_ns is not None else '-'}",
            )
        )

    def _due(self) -> int | None:
        """Return ``R + glitch width`` of the next read, the point where it is taken."""
        read_ns = self.next_read_ns
        return None if read_ns is None else read_ns + self.settings.glitch_ns

    # -- feeding, split at the reads ---------------------------------------------------------

    def push(self, edge: Edge) -> None:
        self._settle_change(edge.t_ns)
        due = self._due()
        while due is not None and edge.t_ns >= due:
            self._hold(self.advance_to_read(due))
            due = self._due()
        super().push(edge)

    def push_chunk(self, blocks: dict[str, tuple[I64, npt.NDArray[np.int8]]]) -> None:
        firsts = [int(t[0]) for t, _ in blocks.values() if len(t)]
        if firsts:
            self._settle_change(min(firsts))
        due = self._due()
        while due is not None and any(len(t) and int(t[-1]) >= due for t, _ in blocks.values()):
            before: dict[str, tuple[I64, npt.NDArray[np.int8]]] = {}
            after: dict[str, tuple[I64, npt.NDArray[np.int8]]] = {}
            for ch, (t, lv) in blocks.items():
                cut = int(np.searchsorted(t, due, side="left"))
                before[ch], after[ch] = (t[:cut], lv[:cut]), (t[cut:], lv[cut:])
            super().push_chunk(before)
            self._hold(self.advance_to_read(due))
            blocks = after
            due = self._due()
        super().push_chunk(blocks)

    def advance(self, now_ns: int) -> IntervalBatch | None:
        self._settle_change(now_ns)
        due = self._due()
        while due is not None and now_ns >= due:
            self._hold(self.advance_to_read(due))
            due = self._due()
        self._hold(super().advance(now_ns))
        return self._release()

    def finish(self, end_ns: int | None = None, *, keep_open: bool = False) -> IntervalBatch | None:
        """The input has ended: take the reads due by its end, then settle (see MeterCore)."""
        end = end_ns if end_ns is not None else self.last_ns
        if end is not None and self.last_ns is not None:
            end = max(end, self.last_ns)
        if end is not None:
            self._settle_change(end)
        due = self._due()
        while due is not None and end is not None and end >= due:
            self._hold(self.advance_to_read(due))
            due = self._due()
        self._hold(super().finish(end_ns, keep_open=keep_open))
        return self._release()

    def advance_to_read(self, due_ns: int) -> IntervalBatch | None:
        """Let time pass to the read's point, take the read and reset the peak."""
        closed = super().advance(due_ns)
        self._take_read()
        return closed

    def mark_gap(self, from_ns: int, to_ns: int, detail: str, missed_wh: int = 0) -> None:
        self._settle_change(to_ns)  # a restart's gap ends when the gateway is back: now
        due = self._due()
        while due is not None and from_ns >= due:
            self._hold(self.advance_to_read(due))
            due = self._due()
        super().mark_gap(from_ns, to_ns, detail, missed_wh)
        if to_ns > from_ns and self._period is not None:
            self._period.gaps.append((from_ns, to_ns))
            self._period.missed_wh += missed_wh
        # Reads inside the gap happen when time next passes them (advance): nothing was
        # counted meanwhile, so the register at each is the register now.

    def _hold(self, batch: IntervalBatch | None) -> None:
        if batch is not None and len(batch):
            self._held.append(batch)

    def _release(self) -> IntervalBatch | None:
        held, self._held = self._held, []
        if not held:
            return None
        if len(held) == 1:
            return held[0]
        return _concat(held)

    # -- the read ----------------------------------------------------------------------------

    def _take_read(self) -> None:
        period = self._period
        assert period is not None
        read_ns, schedule = self._next_read()
        register = self.register_channel
        end_wh = {ch: self._energy_before_open(ch) for ch in CHANNELS}
        end_edges = {ch: self.totals[ch].edges - self._open_edges(ch) for ch in CHANNELS}
        gap_ns = period.gap_ns + self._gap_within(period, period.start_ns, read_ns)
        energy_wh = end_wh[register] - period.energy_wh.get(register, 0)
        demand = self.demand
        peak = demand.peak if demand is not None else None
        # Named by the month it starts in, on the schedule that ends it (the same month, but
        # for a period a schedule change ended).
        year, month = schedule.period_of(read_ns - 1)
        read = MeterRead(
            meter=self.name,
            period=period_label(year, month),
            start_ns=period.start_ns,
            t_ns=read_ns,
            register_channel=register,
            register_wh=end_wh[register],
            energy_wh=energy_wh,
            edges=end_edges[register] - period.edges.get(register, 0),
            peak=peak,
            peak_window_s=self.settings.demand.window_s,
            gap_s=-(-gap_ns // NS_PER_S),
            glitches=self.glitches - period.glitches,
            inferred=self.inferred_edges - period.inferred,
            mismatches=self.crosscheck.mismatches - period.mismatches,
        )
        if read.quality == "partial":
            read = self._estimate(read, end_wh, period, gap_ns)
        self._reads.append(read)
        if peak is not None:
            self.reset_peak(read_ns, f"billing read for {read.period}")
        following = self._new_period(read_ns)
        # Gaps marked before this read that reach past it belong to the next period too.
        following.gaps = [(max(a, read_ns), b) for a, b in period.gaps if b > read_ns]
        following.gap_ns = 0
        changed = period.not_before_ns
        following.not_before_ns = changed if changed is not None and changed > read_ns else None
        self._period = following

    @staticmethod
    def _gap_within(period: _Period, start_ns: int, end_ns: int) -> int:
        spans = sorted((max(a, start_ns), min(b, end_ns)) for a, b in period.gaps)
        total, reach = 0, start_ns
        for a, b in spans:
            a = max(a, reach)
            if b > a:
                total += b - a
                reach = b
        return total

    def _estimate(
        self, read: MeterRead, end_wh: dict[str, int], period: _Period, gap_ns: int
    ) -> MeterRead:
        s = self.settings
        other = CHANNEL_1K if read.register_channel == CHANNEL_10 else CHANNEL_10
        other_wh = end_wh[other] - period.energy_wh.get(other, 0)
        slack = s.wh_per_edge[CHANNEL_1K] - s.wh_per_edge[CHANNEL_10]
        if read.register_channel == CHANNEL_10 and not gap_ns and other_wh:
            # Both outputs toggle from one register: over a period the `10` count differs
            # from the `1K` count by less than one `1K` edge, when `1K` saw every edge.
            low = max(read.energy_wh, other_wh - slack)
            return replace(read, estimate_wh=(low, max(low, other_wh + slack)), estimate_from="1K")
        if gap_ns and s.max_power_w is not None:
            most = int(s.max_power_w * gap_ns / (NS_PER_S * J_PER_WH))
            low = read.energy_wh + period.missed_wh
            return replace(
                read, estimate_wh=(low, max(low, read.energy_wh + most)), estimate_from="gap"
            )
        return read

    def take_reads(self) -> list[MeterRead]:
        """Return the reads taken since the last call, and forget them."""
        reads, self._reads = self._reads, []
        return reads

    # -- state -------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        state = super().to_state()
        period = self._period
        if period is not None:
            data = period.to_state()
            data["gaps"] = [list(g) for g in period.gaps]
            state["billing"] = data
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        data = state.get("billing")  # states saved before billing reads have none
        if data is not None:
            self._period = _Period.from_state(data)
            self._period.gaps = [(int(a), int(b)) for a, b in data.get("gaps", [])]
            kept = (state.get("settings") or {}).get("read_schedule")
            if kept is not None and ReadSchedule(**kept) != self.schedule:
                self._old_schedule = ReadSchedule(**kept)
                self._change_pending = True
        elif self.start_ns is not None:
            # Billing starts now: the register so far belongs to no period.
            anchor = self.last_ns or self.start_ns
            self._period = self._new_period(self.schedule.start_at_or_before(anchor))
            self._period.gap_ns = anchor - self._period.start_ns


def format_iso(t_ns: int) -> str:
    """Return an instant as ISO 8601 UTC to the second (the core stays free of timefmt)."""
    return datetime.fromtimestamp(t_ns // NS_PER_S, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _describe(schedule: ReadSchedule) -> str:
    return f"day {schedule.read_day} at {schedule.read_time} {schedule.timezone}"


def _concat(batches: list[IntervalBatch]) -> IntervalBatch:
    """Return consecutive batches of one accumulator as one."""
    first = batches[0]
    flags: dict[int, dict[str, int]] = {}
    for batch in batches:
        flags.update(batch._flags)
    return IntervalBatch(
        first.meter,
        first.length_ns,
        np.concatenate([b.start_ns for b in batches]),
        np.concatenate([b.edges for b in batches]),
        first.wh_per_edge,
        np.concatenate([b.quality for b in batches]),
        flags,
        first._first_index,
        np.concatenate([b.unwatched_ns for b in batches]),
    )
