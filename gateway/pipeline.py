"""One meter's pipeline: source -> core -> checkpoint, restored from what the database holds.

A :class:`MeterPipeline` is the one place a meter is restored from its stored state (its core's
resume state and its checkpoint). The daemon gives it a source and steps it once a pass: it polls
the source, feeds the core, gathers what closed, builds the batch a commit writes, learns that
the commit succeeded and gives the state to publish. ``replay --db`` restores it the same way and
feeds its core a whole log at once. :class:`Meters` is the daemon's meters together: what each
pass of its loop does to every one of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from gateway.checkpoint import Checkpoint, MeterBatch
from gateway.config import MeterSettings
from gateway.core.edge import CHANNEL_1K, CHANNEL_10, Edge
from gateway.core.events import Event, EventKind
from gateway.core.intervals import Interval
from gateway.core.meter import CoreSettings, MeterCore
from gateway.core.reads import ReadingCore
from gateway.core.state import restore
from gateway.sinks.readback import StoredMeter
from gateway.sinks.sink import Command, MeterState
from gateway.sources import Source
from gateway.timeline import ClockStep

logger = logging.getLogger(__name__)

CHUNK_FROM = 8  # from this many edges a poll goes through the core's vectorised path


def feed(core: MeterCore, edges: Sequence[Edge]) -> None:
    """Give a poll's edges (in time order) to a core: one by one, or as arrays when many.

    Both paths give identical results (the core's parity property); arrays are much cheaper.
    """
    if len(edges) < CHUNK_FROM:
        for edge in edges:
            core.push(edge)
        return
    blocks: dict[str, tuple[Any, Any]] = {}
    for channel in (CHANNEL_10, CHANNEL_1K):
        rows = sorted((e.t_ns, e.level) for e in edges if e.channel == channel)
        if rows:
            t = np.fromiter((r[0] for r in rows), np.int64, len(rows))
            lv = np.fromiter((r[1] for r in rows), np.int8, len(rows))
            blocks[channel] = (t, lv)
    core.push_chunk(blocks)


class MeterPipeline:
    """One meter: its source (the daemon's), its core and what awaits a commit."""

    def __init__(
        self, settings: MeterSettings, core_settings: CoreSettings, stored: StoredMeter | None
    ) -> None:
        """Restore the meter from ``stored`` (None: a meter new to the database)."""
        self.settings = settings
        self.stored = stored
        self.core = ReadingCore(settings.name, core_settings, record_subintervals=True)
        self.resumed = stored is not None and stored.core_state is not None
        if stored is not None and stored.core_state is not None:
            restore(self.core, stored.core_state)
        self.checkpoint = Checkpoint.resuming(
            stored, settings.name, settings.model, settings.source
        )
        self._source: Source | None = None
        self.now_ns = 0  # the meter's time: the last poll's (set in _at alone)
        self.finished = False
        self.behind = (0, 0)  # the last poll's (behind_ns, asked_ns): see Poll
        self.last_sub_end_us: int | None = None  # the sub-interval the last state was for

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def source(self) -> Source:
        if self._source is None:
            raise RuntimeError(f"{self.name}: the pipeline has no source")
        return self._source

    @source.setter
    def source(self, source: Source) -> None:
        self._source = source

    def attach(self, source: Source, now_ns: int) -> None:
        """Give the meter its source; a restart event says where counting resumed."""
        self._source = source
        self._at(now_ns)
        stored_wh = self.stored.register_wh if self.stored is not None else 0
        detail = f"resumed at {stored_wh} Wh" if self.resumed else "started counting from zero"
        self.note(EventKind.RESTART, detail, now_ns)

    def _at(self, now_ns: int) -> None:
        self.now_ns = now_ns

    def note(self, kind: EventKind, detail: str, at_ns: int | None = None) -> None:
        """Record an event of the meter (at its time now unless ``at_ns``)."""
        when = self.now_ns if at_ns is None else at_ns
        self.checkpoint.add_events([Event(when, kind, None, detail)])

    def open(self, now: Callable[[], int]) -> None:
        """Open the source; a live meter that resumed records the time it was not watched."""
        source = self.source
        source.open()
        if not source.live:
            return
        core = self.core
        levels = source.initial_levels
        self._at(now())
        if not self.resumed:
            core.begin(self.now_ns)
            core.set_initial_levels(dict(levels))  # a line already high is not counted
            return
        saved_ns = self.stored.saved_ns if self.stored is not None else None
        since = max(saved_ns or self.now_ns, core.last_ns or 0)
        changed = [ch for ch, level in levels.items() if core.last_level(ch) not in (None, level)]
        missed = sum(core.settings.wh_per_edge[ch] for ch in changed)
        detail = f"not watched for {(self.now_ns - since) / 1e9:.0f} s while the gateway was down"
        if changed:
            detail += (
                f"; the {' and '.join(changed)} line changed meanwhile: at least "
                f"{missed} Wh missed, counted back when the next edge comes"
            )
        core.mark_gap(since, self.now_ns, detail, missed)

    def step(self, mono_ns: int, capture: Callable[[Sequence[Edge], int], None]) -> None:
        """Poll the source once and feed what it gave to the core (``capture`` sees raw edges)."""
        poll = self.source.poll(mono_ns)
        core = self.core
        checkpoint = self.checkpoint
        if poll.edges:
            capture(poll.edges, poll.now_ns)
        for gap in poll.gaps:
            core.mark_gap(gap.from_ns, gap.to_ns, gap.why)
        feed(core, poll.edges)
        if poll.edges or poll.gaps:
            checkpoint.dirty = True
        checkpoint.add_events(poll.events)
        checker = self.source.checker
        if checker is not None:
            checkpoint.add_events(checker.check(core))
        core.begin(poll.now_ns)  # a source that gave no edge yet starts the core here
        checkpoint.add_intervals(core.advance(poll.now_ns))
        checkpoint.collect(core)
        self._at(poll.now_ns)
        self.behind = (poll.behind_ns, poll.asked_ns)
        if poll.finished and not self.finished:
            self.finished = True
            # The end of the log confirms its last edge and ends its last interval, exactly
            # as `replay` and `replay --db` do (issue #11); a restart finishes nothing twice.
            checkpoint.add_intervals(core.finish(poll.now_ns, keep_open=True))
            checkpoint.collect(core)
            checkpoint.dirty = True
            logger.info("%s: the replay reached the end of its log", self.name)

    def clock_stepped(self, step: ClockStep) -> None:
        """Record a step of the system clock (live meters only): an event, and when the
        intervals follow it, the labels in between as time not watched."""
        if not self.source.live:
            return
        self.note(EventKind.CLOCK_STEP, step.detail, step.at_ns)
        if step.followed_to_ns is not None:
            self.core.mark_gap(step.at_ns, step.followed_to_ns, step.detail)

    def gather(self, intervals: Iterable[Interval] | None) -> None:
        """Take intervals closed outside :meth:`step` and what the core handed over."""
        self.checkpoint.add_intervals(intervals)
        self.checkpoint.collect(self.core)

    def reset_peak(self, why: str) -> None:
        """Reset the peak demand now (recorded with the next commit); publish the state at once."""
        cleared = self.core.reset_peak(self.now_ns, why)
        if cleared is not None:
            self.checkpoint.add_reset(cleared, self.now_ns)
        self.last_sub_end_us = None

    def act(self, command: Command) -> None:
        """Do what a command received for the meter asks (``reset_peak``; others do nothing)."""
        if command.name == "reset_peak":
            self.reset_peak("MQTT command reset_peak")
            logger.info("%s: peak demand reset by MQTT command", self.name)

    def batch(self, published_wh: int = 0, *, skipped: int | None = None) -> MeterBatch:
        """Return everything not yet committed (see :class:`Checkpoint`).

        ``published_wh`` is the publisher's floor, kept with the rest (a publisher never
        lowers it: 0 leaves the stored one); ``skipped``: edges skipped as already counted,
        when no source says it.
        """
        if self._source is None:
            source_state = self.stored.source_state if self.stored is not None else None
        else:
            source_state = self._source.resume_state()
            skipped = self._source.skipped
        return self.checkpoint.batch(
            self.core, source_state=source_state, skipped=skipped or 0, published_wh=published_wh
        )

    def committed(self, batch: MeterBatch) -> None:
        """Learn that ``batch`` is in the database."""
        self.checkpoint.committed(batch, self.now_ns)

    def state(self) -> MeterState:
        """Return the meter's state to publish."""
        return MeterState(
            meter=self.name,
            reading=self.core.reading(self.now_ns),
            committed_wh=self.checkpoint.committed_wh,
            committed_at_ns=self.checkpoint.committed_at_ns,
            quality=self.core.current_quality(self.now_ns),
        )

    def state_due(self, *, force: bool) -> bool:
        """Whether a state is due: when forced, or when a sub-interval has just ended."""
        demand = self.core.demand
        sub_end = demand.last.end_us if demand is not None and demand.last else None
        if not force and sub_end == self.last_sub_end_us:
            return False
        self.last_sub_end_us = sub_end
        return True

    def close(self) -> None:
        if self._source is not None:
            self._source.close()


class Meters(tuple[MeterPipeline, ...]):
    """The daemon's meters, in the configuration's order: what the loop does to each of them."""

    __slots__ = ()

    def named(self, name: str) -> MeterPipeline | None:
        return next((m for m in self if m.name == name), None)

    @property
    def urgent(self) -> bool:
        """Whether any meter has something to put on the card before it is published."""
        return any(m.checkpoint.urgent for m in self)

    @property
    def dirty(self) -> bool:
        return any(m.checkpoint.dirty for m in self)

    @property
    def behind(self) -> bool:
        """Whether a paced source is behind its speed (the loop then polls again at once)."""
        return any(m.behind[0] for m in self)

    def now_by_meter(self) -> dict[str, int]:
        return {m.name: m.now_ns for m in self}

    def open(self, now: Callable[[], int]) -> None:
        for pipeline in self:
            pipeline.open(now)

    def step(self, mono_ns: int, capture: Callable[[Sequence[Edge], int], None]) -> None:
        for pipeline in self:
            pipeline.step(mono_ns, capture)

    def clock_stepped(self, step: ClockStep) -> None:
        for pipeline in self:
            pipeline.clock_stepped(step)

    def note_all(self, kind: EventKind, detail: str, at_ns: int) -> None:
        """Record an event at ``at_ns`` on every meter."""
        for pipeline in self:
            pipeline.note(kind, detail, at_ns)

    def act(self, command: Command) -> None:
        """Hand a command to the meter it names (none such: it is dropped)."""
        pipeline = self.named(command.meter)
        if pipeline is not None:
            pipeline.act(command)

    def conflict(self, meter: str, detail: str) -> None:
        """Record another publisher seen as this gateway, on the meter it was seen for."""
        pipeline = self.named(meter)
        if pipeline is not None:
            pipeline.note(EventKind.CONFLICT, detail)

    def batches(self, published_wh: Callable[[str], int]) -> list[MeterBatch]:
        """Return every meter's batch, each with the publisher's floor for it."""
        return [m.batch(published_wh(m.name)) for m in self]

    def committed(self, batches: Sequence[MeterBatch]) -> None:
        for pipeline, batch in zip(self, batches, strict=True):
            pipeline.committed(batch)

    def trim(self) -> None:
        """Bound what waits for a failing database (see :meth:`Checkpoint.trim`)."""
        for pipeline in self:
            pipeline.checkpoint.trim(pipeline.now_ns)

    def states_due(self, *, force: bool) -> Iterator[MeterState]:
        """Yield each meter's state when due, or when a sub-interval has just ended."""
        for pipeline in self:
            if pipeline.state_due(force=force):
                yield pipeline.state()

    def close(self) -> None:
        for pipeline in self:
            pipeline.close()
