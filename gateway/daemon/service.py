"""The main loop: sources -> core -> checkpoint -> store -> publisher, and a reading line.

The loop is single-threaded: it polls every source, feeds each meter's core, lets time pass,
and commits everything derived since the last commit in one transaction when the commit policy
says so (:class:`~gateway.checkpoint.CommitPolicy`: at once, at most once a second, when a
period closes or an event occurs; else at most every ``commit_interval_s`` while edges come).
MQTT publishes committed totals only. On SIGTERM or SIGINT it commits what is left and returns 0.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from gateway.checkpoint import Checkpoint, CommitPolicy
from gateway.config import Config, MeterSettings, core_settings, meter_config
from gateway.core.edge import CHANNEL_1K, CHANNEL_10, Edge
from gateway.core.events import Event, EventKind
from gateway.core.meter import MeterCore, Reading
from gateway.core.reads import ReadingCore
from gateway.core.state import restore
from gateway.daemon.clock import ClockStep, Timeline, clock_synchronized
from gateway.daemon.notify import Notifier
from gateway.daemon.signals import Signals
from gateway.daemon.wiring import SourceContext, build_source, check_inputs
from gateway.errors import SinkError
from gateway.pulselog.capture import Capture
from gateway.sinks.database import Database
from gateway.sinks.payloads import energy_time_ns as retained_time_ns
from gateway.sinks.payloads import event_payload, state_payload
from gateway.sinks.readback import StoredMeter
from gateway.sinks.store import MeterBatch, Store
from gateway.sources import Source
from gateway.timefmt import NS_PER_S, NS_PER_US, format_iso
from meter_model import MeterConfig
from meter_model.units import lcd_kwh, round_kw

if TYPE_CHECKING:
    from gateway.sinks.mqtt import Command, MqttPublisher

logger = logging.getLogger(__name__)


def signal_names(numbers: Sequence[int]) -> list[str]:
    return [signal.Signals(n).name for n in numbers]


POLL_INTERVAL_S = 0.1
WATCHDOG_PING_NS = 1_000_000_000


def format_behind(behind_ns: int, asked_ns: int) -> str:
    """Return what a reading line adds for a paced source that cannot keep up ('' on pace)."""
    if behind_ns <= 0 or asked_ns <= 0:
        return ""
    seconds = behind_ns // NS_PER_S
    days, rest = divmod(seconds, 86_400)
    span = f"{days} d " if days else ""
    span += f"{rest // 3600:02d}:{rest // 60 % 60:02d}:{rest % 60:02d}"
    reached = (asked_ns - behind_ns) / asked_ns
    return f"; running behind its speed by {span} of source time (at {reached:.1%} of it)"


def format_reading(reading: Reading) -> str:
    """Return one human-readable line for a reading."""
    peak = "-"
    if reading.peak is not None:
        window_end = format_iso(reading.peak.window_end_us * NS_PER_US)
        peak = f"{round_kw(reading.peak.demand_kw)} kW (window ending {window_end})"
        if reading.peak_since_ns is not None:
            peak += f" since {format_iso(reading.peak_since_ns, 0)}"
    return (
        f"{format_iso(reading.t_ns, 0)} {reading.meter}: "
        f"{reading.energy_wh / 1000:.3f} kWh (LCD {lcd_kwh(reading.energy_wh)}), "
        f"power {reading.power_kw:.2f} kW, demand {round_kw(reading.demand_kw)} kW, peak {peak}, "
        f"edges 10={reading.edges['10']} 1K={reading.edges['1K']}"
    )


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


@dataclass
class MeterRuntime:
    """One meter in the running service: its settings, source, core and what awaits a commit."""

    settings: MeterSettings
    model: MeterConfig
    core: MeterCore
    source: Source
    stored: StoredMeter
    checkpoint: Checkpoint
    now_ns: int
    finished: bool = False
    last_sub_end_us: int | None = None
    holding: bool = False  # the published total is held above the register
    behind: tuple[int, int] = (0, 0)  # the last poll's (behind_ns, asked_ns): see Poll

    def batch(self) -> MeterBatch:
        """Return everything not yet committed (see :class:`Checkpoint`)."""
        return self.checkpoint.batch(
            self.core, source_state=self.source.resume_state(), skipped=self.source.skipped
        )


class Service:
    """Run every configured meter until ``stop`` is set."""

    def __init__(
        self,
        config: Config,
        *,
        out: TextIO,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        wall_ns: Callable[[], int] = time.time_ns,
        pin_factory: Any = None,
        serial_opener: Any = None,
        clock_synchronized: Callable[[], bool] = clock_synchronized,
    ) -> None:
        self.config = config
        self.out = out
        self._monotonic_ns = monotonic_ns
        # Everything that can be checked without touching the database is checked first.
        models = [
            meter_config(settings, f"{config.path or 'config'}: meters[{index}]")
            for index, settings in enumerate(config.meters)
        ]
        check_inputs(config, ports=serial_opener is None)  # a test's opener has no device
        self.database = Database(config.gateway.database, lock="run")
        self.store = Store(self.database)
        self.policy = CommitPolicy(int(config.gateway.commit_interval_s * 1e9))
        self.storage_error: str | None = None
        start_ns = wall_ns()
        stored = [
            self.store.meter(settings.name, settings.model, settings.source, start_ns)
            for settings in config.meters
        ]
        # The timeline never starts behind what was already counted.
        floor = max(
            [
                int((s.core_state or {}).get("last_ns") or 0)
                for s, m in zip(stored, config.meters, strict=True)
                if m.source in ("gpio", "serial")  # simulated and replayed clocks are their own
            ],
            default=0,
        )
        self.timeline = Timeline(
            wall_ns=wall_ns,
            monotonic_ns=monotonic_ns,
            floor_ns=floor,
            synchronized=clock_synchronized,
        )
        self.context = SourceContext(self.timeline, pin_factory, serial_opener=serial_opener)
        self.meters = [
            self._open_meter(settings, model, entry, start_ns)
            for settings, model, entry in zip(config.meters, models, stored, strict=True)
        ]
        self.notifier = Notifier()
        self.capture: Capture | None = None
        if config.gateway.capture_dir:
            self.capture = Capture(
                config.gateway.capture_dir, config.gateway.capture_keep_days, config.gateway.id
            )
        # Called on the loop's thread after each commit and each reading line (the web view
        # takes an immutable snapshot there; nothing else may read the loop's objects).
        self.observers: list[Callable[[Service], None]] = []
        self.last_commit: tuple[int, float] | None = None  # (UTC ns, seconds it took)
        self.mqtt: MqttPublisher | None = None
        if config.mqtt.enabled:
            from gateway.sinks.identity import database_identity
            from gateway.sinks.mqtt import MqttPublisher
            from gateway.sinks.outbox import Outbox
            from gateway.sinks.payloads import MeterInfo

            self.mqtt = MqttPublisher(
                config.mqtt,
                config.gateway.id,
                [MeterInfo(m.settings.name, m.settings.model) for m in self.meters],
                Outbox(self.database),
                identity=database_identity(self.database),
            )

    def _open_meter(
        self, settings: MeterSettings, model: MeterConfig, stored: StoredMeter, now_ns: int
    ) -> MeterRuntime:
        core = ReadingCore(
            settings.name,
            core_settings(settings, model, self.config.billing),
            record_subintervals=True,
        )
        resumed = stored.core_state is not None
        if stored.core_state is not None:
            restore(core, stored.core_state)
        source = build_source(
            settings, model, now_ns, stored.source_state, core.last_seen(), self.context
        )
        checkpoint = Checkpoint.resuming(stored, settings.name, settings.model, settings.source)
        if checkpoint.published_wh > stored.register_wh:
            # Only an older version stored more than it counted: a total it took from the broker.
            logger.warning(
                "%s: the database says %d Wh was published, above its register %d Wh; that came "
                "from the broker, not from this meter, and is ignored",
                settings.name,
                checkpoint.published_wh,
                stored.register_wh,
            )
            checkpoint.published_wh = stored.register_wh
        detail = f"resumed at {stored.register_wh} Wh" if resumed else "started counting from zero"
        checkpoint.add_events([Event(now_ns, EventKind.RESTART, None, detail)])
        return MeterRuntime(settings, model, core, source, stored, checkpoint, now_ns)

    def _open_sources(self) -> None:
        """Open every source; a live meter that resumed records the time it was not watched."""
        for runtime in self.meters:
            source = runtime.source
            source.open()
            if not source.live:
                continue
            core = runtime.core
            levels = source.initial_levels
            now = self.timeline.now()
            runtime.now_ns = now
            if runtime.stored.core_state is None:
                core.begin(now)
                core.set_initial_levels(dict(levels))  # a line already high is not counted
                continue
            since = max(runtime.stored.saved_ns or now, core.last_ns or 0)
            changed = [
                ch for ch, level in levels.items() if core.last_level(ch) not in (None, level)
            ]
            missed = sum(core.settings.wh_per_edge[ch] for ch in changed)
            detail = f"not watched for {(now - since) / 1e9:.0f} s while the gateway was down"
            if changed:
                detail += (
                    f"; the {' and '.join(changed)} line changed meanwhile: at least "
                    f"{missed} Wh missed, counted back when the next edge comes"
                )
            core.mark_gap(since, now, detail, missed)

    def run(self, signals: Signals) -> int:
        """Run the main loop until SIGTERM or SIGINT; commit what is left; return the status.

        SIGHUP starts new capture files. systemd hears READY=1 once the sources are open and
        WATCHDOG=1 every second the loop runs, whether or not the database works: counting goes
        on in memory while it fails, and a restart would only lose that.
        """
        try:
            self.start()
            while not signals.stop.is_set():
                self.tick()
                if signals.reopen.is_set():
                    signals.reopen.clear()
                    now_by_meter = {m.settings.name: m.now_ns for m in self.meters}
                    self._capturing(partial(Capture.reopen, now_by_meter=now_by_meter))
                # A paced source behind its speed polls again at once: the CPU is the limit.
                signals.wait(0 if any(m.behind[0] for m in self.meters) else POLL_INTERVAL_S)
            logger.info("stopping on %s", ", ".join(signal_names(signals.received)) or "request")
        finally:
            status = self.shutdown()
        return status

    def start(self) -> None:
        """Open the sources, connect to the broker, tell systemd the gateway is ready."""
        self._open_sources()
        if self.mqtt is not None:
            self.mqtt.start()
        mono = self._monotonic_ns()
        self._last_report = self._last_state = self._last_ping = mono
        self.notifier.ready(f"{len(self.meters)} meter(s)")
        self.report()

    def tick(self) -> None:
        """One pass of the main loop: poll, commit when due, ping, publish, report."""
        self.step()
        mono = self._monotonic_ns()
        self.commit_if_due(mono)
        if mono - self._last_ping >= WATCHDOG_PING_NS:
            self.notifier.watchdog()
            self._last_ping = mono
        if self.mqtt is not None:
            due = mono - self._last_state >= self.config.mqtt.state_interval_s * 1e9
            self.publish_states(force=due)
            if due:
                self._last_state = mono
            self.handle_commands(self.mqtt.pump())
            self.note_conflicts(self.mqtt.take_conflicts())
        if mono - self._last_report >= self.config.gateway.report_interval_s * 1e9:
            self.report()
            self._last_report = mono

    def commit_if_due(self, mono_ns: int) -> None:
        """Commit when the policy says so; a failing database never stops the counting."""
        urgent = any(m.checkpoint.urgent for m in self.meters)
        dirty = any(m.checkpoint.dirty for m in self.meters)
        if not self.policy.due(mono_ns, urgent=urgent, dirty=dirty):
            return
        try:
            self.commit()
        except SinkError as exc:
            self._storage_failed(mono_ns, exc)
            return
        since = self.policy.succeeded(mono_ns)
        if since is not None:
            seconds = (mono_ns - since) / 1e9
            logger.warning("the database works again after %.0f s; all is committed", seconds)
            self.storage_error = None
            self._note_storage(f"the database works again after {seconds:.0f} s")

    def _storage_failed(self, mono_ns: int, exc: SinkError) -> None:
        first = self.policy.failed(mono_ns)
        for runtime in self.meters:
            runtime.checkpoint.trim(runtime.now_ns)
        if first:
            logger.error("commit failed: %s; counting goes on in memory, retrying", exc)
            self.storage_error = str(exc)
            self._note_storage(f"the database failed ({exc}); counting goes on in memory")
            if self.mqtt is not None:
                # Told at once, outside the outbox (which is in the failing database).
                for runtime in self.meters:
                    self.mqtt.publish_now(
                        runtime.settings.name,
                        "event",
                        event_payload(runtime.settings.name, runtime.checkpoint.events[-1], None),
                    )
        else:
            logger.debug("commit failed again: %s", exc)

    def _note_storage(self, detail: str) -> None:
        now = self.timeline.now()
        for runtime in self.meters:
            runtime.checkpoint.add_events([Event(now, EventKind.STORAGE, None, detail)])

    def shutdown(self) -> int:
        """Commit what is left, say goodbye, release everything; return the exit status."""
        self.notifier.stopping()
        status = 0
        try:
            self.commit(stamp=True)
        except SinkError as exc:
            # Shut down cleanly all the same; systemd restarts us (exit 1), and what was
            # not committed is counted again from the sources that can replay it.
            logger.error("the last commit failed: %s", exc)
            status = 1
        self._capturing(Capture.close)
        if self.mqtt is not None:
            self.publish_states(force=True)
            self.mqtt.pump()
            self.mqtt.stop()
        self.report()
        for runtime in self.meters:
            runtime.source.close()
        self.database.close()
        return status

    def publish_states(self, *, force: bool) -> None:
        """Publish each meter's state when due, or when a sub-interval has just ended."""
        assert self.mqtt is not None
        for runtime in self.meters:
            demand = runtime.core.demand
            sub_end = demand.last.end_us if demand is not None and demand.last else None
            if not force and sub_end == runtime.last_sub_end_us:
                continue
            runtime.last_sub_end_us = sub_end
            payload = self.state_payload(runtime)
            if payload is not None:
                self.mqtt.publish_state(runtime.settings.name, payload)

    def state_payload(self, runtime: MeterRuntime) -> dict[str, Any] | None:
        """Return a meter's state message, or None while it has no total to show yet.

        The total never goes backwards, across restarts too: Home Assistant reads a drop on a
        total_increasing sensor as a meter reset and would count everything again.
        """
        checkpoint = runtime.checkpoint
        name = runtime.settings.name
        reading = runtime.core.reading(runtime.now_ns)
        # Only what the database holds is published: edges counted since the last commit could
        # still be lost to a crash, and the total must not come back lower after a restart. Nor
        # below what the broker retains of THIS database's (a power cut that rolled it back to
        # an older image): only a state it signed counts, and that floor is never stored, for
        # nothing received from the broker is (issue #17).
        committed = min(reading.energy_wh, checkpoint.committed_wh)
        own = self.mqtt.retained_state(name) if self.mqtt is not None else None
        floor = max(checkpoint.published_wh, own.energy_wh if own is not None else 0)
        energy_wh = max(committed, floor)
        if energy_wh == 0:
            return None  # never a zero or unknown total at start-up
        if committed < floor:
            if not runtime.holding:  # said once a hold, not at every state
                logger.warning(
                    "%s: register %d Wh is below the %d Wh already published; holding until "
                    "it is above",
                    name,
                    committed,
                    floor,
                )
            runtime.holding = True
            # The total shown was reached before, at the time its own state said.
            if own is not None and energy_wh == own.energy_wh:
                energy_time_ns = retained_time_ns(own)
            else:
                energy_time_ns = checkpoint.published_at_ns
        else:
            runtime.holding = False
            energy_time_ns = checkpoint.committed_at_ns
            checkpoint.published_wh = energy_wh  # this database's own count, and only that
            checkpoint.published_at_ns = energy_time_ns
        quality = runtime.core.current_quality(runtime.now_ns)
        return state_payload(reading, energy_wh, quality, energy_time_ns)

    def note_conflicts(self, conflicts: Sequence[tuple[str, str]]) -> None:
        """Record, as an event of the meter, that another database publishes as this one."""
        for meter, detail in conflicts:
            for runtime in self.meters:
                if runtime.settings.name == meter:
                    event = Event(runtime.now_ns, EventKind.CONFLICT, None, detail)
                    runtime.checkpoint.add_events([event])

    def handle_commands(self, commands: Sequence[Command]) -> None:
        for command in commands:
            runtime = next((m for m in self.meters if m.settings.name == command.meter), None)
            if runtime is None:
                continue
            if command.name == "reset_peak":
                cleared = runtime.core.reset_peak(runtime.now_ns, "MQTT command reset_peak")
                if cleared is not None:
                    runtime.checkpoint.add_reset(cleared, runtime.now_ns)
                logger.info("%s: peak demand reset by MQTT command", command.meter)
                runtime.last_sub_end_us = None  # publish the new state at once

    def step(self) -> None:
        """Poll every source once and feed what it gave to its meter's core."""
        mono = self._monotonic_ns()
        step = self.timeline.check()
        if step is not None:
            self._clock_step(step)
        for runtime in self.meters:
            poll = runtime.source.poll(mono)
            core = runtime.core
            if poll.edges:
                self._capturing(partial(Capture.write, edges=poll.edges, now_ns=poll.now_ns))  # raw
            for gap_from, gap_to, why in poll.gaps:
                core.mark_gap(gap_from, gap_to, why)
            feed(core, poll.edges)
            if poll.edges or poll.gaps:
                runtime.checkpoint.dirty = True
            runtime.checkpoint.add_events(poll.events)
            checker = runtime.source.checker
            if checker is not None:
                runtime.checkpoint.add_events(checker.check(core))
            core.begin(poll.now_ns)  # a source that gave no edge yet starts the core here
            runtime.checkpoint.add_intervals(core.advance(poll.now_ns))
            runtime.checkpoint.collect(core)
            runtime.now_ns = poll.now_ns
            runtime.behind = (poll.behind_ns, poll.asked_ns)
            if poll.finished and not runtime.finished:
                runtime.finished = True
                # The end of the log confirms its last edge and ends its last interval, exactly
                # as `replay` and `replay --db` do (issue #11); a restart finishes nothing twice.
                runtime.checkpoint.add_intervals(core.finish(poll.now_ns, keep_open=True))
                runtime.checkpoint.collect(core)
                runtime.checkpoint.dirty = True
                logger.info("%s: the replay reached the end of its log", runtime.settings.name)

    def _clock_step(self, step: ClockStep) -> None:
        seconds = step.delta_ns / 1e9
        if step.followed:
            logger.warning("the system clock stepped forward by %.1f s; timestamps follow", seconds)
        else:
            logger.warning(
                "the system clock stepped back by %.1f s; timestamps keep running forward",
                -seconds,
            )
        for runtime in self.meters:
            if not runtime.source.live:
                continue
            detail = f"system clock stepped by {seconds:+.3f} s; " + (
                "intervals now follow it" if step.followed else "timestamps keep running on"
            )
            runtime.checkpoint.add_events([Event(step.at_ns, EventKind.CLOCK_STEP, None, detail)])
            if step.followed:
                # The labels in between were never real time: those intervals are partial.
                runtime.core.mark_gap(step.at_ns, step.at_ns + step.delta_ns, detail)

    def _capturing(self, action: Callable[[Capture], None]) -> None:
        """Do something with the capture, if on; a failure turns capture off, never the daemon."""
        if self.capture is None:
            return
        try:
            action(self.capture)
        except SinkError as exc:
            logger.error("%s; capture is off until the gateway restarts", exc)
            self.capture = None
            for runtime in self.meters:
                event = Event(self.timeline.now(), EventKind.CAPTURE, None, f"capture off: {exc}")
                runtime.checkpoint.add_events([event])

    def commit(self, *, stamp: bool = False) -> None:
        """Commit every meter's checkpoint in one transaction (``stamp``: see Store.commit)."""
        started_ns = self._monotonic_ns()
        self._capturing(Capture.flush)
        batches = [runtime.batch() for runtime in self.meters]
        counted_at = [runtime.now_ns for runtime in self.meters]  # what time each total is for
        self.store.commit(batches, self.timeline.now(), stamp=stamp)
        for runtime, batch, at_ns in zip(self.meters, batches, counted_at, strict=True):
            runtime.checkpoint.committed(batch)
            runtime.checkpoint.committed_at_ns = at_ns
        if self.mqtt is not None and any(b.intervals or b.events or b.reads for b in batches):
            self.mqtt.outbox_changed()
        self.last_commit = (self.timeline.now(), (self._monotonic_ns() - started_ns) / 1e9)
        self._observe()

    def report(self) -> None:
        """Print each meter's reading line (and, while it fails, that the database does)."""
        for runtime in self.meters:
            line = format_reading(runtime.core.reading(runtime.now_ns))
            print(line + format_behind(*runtime.behind), file=self.out, flush=True)
        if self.storage_error is not None:
            print(f"not committed: {self.storage_error}; counting in memory", file=self.out)
        self._observe()

    def _observe(self) -> None:
        for observer in self.observers:
            try:
                observer(self)
            except Exception:  # a view must never stop the counting
                logger.exception("an observer of the loop failed")
