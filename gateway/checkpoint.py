"""One checkpoint path: what a commit writes for a meter, and when the daemon commits.

Between commits a meter's core produces closed intervals, demand sub-intervals and events, and
its peak may be reset; a :class:`Checkpoint` gathers them. :meth:`Checkpoint.batch` builds the
:class:`MeterBatch` a commit writes in one transaction (the contract between a meter and the
sinks, defined here): the core's resume state, the counters, the source's resume state and all
that was gathered. Nothing is dropped until :meth:`Checkpoint.committed` says the commit
succeeded, so a commit that fails leaves it all for the next one. The daemon and ``replay --db``
both go through here (by way of :class:`~gateway.pipeline.MeterPipeline`).

:class:`CommitPolicy` says when the daemon commits: at once when an interval or sub-interval
closes, an event occurs or the peak is reset (what MQTT publishes next must be on the card
first), otherwise at most every ``commit_interval_s`` while edges come, and never while nothing
changed. While the database fails, commits are retried with a growing pause, counting goes on in
memory, and what waits to be written is bounded (:data:`MAX_PENDING`): beyond it the oldest
details are dropped and counted, never the totals, which live in the core's state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from gateway.core.events import Event, EventKind
from gateway.core.intervals import Interval, IntervalBatch
from gateway.core.meter import MeterCore
from gateway.core.reads import MeterRead, ReadingCore
from gateway.core.state import counter_values, snapshot
from gateway.sinks.readback import StoredMeter
from meter_model.demand import Peak, SubInterval

# What may wait for a failing database, per meter: a month of 15-minute intervals and 5-minute
# sub-intervals at the defaults (about 2 MB), and the newest events.
MAX_PENDING = {"intervals": 3_000, "sub-intervals": 9_000, "events": 1_000}
URGENT_GAP_NS = 1_000_000_000


@dataclass(frozen=True)
class PeakReset:
    """A peak demand cleared (by a scheduled read or a command), and when."""

    peak: Peak
    t_ns: int


@dataclass
class MeterBatch:
    """What one meter produced since the last commit."""

    name: str
    model: str
    source: str
    core_state: dict[str, Any]
    source_state: dict[str, Any] | None
    counters: dict[str, dict[str, int | None]]
    register_wh: int
    intervals: Sequence[Interval] = ()
    subintervals: Sequence[SubInterval] = ()
    events: Sequence[Event] = ()
    peak: Peak | None = None
    peak_window_s: int = 900
    resets: Sequence[PeakReset] = ()
    outbox: bool = True  # queue intervals and events for MQTT
    published_wh: int = 0  # the highest total published so far
    reads: Sequence[MeterRead] = ()  # scheduled billing reads (gateway/core/reads.py)
    # Stored intervals from here on were provisional (a finished log's last interval, which a
    # later log continued): they are replaced by this batch's intervals.
    replace_from_ns: int | None = None
    tail_ns: int | None = None  # this batch's own provisional interval, if any


@dataclass
class CommitPolicy:
    """When the daemon commits (see the module docstring). Times are monotonic ns."""

    interval_ns: int
    last_ns: int = 0  # the last commit, or the last try while failing
    failing_since_ns: int | None = None
    failures: int = 0
    RETRY_S: ClassVar[tuple[int, ...]] = (1, 2, 5, 10, 30, 60)  # pauses between tries

    def due(self, now_ns: int, *, urgent: bool, dirty: bool) -> bool:
        """Return whether to commit now."""
        if self.failing_since_ns is not None:
            pause_s = self.RETRY_S[min(self.failures, len(self.RETRY_S)) - 1]
            return (urgent or dirty) and now_ns - self.last_ns >= pause_s * 1_000_000_000
        if urgent:
            # A simulated or replayed clock may close a sub-interval every pass: at most one
            # commit a second still puts each on the card before MQTT publishes it.
            return now_ns - self.last_ns >= min(self.interval_ns, URGENT_GAP_NS)
        return dirty and now_ns - self.last_ns >= self.interval_ns

    def succeeded(self, now_ns: int) -> int | None:
        """Record a commit; return since when storage had failed, if it had."""
        since, self.failing_since_ns, self.failures = self.failing_since_ns, None, 0
        self.last_ns = now_ns
        return since

    def failed(self, now_ns: int) -> bool:
        """Record a failed commit; return whether it is the first of a run of failures."""
        first = self.failing_since_ns is None
        if first:
            self.failing_since_ns = now_ns
        self.failures += 1
        self.last_ns = now_ns
        return first


@dataclass
class Checkpoint:
    """What one meter produced since its last commit."""

    name: str
    model: str
    source: str  # the source kind: gpio, serial, simulate, replay
    skipped_before: int = 0  # edges earlier runs skipped as already counted
    committed_wh: int = 0  # the register as the database holds it: what MQTT may publish
    committed_at_ns: int | None = None  # the meter's time that committed register is for
    intervals: list[Interval] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    subintervals: list[SubInterval] = field(default_factory=list)
    resets: list[PeakReset] = field(default_factory=list)
    reads: list[MeterRead] = field(default_factory=list)  # scheduled billing reads
    dirty: bool = False  # edges counted (or time marked unobserved) since the last commit
    dropped: dict[str, int] = field(default_factory=dict)  # details dropped while storage failed
    dropped_at_ns: int | None = None
    replace_from_ns: int | None = None  # a provisional interval the database holds (its start)

    @classmethod
    def resuming(cls, stored: StoredMeter | None, name: str, model: str, source: str) -> Checkpoint:
        """Start from what the database holds of a meter (None: a meter new to it)."""
        if stored is None:
            return cls(name, model, source)
        return cls(
            name,
            model,
            source,
            skipped_before=sum(row.skipped for row in stored.counters.values()),
            committed_wh=stored.register_wh,
            replace_from_ns=(stored.core_state or {}).get("tail_ns"),
        )

    def add_intervals(self, closed: Iterable[Interval] | None) -> None:
        """Take closed intervals; a day or more of empty ones as one range (see
        :meth:`IntervalBatch.compact`)."""
        if closed is not None:
            self.intervals.extend(closed.compact() if isinstance(closed, IntervalBatch) else closed)

    def add_events(self, events: Iterable[Event]) -> None:
        self.events.extend(events)

    def add_reset(self, cleared: Peak, when_ns: int) -> None:
        self.resets.append(PeakReset(cleared, when_ns))

    @property
    def urgent(self) -> bool:
        """Something closed or happened that should be on the card before it is published."""
        return bool(self.intervals or self.subintervals or self.events or self.resets or self.reads)

    def trim(self, now_ns: int) -> None:
        """Bound what waits while the database fails: drop the oldest details beyond the limits.

        The totals live in the core's state and are never dropped, nor are the storage events
        (the account of the outage); a ``storage`` event in the next batch says what was.
        """
        excess = len(self.intervals) - MAX_PENDING["intervals"]
        if excess > 0:
            del self.intervals[:excess]
            self._dropped("intervals", excess, now_ns)
        excess = len(self.subintervals) - MAX_PENDING["sub-intervals"]
        if excess > 0:
            del self.subintervals[:excess]
            self._dropped("sub-intervals", excess, now_ns)
        excess = len(self.events) - MAX_PENDING["events"]
        if excess > 0:
            kept = [e for e in self.events[:excess] if e.kind == EventKind.STORAGE]
            self.events[:excess] = kept
            self._dropped("events", excess - len(kept), now_ns)

    def _dropped(self, what: str, count: int, now_ns: int) -> None:
        if count > 0:
            self.dropped[what] = self.dropped.get(what, 0) + count
            self.dropped_at_ns = self.dropped_at_ns or now_ns

    def collect(self, core: MeterCore) -> None:
        """Take the events and sub-intervals the core has handed over since the last call."""
        if isinstance(core, ReadingCore):
            # A read resets the peak first: its reset is recorded with it.
            for read in core.take_reads():
                self.reads.append(read)
                if read.peak is not None:
                    self.add_reset(read.peak, read.t_ns)
        self.events.extend(core.take_events())
        self.subintervals.extend(core.take_subintervals())

    def batch(
        self,
        core: MeterCore,
        *,
        source_state: dict[str, Any] | None,
        skipped: int,
        published_wh: int,
    ) -> MeterBatch:
        """Return everything not yet committed; ``skipped`` is the source's count this run,
        ``published_wh`` the publisher's floor (the database keeps it with the rest)."""
        self.collect(core)
        if self.dropped:
            what = ", ".join(f"{n} {name}" for name, n in self.dropped.items())
            detail = f"the database failed too long: the oldest {what} waiting for it were dropped"
            self.events.append(Event(self.dropped_at_ns or 0, EventKind.STORAGE, None, detail))
            self.dropped, self.dropped_at_ns = {}, None
        demand = core.demand
        return MeterBatch(
            name=self.name,
            model=self.model,
            source=self.source,
            core_state=snapshot(core),
            source_state=source_state,
            counters=counter_values(core, self.skipped_before + skipped),
            register_wh=core.energy_wh,
            intervals=list(self.intervals),
            subintervals=list(self.subintervals),
            events=list(self.events),
            peak=demand.peak if demand else None,
            peak_window_s=core.settings.demand.window_s,
            resets=list(self.resets),
            published_wh=published_wh,
            reads=list(self.reads),
            replace_from_ns=self.replace_from_ns if self.intervals else None,
            tail_ns=core.tail_ns,
        )

    def committed(self, batch: MeterBatch, at_ns: int | None = None) -> None:
        """Drop what ``batch`` carried, now that it is in the database; ``at_ns``: the meter's
        time its register is for."""
        del self.intervals[: len(batch.intervals)]
        del self.subintervals[: len(batch.subintervals)]
        del self.events[: len(batch.events)]
        del self.resets[: len(batch.resets)]
        del self.reads[: len(batch.reads)]
        self.committed_wh = batch.register_wh
        self.committed_at_ns = at_ns
        if batch.intervals:
            self.replace_from_ns = batch.tail_ns
        self.dirty = False
