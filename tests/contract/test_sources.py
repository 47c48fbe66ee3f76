"""One suite over every source: the same edges in, the same register out.

A stretch of meter output (70 kW for 12 s from a register at 480 Wh, so the `1K` output toggles
too) is produced once by the meter model, then fed to the gateway through each of the four
sources: the simulated meter itself, a replayed pulse log, GPIO pins (gpiozero's MockFactory)
and a serial pulse-counter board (pyserial over a pty, paced in real time). Each must count
exactly the model's edges, with no glitch, no inferred edge and no noise.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins import mock as gpio_mock
from gpiozero.pins.mock import MockFactory

from gateway.config import (
    Config,
    GatewaySettings,
    MeterSettings,
    MqttSettings,
    meter_config,
    meter_settings,
)
from gateway.core.meter import MeterCore
from gateway.daemon.service import Service
from gateway.errors import SourceClosedError, SourceError
from gateway.pulselog import PulseLogWriter
from gateway.sources import BACKENDS, Source, SourceContext, SourceStart, source_class
from gateway.sources.serial import checksum
from gateway.timeline import Timeline
from meter_model import profile_edges
from meter_model.units import NJ_PER_WH

T0_US = 1_764_057_600_000_000
DURATION_US = 12_000_000
POWER_MW = 70_000_000
START_NJ = 480 * NJ_PER_WH
EDGES = profile_edges([T0_US], [POWER_MW], T0_US + DURATION_US, start_energy_nj=START_NJ)
EXPECTED_10 = len(EDGES.t10_us)
EXPECTED_1K = len(EDGES.t1k_us)


def model_edges() -> list[tuple[int, str, int]]:
    """(t_us, channel, output level) of every edge, `10` before `1K` at equal times."""
    rows = [(int(t), "10", int(n) & 1) for t, n in zip(EDGES.t10_us, EDGES.n10, strict=True)]
    rows += [(int(t), "1K", int(n) & 1) for t, n in zip(EDGES.t1k_us, EDGES.n1k, strict=True)]
    return sorted(rows, key=lambda r: (r[0], r[1] != "10"))


def service_for(tmp_path: Path, meter: MeterSettings, **kwargs) -> Service:
    config = Config(
        GatewaySettings(id="c", database=f"sqlite:///{tmp_path / 'c.db'}"),
        MqttSettings(enabled=False),
        (meter,),
    )
    return Service(config, out=io.StringIO(), **kwargs)


def run_simulate(tmp_path: Path) -> MeterCore:
    profile = tmp_path / "p.csv"
    profile.write_text(f"time,kw\n{T0_US / 1e6:.6f},70\n{(T0_US + DURATION_US) / 1e6:.6f},0\n")
    service = service_for(
        tmp_path, meter_settings("m", source="simulate", profile=str(profile), speed=1000)
    )
    # Start the simulated register at 480 Wh, as a resumed meter would.
    service.meters[0].stored.source_state = {"t_us": T0_US, "energy_nj": START_NJ}
    from gateway.daemon.wiring import build_source

    runtime = service.meters[0]
    runtime.source = build_source(
        runtime.settings,
        meter_config(runtime.settings, "m"),
        0,
        runtime.stored.source_state,
        runtime.core.last_seen(),
        service.context,
    )
    service._open_sources()
    runtime.now_ns = 0
    deadline = time.monotonic() + 10
    while runtime.now_ns < (T0_US + DURATION_US) * 1000 and time.monotonic() < deadline:
        service.step()
        time.sleep(0.005)
    return runtime.core


def write_model_log(log: Path) -> Path:
    """Write the model's edges as meter m's pulse log."""
    import numpy as np

    rows = model_edges()
    with PulseLogWriter(log) as writer:
        writer.write_rows(
            np.array([t * 1000 for t, _, _ in rows], np.int64),
            "m",
            np.array([ch == "1K" for _, ch, _ in rows]),
            np.array([lv for _, _, lv in rows], np.int64),
        )
    return log


def run_replay(tmp_path: Path) -> MeterCore:
    log = write_model_log(tmp_path / "log.csv")
    service = service_for(tmp_path, meter_settings("m", source="replay", file=str(log), speed=1e6))
    service._open_sources()
    runtime = service.meters[0]
    deadline = time.monotonic() + 10
    while not runtime.finished and time.monotonic() < deadline:
        service.step()
    return runtime.core


def run_gpio(tmp_path: Path, monkeypatch) -> MeterCore:
    clock = [0.0]
    monkeypatch.setattr(gpio_mock, "monotonic", lambda: clock[0])
    factory = MockFactory()
    service = service_for(
        tmp_path, meter_settings("m", source="gpio", pin_10=17, pin_1k=27), pin_factory=factory
    )
    pins = {"10": factory.pin(17), "1K": factory.pin(27)}
    service._open_sources()
    for t_us, channel, level in model_edges():
        clock[0] = (t_us - T0_US) / 1e6 + 1.0
        # The line is low while the open-collector output conducts (level 1).
        pins[channel].drive_low() if level else pins[channel].drive_high()
    service.step()
    return service.meters[0].core


def run_serial(tmp_path: Path) -> MeterCore:
    master, slave = os.openpty()
    port = os.ttyname(slave)
    service = service_for(
        tmp_path,
        meter_settings("m", source="serial", port=port, input_10=3, input_1k=4),
    )
    service._open_sources()
    start = time.monotonic()
    board0 = 4_294_000_000  # the counter wraps during the run

    def send(line: str) -> None:
        os.write(master, f"{line}*{checksum(line)}\n".encode())

    next_heartbeat = 0
    for t_us, channel, level in model_edges():
        offset_us = t_us - T0_US
        while next_heartbeat <= offset_us:
            delay = start + next_heartbeat / 1e6 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            send(f"H {(board0 + next_heartbeat) % (1 << 32)}")
            next_heartbeat += 250_000
            service.step()
        delay = start + offset_us / 1e6 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        send(f"E {3 if channel == '10' else 4} {(board0 + offset_us) % (1 << 32)} {level}")
    time.sleep(0.3)
    service.step()
    core = service.meters[0].core
    service.meters[0].source.close()
    os.close(master)
    os.close(slave)
    return core


@pytest.mark.parametrize("source", ["simulate", "replay", "gpio", "serial"])
def test_same_edges_in_same_register_out(source: str, tmp_path, monkeypatch) -> None:
    if source == "simulate":
        core = run_simulate(tmp_path)
    elif source == "replay":
        core = run_replay(tmp_path)
    elif source == "gpio":
        core = run_gpio(tmp_path, monkeypatch)
    else:
        core = run_serial(tmp_path)
    core.finish()
    assert EXPECTED_1K >= 1 and EXPECTED_10 > 40
    assert core.totals["10"].edges == EXPECTED_10
    assert core.totals["1K"].edges == EXPECTED_1K
    assert core.energy_wh == EXPECTED_10 * 5
    assert core.glitches == 0 and core.inferred_edges == 0 and core.duplicates == 0
    assert core.totals["10"].noise == 0
    assert core.crosscheck.summary()["mismatches"] == 0


# -- The contract every registered backend keeps ------------------------------------------------
#
# Each backend in BACKENDS has a builder here, on real parts: the simulated meter, a pulse log,
# gpiozero's MockFactory pins, a pty standing for a serial board. A backend registered without
# one fails test_every_backend_has_a_builder, so none escapes the suite.


class Built:
    """A source built through the registry, and how to build it again from its state."""

    def __init__(self, tmp_path: Path, source: str, keys: dict[str, Any], **context: Any) -> None:
        self.settings = meter_settings("m", source, **keys)
        self.model = meter_config(self.settings, "m")
        self.timeline = Timeline(floor_ns=0)
        self.context = SourceContext(self.timeline, **context)
        self.cleanup: list[Callable[[], None]] = []

    def build(self, state: dict[str, Any] | None = None) -> Source:
        backend = source_class(self.settings.source)
        start = SourceStart(self.model, T0_US * 1000, state)
        self.context.boards.clear()  # a fresh board for each source: no shared state
        return backend.from_settings(self.settings, start, self.context)


def build_simulate(tmp_path: Path) -> Built:
    return Built(tmp_path, "simulate", {"speed": 1000})


def build_replay(tmp_path: Path) -> Built:
    log = write_model_log(tmp_path / "contract.csv")
    return Built(tmp_path, "replay", {"file": str(log), "speed": 1000})


class WiredPin(gpio_mock.MockPin):
    """A line as the meter's output holds it: the pull-up does not move it."""

    def _set_pull(self, value: str) -> None:
        self._pull = value


