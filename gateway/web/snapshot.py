"""What the loop shows the web thread: an immutable snapshot, handed over through a holder.

The loop (one thread) owns the cores, the checkpoints and the database session; the web
server's threads must never touch them. After each commit and each reading line the loop
calls :func:`take_snapshot` (on its own thread; no I/O, a few attribute reads per meter) and
puts the result in a :class:`SnapshotHolder`, which web threads read or wait on.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.timefmt import NS_PER_US
from gateway.timeline import clock_synchronized
from meter_model.units import round_kw

if TYPE_CHECKING:
    from gateway.daemon.service import Service


@dataclass(frozen=True)
class MeterSnapshot:
    """One meter as the loop last saw it; energy is what the database holds (committed)."""

    name: str
    model: str
    source: str
    energy_wh: int  # committed register, as status and MQTT show it
    edges: tuple[tuple[str, int], ...]  # (channel, edges counted)
    power_kw: float
    demand_kw: float
    peak_demand_kw: float | None
    peak_demand_end_ns: int | None
    quality: str
    glitches: int
    inferred_edges: int
    mismatches: int


@dataclass(frozen=True)
class GatewaySnapshot:
    """The gateway's health and its meters at one moment of the loop."""

    version: int  # +1 per snapshot: web threads wait for a change
    gateway: str
    t_ns: int
    commits: int  # how many commits so far: the database changed when this did
    last_commit_ns: int | None
    commit_latency_s: float | None
    mqtt_enabled: bool
    mqtt_connected: bool
    storage_error: str | None
    clock_synchronized: bool
    meters: tuple[MeterSnapshot, ...]


def take_snapshot(service: Service, version: int, commits: int) -> GatewaySnapshot:
    """Return the service's state now; call on the loop's thread only."""
    meters = []
    for runtime in service.meters:
        core = runtime.core
        reading = core.reading(runtime.now_ns)
        peak = reading.peak
        meters.append(
            MeterSnapshot(
                name=runtime.name,
                model=runtime.settings.model,
                source=runtime.settings.source,
                energy_wh=runtime.checkpoint.committed_wh,
                edges=tuple(sorted(reading.edges.items())),
                power_kw=reading.power_kw,
                demand_kw=float(round_kw(reading.demand_kw)),
                peak_demand_kw=None if peak is None else float(round_kw(peak.demand_kw)),
                peak_demand_end_ns=None if peak is None else peak.window_end_us * NS_PER_US,
                quality=core.current_quality(runtime.now_ns),
                glitches=core.glitches,
                inferred_edges=core.inferred_edges,
                mismatches=core.crosscheck.mismatches,
            )
        )
    last = service.last_commit
    publisher = service.publisher
    return GatewaySnapshot(
        version=version,
        gateway=service.config.gateway.id,
        t_ns=service.timeline.now(),
        commits=commits,
        last_commit_ns=None if last is None else last[0],
        commit_latency_s=None if last is None else last[1],
        mqtt_enabled=publisher.enabled,
        mqtt_connected=publisher.connected,
        storage_error=service.storage_error,
        clock_synchronized=clock_synchronized(),
        meters=tuple(meters),
    )


class SnapshotHolder:
    """The latest snapshot, replaced whole by the loop and read (or waited on) by web threads."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._snapshot: GatewaySnapshot | None = None
        self._version = 0
        self._commits = 0
        self._last_commit: tuple[int, float] | None = None

    def observe(self, service: Service) -> None:
        """The loop's observer: take a snapshot and publish it (never blocks on a reader)."""
        if service.last_commit is not None and service.last_commit != self._last_commit:
            self._last_commit = service.last_commit
            self._commits += 1
        snapshot = take_snapshot(service, self._version + 1, self._commits)
        with self._changed:
            self._version = snapshot.version
            self._snapshot = snapshot
            self._changed.notify_all()

    def publish(self, snapshot: GatewaySnapshot) -> None:
        """Publish a snapshot made elsewhere (tests, a collector)."""
        with self._changed:
            self._version = snapshot.version
            self._snapshot = snapshot
            self._changed.notify_all()

    @property
    def current(self) -> GatewaySnapshot | None:
        with self._changed:
            return self._snapshot

    def wait_newer(self, version: int, timeout_s: float) -> GatewaySnapshot | None:
        """Return a snapshot newer than ``version``, or None after ``timeout_s``."""
        with self._changed:
            self._changed.wait_for(lambda: self._version > version, timeout_s)
            if self._version > version:
                return self._snapshot
            return None
