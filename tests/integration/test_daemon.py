"""The daemon's life under systemd: notify and watchdog, SIGHUP, capture, clock steps."""

from __future__ import annotations

import gzip
import io
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

from db_helpers import read_db, sqlite_file
from mqtt_helpers import wait_for

from gateway.config import Config, GatewaySettings, MqttSettings, meter_settings
from gateway.daemon.service import Service
from gateway.errors import SinkError
from gateway.timeline import Timeline


def config_file(tmp_path: Path, capture: bool = False) -> Path:
    path = tmp_path / "config.toml"
    capture_line = f'capture_dir = "{tmp_path / "capture"}"' if capture else ""
    profile_line = ""
    if capture:
        # Capture files are per (simulated) day: a clock started at the wall time would cross
        # midnight within the test whenever it runs late in the day, adding files. A profile
        # starts the clock at its first row: midnight, a steady 2 kW for two days.
        profile = tmp_path / "profile.csv"
        day0 = 1_794_700_800  # 2026-11-15T00:00:00Z
        profile.write_text(f"time,kw\n{day0},2.0\n{day0 + 2 * 86_400},2.0\n")
        profile_line = f'profile = "{profile}"\nspeed = 300'
    else:
        profile_line = "speed = 3600"
    path.write_text(
        f"""
[gateway]
id = "d1"
database = "sqlite:///{tmp_path / "g.db"}"
{capture_line}

[mqtt]
enabled = false

[[meters]]
name = "m1"
model = "2O208-4W"
source = "simulate"
{profile_line}
"""
    )
    return path


def test_ready_and_watchdog_pings_reach_systemd(tmp_path) -> None:
    address = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(20)
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "4000000", "PATH": "/usr/bin:/bin"}
    import os

    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(config_file(tmp_path))],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        messages: list[str] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and messages.count("WATCHDOG=1") < 2:
            messages.append(listener.recv(4096).decode().split("\n")[0])
        assert any(m == "READY=1" for m in messages), messages
        assert messages.index("READY=1") < messages.index("WATCHDOG=1")
        assert messages.count("WATCHDOG=1") >= 2
        proc.send_signal(signal.SIGTERM)
        tail = []
        listener.settimeout(10)
        while "STOPPING=1" not in tail:
            tail.append(listener.recv(4096).decode())
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        listener.close()
    assert proc.returncode == 0


def test_capture_writes_raw_edges_and_sighup_starts_a_new_file(tmp_path, cli) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(config_file(tmp_path, True))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    capture = tmp_path / "capture"

    def files_and_edges() -> tuple[int, int]:
        edges = 0
        try:
            with read_db(tmp_path / "g.db") as conn:
                edges = dict(conn.execute("select channel, edges from channel_counters"))["10"]
        except (SinkError, sqlite3.Error, KeyError, OSError):
            pass  # not created, migrated or committed yet
        return len(list(capture.glob("capture-*.csv.gz"))), edges or 0

    try:
        _, before = wait_for(
            lambda: (r := files_and_edges())[0] == 1 and r[1] >= 20 and r, 120, "edges captured"
        )
        proc.send_signal(signal.SIGHUP)
        wait_for(
            lambda: (r := files_and_edges())[0] == 2 and r[1] >= before + 20,
            120,
            "a second capture file after SIGHUP, with edges in it",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    files = sorted((tmp_path / "capture").glob("capture-*.csv.gz"))
    assert len(files) == 2, files  # SIGHUP started a second file
    rows = 0
    for path in files:
        with gzip.open(path, "rt") as handle:
            text = handle.read()
        assert "time,meter,channel,level" in text and "start=" in text
        rows += sum(1 for line in text.splitlines() if line[:1].isdigit())
    assert rows > 10
    # The capture replays to what the daemon counted.
    import json

    result = cli("replay", *map(str, files), "--json")
    assert result.returncode == 0, result.stderr
    replayed = json.loads(result.stdout)["meters"]["m1"]
    with closing(sqlite3.connect(tmp_path / "g.db")) as conn:
        counted = dict(conn.execute("select channel, edges from channel_counters").fetchall())
    assert replayed["edges"]["10"] == counted["10"]


class SteppingClock:
    """A wall clock the test can step, and a monotonic clock it can move."""

    def __init__(self) -> None:
        self.wall = 1_000_000_000 * 10**9  # a stale boot time, as a Pi without RTC has
        self.mono = 5 * 10**9

    def wall_ns(self) -> int:
        return self.wall

    def mono_ns(self) -> int:
        return self.mono

    def advance(self, ns: int) -> None:
        self.wall += ns
        self.mono += ns


def test_timeline_follows_a_forward_step_and_never_goes_back() -> None:
    clock = SteppingClock()
    timeline = Timeline(wall_ns=clock.wall_ns, monotonic_ns=clock.mono_ns)
    clock.advance(10**9)
    before = timeline.now()
    clock.wall += 3600 * 10**9  # NTP answers: an hour forward
    step = timeline.check()
    assert step is not None and step.followed and step.delta_ns == 3600 * 10**9
    assert timeline.now() == before + 3600 * 10**9
    clock.wall -= 600 * 10**9  # and a step back is reported, not followed
    now = timeline.now()
    step = timeline.check()
    assert step is not None and not step.followed
    clock.advance(10**9)
    assert timeline.now() == now + 10**9  # still running forward


def test_a_clock_step_neither_loses_nor_duplicates_energy(tmp_path) -> None:
    """A live meter counts on through an NTP step; the step is an event, energy is exact."""
    from gpiozero.pins import mock as gpio_mock
    from gpiozero.pins.mock import MockFactory

    clock = SteppingClock()
    ticks = [100.0]
    original = gpio_mock.monotonic
    gpio_mock.monotonic = lambda: ticks[0]
    try:
        config = Config(
            GatewaySettings(id="t", database=f"sqlite:///{tmp_path / 'g.db'}"),
            MqttSettings(enabled=False),
            (meter_settings("m1", source="gpio", pin_10=17),),
        )
        factory = MockFactory()
        service = Service(
            config,
            out=io.StringIO(),
            monotonic_ns=clock.mono_ns,
            wall_ns=clock.wall_ns,
            pin_factory=factory,
        )
        service._open_sources()
        pin = factory.pin(17)

        def edges(n: int) -> None:
            for _ in range(n):
                ticks[0] += 0.5
                clock.advance(500_000_000)
                pin.drive_low() if pin.state else pin.drive_high()
            clock.advance(100_000_000)
            service.step()

        edges(40)
        clock.wall += 86_400 * 10**9  # the clock jumps a day forward mid-stream
        edges(40)
        service.commit()
        core = service.meters[0].core
        core.advance(service.timeline.now() + 10**9)
        assert core.totals["10"].edges == 80
        assert core.inferred_edges == 0 and core.glitches == 0
        service.commit()
        service.database.close()

        with sqlite_file(tmp_path / "g.db") as conn:
            kinds = [row[0] for row in conn.execute("select kind from events")]
            partial = conn.execute(
                "select count(*) from intervals where quality != 'complete'"
            ).fetchone()[0]
        assert "clock_step" in kinds and "gap" in kinds
        assert partial >= 1  # the labels the step skipped are not passed off as observed
    finally:
        gpio_mock.monotonic = original
