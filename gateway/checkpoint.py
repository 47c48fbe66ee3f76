"""One checkpoint path: what a commit writes for a meter, built from its core and its source.

Between commits a meter's core produces closed intervals, demand sub-intervals and events, and
its peak may be reset; a :class:`Checkpoint` gathers them. :meth:`Checkpoint.batch` builds the
:class:`~gateway.sinks.store.MeterBatch` a commit writes in one transaction: the core's resume
state, the counters, the source's resume state and all that was gathered. Nothing is dropped
until :meth:`Checkpoint.committed` says the commit succeeded, so a commit that fails leaves it all
for the next one. The daemon and ``replay --db`` both go through here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from gateway.core.events import Event
from gateway.core.intervals import Interval
from gateway.core.meter import MeterCore
from gateway.core.state import counter_values, snapshot
from gateway.sinks.readback import StoredMeter
from gateway.sinks.store import MeterBatch
from meter_model.demand import Peak, SubInterval


@dataclass
class Checkpoint:
    """What one meter produced since its last commit."""

    name: str
    model: str
    source: str  # the source kind: gpio, serial, simulate, replay
    skipped_before: int = 0  # edges earlier runs skipped as already counted
    published_wh: int = 0  # the highest total published so far
    committed_wh: int = 0  # the register as the database holds it: what MQTT may publish
    intervals: list[Interval] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    subintervals: list[SubInterval] = field(default_factory=list)
    resets: list[tuple[Peak, int]] = field(default_factory=list)  # (peak cleared, when)

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
            published_wh=stored.published_wh,
            committed_wh=stored.register_wh,
        )

    def add_intervals(self, closed: Iterable[Interval] | None) -> None:
        if closed is not None:
            self.intervals.extend(closed)

    def add_events(self, events: Iterable[Event]) -> None:
        self.events.extend(events)

    def add_reset(self, cleared: Peak, when_ns: int) -> None:
        self.resets.append((cleared, when_ns))

    def collect(self, core: MeterCore) -> None:
        """Take the events and sub-intervals the core has handed over since the last call."""
        self.events.extend(core.take_events())
        self.subintervals.extend(core.take_subintervals())

    def batch(
        self, core: MeterCore, *, source_state: dict[str, Any] | None, skipped: int
    ) -> MeterBatch:
        """Return everything not yet committed; ``skipped`` is the source's count this run."""
        self.collect(core)
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
            published_wh=self.published_wh,
        )

    def committed(self, batch: MeterBatch) -> None:
        """Drop what ``batch`` carried, now that it is in the database."""
        del self.intervals[: len(batch.intervals)]
        del self.subintervals[: len(batch.subintervals)]
        del self.events[: len(batch.events)]
        del self.resets[: len(batch.resets)]
        self.committed_wh = batch.register_wh