def build_gpio(tmp_path: Path) -> Built:
    factory = MockFactory(pin_class=WiredPin)
    factory.pin(17).drive_high()  # the 10 output is off: the line is high, its level is 0
    factory.pin(27).drive_low()  # the 1K output conducts at start: its level is 1
    return Built(tmp_path, "gpio", {"pin_10": 17, "pin_1k": 27}, pin_factory=factory)


def build_serial(tmp_path: Path) -> Built:
    master, slave = os.openpty()
    built = Built(tmp_path, "serial", {"port": os.ttyname(slave), "input_10": 3, "input_1k": 4})
    built.cleanup += [lambda: os.close(master), lambda: os.close(slave)]
    return built


BUILDERS: dict[str, Callable[[Path], Built]] = {
    "gpio": build_gpio,
    "serial": build_serial,
    "simulate": build_simulate,
    "replay": build_replay,
}


@pytest.fixture(params=sorted(BACKENDS))
def built(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Built]:
    made = BUILDERS[request.param](tmp_path)
    yield made
    for step in made.cleanup:
        step()


def test_every_backend_has_a_builder() -> None:
    assert set(BUILDERS) == set(BACKENDS)


def test_a_source_closes_twice(built: Built) -> None:
    source = built.build()
    source.open()
    source.close()
    source.close()
    board = built.context.boards.get(getattr(built.settings.backend, "port", None) or "")
    if board is not None:  # a board shared by meters counts them: one close each
        assert board.users == 0


