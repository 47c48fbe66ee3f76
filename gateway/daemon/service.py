"""The daemon: the loop, the commit policy and the lifecycle.

The loop is single-threaded: each pass steps every meter's pipeline (:mod:`gateway.pipeline`:
source -> core -> checkpoint), lets time pass, and commits everything derived since the last
commit to every sink, the store first, in one transaction when the commit policy says so
(:class:`~gateway.checkpoint.CommitPolicy`: at once, at most once a second, when a period closes
or an event occurs; else at most every ``commit_interval_s`` while edges come). Publishers
(MQTT, or the null one when it is off) show committed totals only. On SIGTERM or SIGINT it
commits what is left and returns 0. :mod:`gateway.daemon.wiring` builds what it runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TextIO

from gateway.checkpoint import CommitPolicy
from gateway.config import Config
from gateway.core.events import EventKind
from gateway.daemon.capturing import Capturing
from gateway.daemon.console import print_report
from gateway.daemon.notify import Notifier
from gateway.daemon.signals import Signals
from gateway.daemon.wiring import (
    SourceContext,
    build_meters,
    build_publisher,
    build_timeline,
    checked_models,
)
from gateway.errors import SinkError
from gateway.sinks.database import Database
from gateway.sinks.sink import Sink
from gateway.sinks.store import Store
from gateway.timeline import clock_synchronized

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.1
WATCHDOG_PING_NS = 1_000_000_000


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
        models = checked_models(config, ports=serial_opener is None)  # a test's opener: no device
        self.database = Database(config.gateway.database, lock="run")
        self.store = Store(self.database)
        self.policy = CommitPolicy(int(config.gateway.commit_interval_s * 1e9))
        self.storage_error: str | None = None
        start_ns = wall_ns()
        stored = [self.store.meter(m.name, m.model, m.source, start_ns) for m in config.meters]
        self.timeline = build_timeline(
            config.meters, stored, wall_ns, monotonic_ns, clock_synchronized
        )
        self.context = SourceContext(self.timeline, pin_factory, serial_opener=serial_opener)
        self.meters = build_meters(config, models, stored, start_ns, self.context)
        self.notifier = Notifier()
        self.capture = Capturing(
            config.gateway, lambda exc: self._note_all(EventKind.CAPTURE, f"capture off: {exc}")
        )
        # Called on the loop's thread after each commit and each reading line (the web view
        # takes an immutable snapshot there; nothing else may read the loop's objects).
        self.observers: list[Callable[[Service], None]] = []
        # Called on the loop's thread when the loop ends, before the last commit: whatever reads
        # the database beside the loop (the web view) stops first, so no reader holds the one
        # connection of the exclusively locked SQLite file while the store closes it.
        self.on_stop: list[Callable[[], None]] = []
        self.last_commit: tuple[int, float] | None = None  # (UTC ns, seconds it took)
        self.publisher = build_publisher(config, self.database, self.meters)
        # Committed to in this order: the database first, for what is published must be on it.
        self.sinks: tuple[Sink, ...] = (self.store, self.publisher)

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
                    self.capture.reopen(self.meters.now_by_meter())
                # A paced source behind its speed polls again at once: the CPU is the limit.
                signals.wait(0 if self.meters.behind else POLL_INTERVAL_S)
            logger.info("stopping on %s", signals.names() or "request")
        finally:
            status = self.shutdown()
        return status

    def _open_sources(self) -> None:
        self.meters.open(self.timeline.now)

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
            self.meters.clock_stepped(step)
        self.meters.step(mono, self.capture.write)

    def commit_if_due(self, mono_ns: int) -> None:
        """Commit when the policy says so; a failing database never stops the counting."""
        if not self.policy.due(mono_ns, urgent=self.meters.urgent, dirty=self.meters.dirty):
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
        self.capture.flush()
        batches = self.meters.batches(self.publisher.published_wh)
        now = self.timeline.now()
        for sink in self.sinks:
            sink.commit(batches, now, stamp=stamp)
            if sink is self.store:
                self.meters.committed(batches)
        self.last_commit = (self.timeline.now(), (self._monotonic_ns() - started_ns) / 1e9)
        self._observe()

    def _storage_failed(self, mono_ns: int, exc: SinkError) -> None:
        first = self.policy.failed(mono_ns)
        self.meters.trim()
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
        self.meters.note_all(kind, detail, self.timeline.now())

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
        self.capture.close(self.meters.now_by_meter())  # each file ends where it was watched
        self.publish_states(force=True)
        for sink in self.sinks:
            sink.pump()  # what is left goes out; commands no longer act
        self.publisher.close()
        self.report()
        self.meters.close()
        self.store.close()  # the database last: the publisher's outbox is in it
        return status

    def publish_states(self, *, force: bool) -> None:
        """Publish each meter's state when due, or when a sub-interval has just ended."""
        for state in self.meters.states_due(force=force):
            for sink in self.sinks:
                sink.publish(state)

    def pump(self) -> None:
        """Let every sink act on what arrived: commands and conflicts become the meters'."""
        for sink in self.sinks:
            for command in sink.pump():
                self.meters.act(command)
            for meter, detail in sink.take_conflicts():
                self.meters.conflict(meter, detail)

    def report(self) -> None:
        """Print each meter's reading line (and, while it fails, that the database does)."""
        print_report(self.out, self.meters, self.storage_error)
        self._observe()

    def _observe(self) -> None:
        for observer in self.observers:
            try:
                observer(self)
            except Exception:  # a view must never stop the counting
                logger.exception("an observer of the loop failed")
