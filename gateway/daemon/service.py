"""The daemon: the loop, the commit policy and the lifecycle, and a reading line.

The loop is single-threaded: each pass steps every meter's pipeline (:mod:`gateway.pipeline`:
source -> core -> checkpoint), lets time pass, and commits everything derived since the last
commit to every sink, the store first, in one transaction when the commit policy says so
(:class:`~gateway.checkpoint.CommitPolicy`: at once, at most once a second, when a period closes
or an event occurs; else at most every ``commit_interval_s`` while edges come). Publishers
(MQTT, or the null one when it is off) show committed totals only. On SIGTERM or SIGINT it
commits what is left and returns 0.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TextIO

from gateway.checkpoint import CommitPolicy
from gateway.config import Config, core_settings, meter_config
from gateway.core.edge import Edge
from gateway.core.events import EventKind
from gateway.core.meter import Reading
from gateway.daemon.notify import Notifier
from gateway.daemon.signals import Signals
from gateway.daemon.wiring import SourceContext, build_source, check_inputs
from gateway.errors import SinkError
from gateway.pipeline import MeterPipeline
from gateway.pulselog.capture import Capture
from gateway.sinks.database import Database
from gateway.sinks.payloads import MeterInfo
from gateway.sinks.publisher import NullPublisher, Publisher
from gateway.sinks.sink import Sink
from gateway.sinks.store import Store
from gateway.sources import is_live
from gateway.timefmt import NS_PER_S, NS_PER_US, format_iso
from gateway.timeline import ClockStep, Timeline, clock_synchronized
from meter_model.units import lcd_kwh, round_kw

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
                if is_live(m.source)  # simulated and replayed clocks are their own
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
        self.meters: list[MeterPipeline] = []
        for settings, model, entry in zip(config.meters, models, stored, strict=True):
            pipeline = MeterPipeline(
                settings, core_settings(settings, model, config.billing), entry
            )
            last_seen = pipeline.core.last_seen()
            source = build_source(
                settings, model, start_ns, entry.source_state, last_seen, self.context
            )
            pipeline.attach(source, start_ns)
            self.meters.append(pipeline)
        self.notifier = Notifier()
        self.capture: Capture | None = None
        if config.gateway.capture_dir:
            self.capture = Capture(
                config.gateway.capture_dir, config.gateway.capture_keep_days, config.gateway.id
            )
        # Called on the loop's thread after each commit and each reading line (the web view
        # takes an immutable snapshot there; nothing else may read the loop's objects).
        self.observers: list[Callable[[Service], None]] = []
        # Called on the loop's thread when the loop ends, before the last commit: whatever reads
        # the database beside the loop (the web view) stops first, so no reader holds the one
        # connection of the exclusively locked SQLite file while the store closes it.
        self.on_stop: list[Callable[[], None]] = []
        self.last_commit: tuple[int, float] | None = None  # (UTC ns, seconds it took)
        self.publisher = self._publisher()
        for pipeline, entry in zip(self.meters, stored, strict=True):
            self.publisher.resume(pipeline.name, entry.published_wh, entry.register_wh)
        # Committed to in this order: the database first, for what is published must be on it.
        self.sinks: tuple[Sink, ...] = (self.store, self.publisher)

    def _publisher(self) -> Publisher:
        """Return the publisher the configuration asks for: MQTT, or the null one when off."""
        if not self.config.mqtt.enabled:
            return NullPublisher()
        from gateway.sinks.identity import database_identity
        from gateway.sinks.mqtt import MqttPublisher  # paho is imported only when MQTT is on
        from gateway.sinks.outbox import Outbox

        return MqttPublisher(
            self.config.mqtt,
            self.config.gateway.id,
            [MeterInfo(m.settings.name, m.settings.model) for m in self.meters],
            Outbox(self.database),
            identity=database_identity(self.database),
        )

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
                    self._capturing(partial(Capture.reopen, now_by_meter=self._now_by_meter()))
                # A paced source behind its speed polls again at once: the CPU is the limit.
                signals.wait(0 if any(m.behind[0] for m in self.meters) else POLL_INTERVAL_S)
            logger.info("stopping on %s", ", ".join(signal_names(signals.received)) or "request")
        finally:
            status = self.shutdown()
        return status

    def _open_sources(self) -> None:
        for pipeline in self.meters:
            pipeline.open(self.timeline.now)

    def start(self) -> None:
        """Open the sources, start the sinks, tell systemd the gateway is ready."""
        self._open_sources()
        for sink in self.sinks:
            sink.start()
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
        due = mono - self._last_state >= self.config.mqtt.state_interval_s * 1e9
        self.publish_states(force=due)
        if due:
            self._last_state = mono
        self.pump()
        if mono - self._last_report >= self.config.gateway.report_interval_s * 1e9:
            self.report()
            self._last_report = mono

    def step(self) -> None:
        """Poll every source once and feed what it gave to its meter's core."""
        mono = self._monotonic_ns()
        step = self.timeline.check()
        if step is not None:
            self._clock_step(step)
        for pipeline in self.meters:
            pipeline.step(mono, self._capture_edges)

    def _capture_edges(self, edges: Sequence[Edge], now_ns: int) -> None:
        self._capturing(partial(Capture.write, edges=edges, now_ns=now_ns))  # raw

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
            self._note_all(EventKind.STORAGE, f"the database works again after {seconds:.0f} s")

    def commit(self, *, stamp: bool = False) -> None:
        """Commit every meter's checkpoint in one transaction (``stamp``: see Store.commit)."""
        started_ns = self._monotonic_ns()
        self._capturing(Capture.flush)
        batches = [m.batch(self.publisher.published_wh(m.name)) for m in self.meters]
        now = self.timeline.now()
        for sink in self.sinks:
            sink.commit(batches, now, stamp=stamp)
            if sink is self.store:
                for pipeline, batch in zip(self.meters, batches, strict=True):
                    pipeline.committed(batch)
        self.last_commit = (self.timeline.now(), (self._monotonic_ns() - started_ns) / 1e9)
        self._observe()

    def _storage_failed(self, mono_ns: int, exc: SinkError) -> None:
        first = self.policy.failed(mono_ns)
        for pipeline in self.meters:
            pipeline.checkpoint.trim(pipeline.now_ns)
        if not first:
            logger.debug("commit failed again: %s", exc)
            return
        logger.error("commit failed: %s; counting goes on in memory, retrying", exc)
        self.storage_error = str(exc)
        self._note_all(
            EventKind.STORAGE, f"the database failed ({exc}); counting goes on in memory"
        )
        for pipeline in self.meters:  # told at once, outside the database that fails
            for sink in self.sinks:
                sink.tell(pipeline.name, pipeline.checkpoint.events[-1])

    def _note_all(self, kind: EventKind, detail: str) -> None:
        """Record an event, at the timeline's now, on every meter."""
        now = self.timeline.now()
        for pipeline in self.meters:
            pipeline.note(kind, detail, now)

    def shutdown(self) -> int:
        """Commit what is left, say goodbye, release everything; return the exit status."""
        self.notifier.stopping()
        for stop in self.on_stop:
            stop()
        status = 0
        try:
            self.commit(stamp=True)
        except SinkError as exc:
            # Shut down cleanly all the same; systemd restarts us (exit 1), and what was
            # not committed is counted again from the sources that can replay it.
            logger.error("the last commit failed: %s", exc)
            status = 1
        self._capturing(partial(Capture.close, now_by_meter=self._now_by_meter()))  # watched
        self.publish_states(force=True)
        for sink in self.sinks:
            sink.pump()  # what is left goes out; commands no longer act
        self.publisher.close()
        self.report()
        for pipeline in self.meters:
            pipeline.close()
        self.store.close()  # the database last: the publisher's outbox is in it
        return status

    def publish_states(self, *, force: bool) -> None:
        """Publish each meter's state when due, or when a sub-interval has just ended."""
        for pipeline in self.meters:
            if pipeline.state_due(force=force):
                state = pipeline.state()
                for sink in self.sinks:
                    sink.publish(state)

    def pump(self) -> None:
        """Let every sink act on what arrived: commands and conflicts become the meters'."""
        for sink in self.sinks:
            for command in sink.pump():
                pipeline = self._meter(command.meter)
                if pipeline is not None and command.name == "reset_peak":
                    pipeline.reset_peak("MQTT command reset_peak")
                    logger.info("%s: peak demand reset by MQTT command", command.meter)
            for meter, detail in sink.take_conflicts():
                pipeline = self._meter(meter)
                if pipeline is not None:
                    pipeline.note(EventKind.CONFLICT, detail)

    def _meter(self, name: str) -> MeterPipeline | None:
        return next((m for m in self.meters if m.name == name), None)

    def _now_by_meter(self) -> dict[str, int]:
        return {m.name: m.now_ns for m in self.meters}

    def _clock_step(self, step: ClockStep) -> None:
        seconds = step.delta_ns / 1e9
        if step.followed:
            logger.warning("the system clock stepped forward by %.1f s; timestamps follow", seconds)
        else:
            logger.warning(
                "the system clock stepped back by %.1f s; timestamps keep running forward",
                -seconds,
            )
        detail = f"system clock stepped by {seconds:+.3f} s; " + (
            "intervals now follow it" if step.followed else "timestamps keep running on"
        )
        followed_to_ns = step.at_ns + step.delta_ns if step.followed else None
        for pipeline in self.meters:
            pipeline.clock_stepped(step.at_ns, detail, followed_to_ns)

    def _capturing(self, action: Callable[[Capture], None]) -> None:
        """Do something with the capture, if on; a failure turns capture off, never the daemon."""
        if self.capture is None:
            return
        try:
            action(self.capture)
        except SinkError as exc:
            logger.error("%s; capture is off until the gateway restarts", exc)
            self.capture = None
            self._note_all(EventKind.CAPTURE, f"capture off: {exc}")

    def report(self) -> None:
        """Print each meter's reading line (and, while it fails, that the database does)."""
        for pipeline in self.meters:
            line = format_reading(pipeline.core.reading(pipeline.now_ns))
            print(line + format_behind(*pipeline.behind), file=self.out, flush=True)
        if self.storage_error is not None:
            print(f"not committed: {self.storage_error}; counting in memory", file=self.out)
        self._observe()

    def _observe(self) -> None:
        for observer in self.observers:
            try:
                observer(self)
            except Exception:  # a view must never stop the counting
                logger.exception("an observer of the loop failed")
