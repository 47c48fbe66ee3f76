"""Wiring and the main loop: sources -> core -> store, with a reading line now and then."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TextIO

from gateway.config import Config, MeterSettings
from gateway.core.meter import MeterCore, Reading
from gateway.errors import ConfigError
from gateway.sinks.store import Store
from gateway.sources import Source
from gateway.timefmt import NS_PER_US, format_iso
from meter_model import MeterConfig, MeterModelError
from meter_model.units import lcd_kwh, round_kw

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.1


def build_source(settings: MeterSettings, start_ns: int) -> Source:
    """Return the source a meter's settings name."""
    try:
        config = MeterConfig.from_model(settings.model, ct_rating_a=settings.ct_rating_a)
    except MeterModelError as exc:
        raise ConfigError(f"meters.{settings.name}.model: {exc}") from None
    if settings.source == "simulate":
        from gateway.sources.simulate import SimulateSource

        return SimulateSource(settings.name, config, start_ns=start_ns, speed=settings.speed)
    raise ConfigError(f"meters.{settings.name}.source: {settings.source!r} is not available yet")


def format_reading(reading: Reading) -> str:
    """Return one human-readable line for a reading."""
    peak = "-"
    if reading.peak is not None:
        window_end = format_iso(reading.peak.window_end_us * NS_PER_US)
        peak = f"{round_kw(reading.peak.demand_kw)} kW (window ending {window_end})"
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
    ) -> None:
        self.config = config
        self.out = out
        self._monotonic_ns = monotonic_ns
        start_ns = wall_ns()
        self.sources = [build_source(m, start_ns) for m in config.meters]
        self.cores = [MeterCore(m.name, start_ns=start_ns) for m in config.meters]
        self.store = Store(config.gateway.database)
        for settings, core in zip(config.meters, self.cores, strict=True):
            self.store.load(core, settings.model, settings.source)
        self._now_ns = [start_ns for _ in config.meters]

    def run(self, stop: threading.Event) -> int:
        """Run the main loop until ``stop`` is set; flush and return the exit status."""
        for source in self.sources:
            source.open()
        gateway = self.config.gateway
        last_commit = last_report = self._monotonic_ns()
        self.report()
        try:
            while not stop.is_set():
                mono = self._monotonic_ns()
                for i, (source, core) in enumerate(zip(self.sources, self.cores, strict=True)):
                    poll = source.poll(mono)
                    for edge in poll.edges:
                        core.push(edge)
                    core.advance(poll.now_ns)
                    self._now_ns[i] = poll.now_ns
                if mono - last_commit >= gateway.commit_interval_s * 1e9:
                    self.store.save(self.cores)
                    last_commit = mono
                if mono - last_report >= gateway.report_interval_s * 1e9:
                    self.report()
                    last_report = mono
                stop.wait(POLL_INTERVAL_S)
        finally:
            self.store.save(self.cores)
            self.report()
            for source in self.sources:
                source.close()
            self.store.close()
        return 0

    def report(self) -> None:
        for core, now_ns in zip(self.cores, self._now_ns, strict=True):
            print(format_reading(core.reading(now_ns)), file=self.out, flush=True)