def test_a_poll_after_close_raises_source_closed_error(built: Built) -> None:
    with built.build() as source:
        source.poll(built.timeline.monotonic_ns())
    with pytest.raises(SourceClosedError, match="m: the source was closed"):
        source.poll(built.timeline.monotonic_ns())
    assert isinstance(SourceClosedError("x"), SourceError)


def test_initial_levels_are_line_levels_of_its_channels(built: Built) -> None:
    with built.build() as source:
        levels = dict(source.initial_levels)
    assert set(levels) <= {"10", "1K"}
    assert set(levels.values()) <= {0, 1}
    if built.settings.source == "gpio":
        assert levels == {"10": 0, "1K": 1}  # as the lines were before open


def test_now_never_goes_back(built: Built) -> None:
    with built.build() as source:
        mono = built.timeline.monotonic_ns()
        nows = []
        for step in range(20):
            nows.append(source.poll(mono + step * 50_000_000).now_ns)
    assert nows == sorted(nows)
    assert nows[-1] > 0


def test_resume_state_round_trips(built: Built) -> None:
    with built.build() as source:
        mono = built.timeline.monotonic_ns()
        for step in range(5):
            source.poll(mono + step * 100_000_000)
        state = source.resume_state()
    stored = json.loads(json.dumps(state))  # what a commit stores, and a restart reads
    assert stored == state
    with built.build(stored) as resumed:
        assert resumed.resume_state() == state
