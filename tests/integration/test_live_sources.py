"""The live sources against real backends: gpiozero's MockFactory pins, pyserial over a pty."""

from __future__ import annotations

import io
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from db_helpers import read_db
from gpiozero.pins import mock as gpio_mock
from gpiozero.pins.mock import MockFactory, MockPin
from mqtt_helpers import wait_for

from gateway.config import Config, GatewaySettings, MqttSettings, meter_settings
from gateway.core.edge import CHANNEL_10, Edge
from gateway.core.meter import MeterCore
from gateway.daemon.service import Service
from gateway.sources.serial import SerialBoard, SerialSource, checksum
from gateway.timeline import Timeline


class FakeMonotonic:
    """The mock pins' clock, moved by the test: edges get exact, well-spaced ticks."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def ticks(monkeypatch) -> FakeMonotonic:
    clock = FakeMonotonic()
    monkeypatch.setattr(gpio_mock, "monotonic", clock)
    return clock


def gpio_config(tmp_path: Path, **pins: int) -> Config:
    return Config(
        GatewaySettings(id="t", database=f"sqlite:///{tmp_path / 'g.db'}"),
        MqttSettings(enabled=False),
        (meter_settings("m1", model="2O208-4W", source="gpio", **pins),),
    )


def counters(tmp_path: Path) -> dict[str, int]:
    with read_db(tmp_path / "g.db") as conn:
        return dict(conn.execute("select channel, edges from channel_counters").fetchall())


def toggle(pin, clock: FakeMonotonic, n: int, spacing_s: float = 0.25) -> None:
    """Make the meter's output toggle n times: the line goes low (output on) and high."""
    for _ in range(n):
        clock.t += spacing_s
        if pin.state:
            pin.drive_low()
        else:
            pin.drive_high()


def test_gpio_counts_every_edge_even_when_they_come_faster_than_polls(tmp_path, ticks) -> None:
    factory = MockFactory()
    service = Service(
        gpio_config(tmp_path, pin_10=17, pin_1k=27), out=io.StringIO(), pin_factory=factory
    )
    service._open_sources()
    pin10, pin1k = factory.pin(17), factory.pin(27)
    assert pin10.pull == "up" and pin10.function == "input"
    assert pin10.bounce is None  # filtering is the core's job
    toggle(pin10, ticks, 1000)  # a thousand edges before the consumer looks once
    pin1k.drive_low()
    service.step()
    core = service.meters[0].core
    # The ticks ran 250 s ahead of the real clock; let the core's time catch up with them.
    core.advance(service.timeline.now() + 300 * 10**9)
    service.commit()
    assert core.totals["10"].edges == 1000
    assert core.totals["1K"].edges == 1
    assert core.glitches == 0 and core.inferred_edges == 0
    assert core.totals["10"].noise == 0  # 5 Wh per 250 ms is 72 kW: within the meter
    assert counters(tmp_path)["10"] == 1000
    # Edge times come from the pins' ticks (250 ms apart), not from when they were handled.
    assert core.hygiene["10"].last_t_ns - core.first_ns == 999 * 250_000_000
    service.database.close()


class HeldLowPin(MockPin):
    """A line an open collector holds low: turning the pull-up on does not raise it."""

    held_low = False

    def _set_pull(self, value: str) -> None:
        if self.held_low:
            self._pull = value
            return
        super()._set_pull(value)


def test_gpio_line_low_at_start_is_not_double_counted(tmp_path, ticks) -> None:
    factory = MockFactory(pin_class=HeldLowPin)
    pin = factory.pin(17)
    pin.drive_low()  # the output already conducts: the line is low, the output level is 1
    pin.held_low = True
    service = Service(gpio_config(tmp_path, pin_10=17), out=io.StringIO(), pin_factory=factory)
    service._open_sources()
    core = service.meters[0].core
    assert core.hygiene["10"].level == 1
    ticks.t += 0.5
    pin.held_low = False
    pin.drive_high()  # the output turns off: one edge, level 0
    service.step()
    core.advance(service.timeline.now() + 10**9)
    assert core.totals["10"].edges == 1
    assert core.inferred_edges == 0
    service.database.close()


def test_gpio_glitches_are_filtered_by_the_core(tmp_path, ticks) -> None:
    factory = MockFactory()
    service = Service(gpio_config(tmp_path, pin_10=17), out=io.StringIO(), pin_factory=factory)
    service._open_sources()
    pin = factory.pin(17)
    toggle(pin, ticks, 2, spacing_s=0.0005)  # a 0.5 ms blip: one glitch
    toggle(pin, ticks, 4)
    service.step()
    core = service.meters[0].core
    core.advance(service.timeline.now() + 10 * 10**9)
    assert core.glitches == 1 and core.totals["10"].edges == 4
    service.database.close()


def test_a_pin_used_twice_is_a_config_error(cli, tmp_path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        """
[mqtt]
enabled = false
[[meters]]
name = "a"
model = "2O208-4W"
source = "gpio"
pin_10 = 17
[[meters]]
name = "b"
model = "2O208-4W"
source = "gpio"
pin_1k = 17
"""
    )
    result = cli("run", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "meters[1].pin_1k: 17 is already used by meters[0].pin_10" in result.stderr


def test_missing_serial_port_is_a_config_error(cli, tmp_path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        f"""
[gateway]
database = "sqlite:///{tmp_path / "g.db"}"
[mqtt]
enabled = false
[[meters]]
name = "a"
model = "2O208-4W"
source = "serial"
port = "/dev/ttyNOPE9"
input_10 = 0
"""
    )
    result = cli("run", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "meters[0].port: /dev/ttyNOPE9 does not exist" in result.stderr
    assert not (tmp_path / "g.db").exists()


def test_without_lgpio_the_gpio_source_refuses_rather_than_falling_back(tmp_path) -> None:
    service = Service(gpio_config(tmp_path, pin_10=17), out=io.StringIO())
    from gateway.errors import SourceError

    with pytest.raises(SourceError, match="lgpio pin factory is unavailable"):
        service._open_sources()
    service.database.close()


# -- serial over a pty ---------------------------------------------------------------------------


class Board:
    """The far end of a pty, speaking SPEC section 6; can be unplugged and plugged again."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master = -1
        self.plug()

    def plug(self) -> None:
        self.master, slave = os.openpty()
        os.set_blocking(self.master, False)
        path = os.ttyname(slave)
        os.close(slave)
        if self.link.is_symlink():
            self.link.unlink()
        self.link.symlink_to(path)

    def unplug(self) -> None:
        os.close(self.master)
        self.link.unlink()

    def send(self, *lines: str, check: bool = True) -> None:
        data = "".join((f"{line}*{checksum(line)}" if check else line) + "\n" for line in lines)
        os.write(self.master, data.encode())


def serial_config(tmp_path: Path, port: Path) -> Config:
    return Config(
        GatewaySettings(id="t", database=f"sqlite:///{tmp_path / 'g.db'}"),
        MqttSettings(enabled=False),
        (
            meter_settings("m1", source="serial", port=str(port), input_10=0, input_1k=1),
            meter_settings("m2", source="serial", port=str(port), input_10=5),
        ),
    )


def pump(service: Service, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        service.step()
        time.sleep(0.02)


def test_serial_board_edges_heartbeats_wrap_and_bad_lines(tmp_path) -> None:
    board = Board(tmp_path / "ttyUSB0")
    service = Service(serial_config(tmp_path, tmp_path / "ttyUSB0"), out=io.StringIO())
    service._open_sources()
    start = (1 << 32) - 250_000  # 0.25 s before the 32-bit counter wraps
    board.send(f"H {start}")
    lines = []
    level = 0
    for k in range(10):  # ten edges 100 ms apart, across the wrap
        level ^= 1
        lines.append(f"E 0 {(start + 100_000 * (k + 1)) % (1 << 32)} {level}")
    lines.append(f"E 5 {(start + 50_000) % (1 << 32)} 1")  # the other meter on the same board
    board.send(*lines)
    board.send("E 0 12345 1*00", check=False)  # a bad checksum
    board.send("garbage here", "E 99 1 1", check=False)  # bad shapes
    board.send(f"H {(start + 1_200_000) % (1 << 32)}")
    pump(service, 0.6)
    m1, m2 = (runtime.core for runtime in service.meters)
    m1.advance(service.timeline.now() + 5 * 10**9)
    m2.advance(service.timeline.now() + 5 * 10**9)
    assert m1.totals["10"].edges == 10
    assert m1.glitches == 0 and m1.inferred_edges == 0
    assert m2.totals["10"].edges == 1
    board_reader = service.context.boards[str(tmp_path / "ttyUSB0")]
    assert board_reader.bad_lines == 3
    # Across the wrap the edges stay 100 ms apart: the counter was unwrapped.
    assert m1.hygiene["10"].last_t_ns - m1.first_ns == 9 * 100_000_000
    service.commit()
    for runtime in service.meters:
        runtime.source.close()
    service.database.close()
    board.unplug()
    # The bad lines are shown, not only counted (issue #11).
    from gateway.commands.database import status

    out = io.StringIO()
    status(service.config.gateway.database, True, out)
    meters = json.loads(out.getvalue())["meters"]
    assert {m["serial_bad_lines"] for m in meters.values()} == {3}
    out = io.StringIO()
    status(service.config.gateway.database, False, out)
    assert "serial board: 3 bad lines skipped" in out.getvalue()


def test_a_better_heartbeat_offset_keeps_the_boards_edge_spacing(tmp_path) -> None:
    board = Board(tmp_path / "ttyUSB0")
    reader = SerialBoard(str(tmp_path / "ttyUSB0"), 115200)
    source = SerialSource("m1", reader, {CHANNEL_10: 0}, Timeline())
    source.open()
    try:
        # The first heartbeat (board at 1 s) came 5 s late: the edge at board 6 s is stamped
        # with that offset. The heartbeat at 6.005 s came on time, so the offset estimate drops
        # by about 5 s, and the next edge, 10 ms after the first on the board, is stamped with
        # the better one: taken alone it would land seconds before the first. The board saw
        # them 10 ms apart; so must the core, or a real edge becomes a glitch.
        board.send("H 1000000", "E 0 6000000 1", "H 6005000", "E 0 6010000 0")
        wait_for(lambda: reader.lines == 4, 10, "the board's four lines")
        edges = source.poll(time.monotonic_ns()).edges
        assert len(edges) == 2
        t_ns = {edge.level: edge.t_ns for edge in edges}  # the first rises, the second falls
        apart_ms = (t_ns[0] - t_ns[1]) / 1e6
        assert apart_ms >= 10, f"stamped {apart_ms} ms apart; the board saw 10 ms"
        core = MeterCore("m1")
        for edge in edges:
            core.push(edge)
        core.advance(edges[-1].t_ns + 10**9)
        assert (core.totals[CHANNEL_10].edges, core.glitches) == (2, 0)
    finally:
        source.close()
        board.unplug()


def test_serial_port_unplugged_and_back(tmp_path) -> None:
    board = Board(tmp_path / "ttyUSB0")
    service = Service(serial_config(tmp_path, tmp_path / "ttyUSB0"), out=io.StringIO())
    service._open_sources()
    board.send("H 1000", "E 0 2000 1")
    pump(service, 0.5)
    board.unplug()
    pump(service, 3.2)  # the link is lost: an event, and no heartbeat
    board.plug()
    pump(service, 1.5)  # reopened within a second or so
    board.send("H 5000000", "E 0 5100000 0")
    pump(service, 0.5)
    core = service.meters[0].core
    core.advance(service.timeline.now() + 10**9)
    assert core.totals["10"].edges == 2
    details = [e.detail for e in service.meters[0].checkpoint.events]
    assert any("lost" in d for d in details), details
    assert any("is back" in d for d in details), details
    # The outage is time nothing was watched: a gap, not an empty stretch.
    events = [*service.meters[0].checkpoint.events, *core.events]
    assert any(e.kind == "gap" and "link" in e.detail for e in events)
    for runtime in service.meters:
        runtime.source.close()
    service.database.close()
    board.unplug()


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait for the reader thread to get somewhere: poll the condition, never guess a delay."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def close_all(service: Service) -> None:
    for runtime in service.meters:
        runtime.source.close()
    service.database.close()


def test_serial_board_restarting_with_its_counter_above_2_31_keeps_times_right(tmp_path) -> None:
    """On main, a restart 28 min ahead was taken for a jump: edges came out 28 min in the future,
    and that future became the timeline's floor when the gateway restarted."""
    port = tmp_path / "ttyUSB0"
    board = Board(port)
    service = Service(serial_config(tmp_path, port), out=io.StringIO())
    service._open_sources()
    reader = service.context.boards[str(port)]
    core = service.meters[0].core
    up = 500_000_000  # the board has been up for 8 min 20 s
    board.send(f"H {up}", f"E 0 {up + 100_000} 1", f"H {up + 200_000}")
    wait_until(lambda: reader.lines == 3)
    service.step()
    sent = service.timeline.now()
    after = 2_200_000_000  # restarted, its counter above 2^31 and 28 min ahead of the old one
    board.send(f"H {after}", f"E 0 {after + 100_000} 0", f"E 0 {after + 400_000} 1")
    board.send(f"H {after + 500_000}")
    wait_until(lambda: reader.lines == 7)
    service.step()
    received = service.timeline.now()
    stamped, level = core.last_seen()["10"]
    assert level == 1
    # When it came, give or take the 300 ms the board saw between the two edges.
    assert sent <= stamped <= received + 300_000_000, (stamped - received) / 1e9
    core.advance(service.timeline.now() + 10**9)
    assert core.totals["10"].edges == 3 and core.glitches == 0
    details = [e.detail for e in service.meters[0].checkpoint.events]
    assert any("board restarted" in d for d in details), details
    service.commit()
    close_all(service)
    # The gateway restarts: the last edge stored is no floor in the future.
    again = Service(
        serial_config(tmp_path, port), out=io.StringIO(), clock_synchronized=lambda: True
    )
    assert abs(again.timeline.now() - time.time_ns()) < 10**9
    again.database.close()
    board.unplug()


class HostClock:
    """The host's monotonic and wall clocks, moved by the test; the reader thread reads them."""

    def __init__(self) -> None:
        self.mono = 10**12

    def mono_ns(self) -> int:
        return self.mono

    def wall_ns(self) -> int:
        return 1_764_057_600 * 10**9 + self.mono


def test_serial_board_silent_for_40_minutes_keeps_times_right(tmp_path) -> None:
    """No line at all for longer than half a wrap, from a board whose crystal runs 0.5 % fast."""
    port = tmp_path / "ttyUSB0"
    board = Board(port)
    host = HostClock()
    timeline = Timeline(wall_ns=host.wall_ns, monotonic_ns=host.mono_ns)
    reader = SerialBoard(str(port), 115200)
    source = SerialSource("m1", reader, {"10": 0}, timeline)
    source.open()
    t0 = host.mono

    def counter(at_ns: int) -> int:
        return (3_000_000_000 + (at_ns - t0) * 1005 // 1000 // 1000) % (1 << 32)

    def send(line: str, at_ns: int, latency_ns: int = 2_000_000) -> None:
        host.mono = at_ns + latency_ns  # when the reader thread gets it
        lines = reader.lines
        board.send(line)
        wait_until(lambda: reader.lines == lines + 1)

    def lateness(edges: Sequence[Edge], *happened: int) -> list[int]:
        """Return how late each edge is stamped, against when it happened."""
        return [e.t_ns - timeline.from_monotonic(at) for e, at in zip(edges, happened, strict=True)]

    s = 10**9
    send(f"H {counter(t0)}", t0)
    send(f"E 0 {counter(t0 + s // 3)} 1", t0 + s // 3)
    send(f"H {counter(t0 + s)}", t0 + s)
    send(f"E 0 {counter(t0 + s + s // 2)} 0", t0 + s + s // 2)
    edges = source.poll(host.mono).edges
    # 2 ms late (the heartbeats' latency) and 0.5 % of the board's drift over a second or so.
    assert all(0 <= ns <= 10_000_000 for ns in lateness(edges, t0 + s // 3, t0 + s + s // 2))
    host.mono += 40 * 60 * s
    assert source.poll(host.mono).events  # the link is silent
    back = host.mono
    send(f"E 0 {counter(back)} 1", back, latency_ns=5_000_000)  # before any heartbeat
    send(f"H {counter(back + s // 5)}", back + s // 5)
    send(f"E 0 {counter(back + s // 2)} 0", back + s // 2)
    send(f"H {counter(back + s)}", back + s)
    poll = source.poll(host.mono)
    first, second = lateness(poll.edges, back, back + s // 2)
    # Stamped when it came (5 ms late), then through the new heartbeats and the board's spacing:
    # not 12 s late from the board's 40 min 12 s since the edge before the silence, nor minutes
    # off from a misread counter.
    assert 0 <= first <= 5_000_000
    assert 0 <= second <= 10_000_000
    assert [e.level for e in poll.edges] == [1, 0]
    assert any("clock re-synchronised after 2400 s" in e.detail for e in poll.events), poll.events
    source.close()
    board.unplug()


def test_a_last_edge_stored_in_the_future_does_not_drag_the_timeline(tmp_path, caplog) -> None:
    """An earlier bug or a clock an hour fast left a last edge an hour ahead in the database."""
    port = tmp_path / "ttyUSB0"
    board = Board(port)
    hour = 3600 * 10**9
    service = Service(
        serial_config(tmp_path, port), out=io.StringIO(), wall_ns=lambda: time.time_ns() + hour
    )
    service._open_sources()
    reader = service.context.boards[str(port)]
    board.send("H 1000", "E 0 2000 1", "H 300000")
    wait_until(lambda: reader.lines == 3)
    service.step()
    assert service.meters[0].core.last_seen()["10"][0] > time.time_ns() + hour // 2
    service.commit()
    close_all(service)
    with caplog.at_level(logging.WARNING, logger="gateway.timeline"):
        again = Service(  # the clock is right, and synchronised
            serial_config(tmp_path, port), out=io.StringIO(), clock_synchronized=lambda: True
        )
    assert again.timeline.now() - time.time_ns() <= 2 * 10**9  # the floor's lead at most
    assert "ahead of the system clock" in caplog.text
    again.database.close()
    board.unplug()


def test_config_error_is_exit_2_for_bad_pin_type(cli, tmp_path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[[meters]]\nname = "a"\nmodel = "2O208-4W"\nsource = "gpio"\npin_10 = "x"\n')
    result = cli("run", "--config", str(config))
    assert result.returncode == 2 and "meters[0].pin_10" in result.stderr


def test_several_meters_mixing_sources_in_one_gateway(tmp_path, ticks) -> None:
    """GPIO, a serial board, a simulated meter and a replayed log, side by side."""
    board = Board(tmp_path / "ttyUSB0")
    profile = tmp_path / "p.csv"
    t0 = 1_764_057_600
    profile.write_text(f"time,kw\n{t0},40\n{t0 + 3600},0\n")
    log = tmp_path / "log.csv"
    log.write_text(
        "time,meter,channel,level\n"
        + "".join(f"{t0 + k}.000000,r1,10,{(k + 1) % 2}\n" for k in range(20))
    )
    factory = MockFactory()
    config = Config(
        GatewaySettings(id="t", database=f"sqlite:///{tmp_path / 'g.db'}"),
        MqttSettings(enabled=False),
        (
            meter_settings("g1", source="gpio", pin_10=17),
            meter_settings("s1", source="serial", port=str(tmp_path / "ttyUSB0"), input_10=2),
            meter_settings("sim1", source="simulate", profile=str(profile), speed=3600),
            meter_settings("r1", source="replay", file=str(log), speed=1000),
        ),
    )
    service = Service(config, out=io.StringIO(), pin_factory=factory)
    service._open_sources()
    toggle(factory.pin(17), ticks, 6)
    board.send("H 100", "E 2 200 1", "E 2 300000 0", "E 2 600000 1", "H 900000")
    pump(service, 1.5)
    service.commit()
    cores = {runtime.settings.name: runtime.core for runtime in service.meters}
    cores["g1"].advance(service.timeline.now() + 10 * 10**9)
    cores["s1"].advance(service.timeline.now() + 10 * 10**9)
    assert cores["g1"].totals["10"].edges == 6
    assert cores["s1"].totals["10"].edges == 3
    assert cores["sim1"].totals["10"].edges > 100  # 40 kW for up to an hour of simulated time
    assert cores["r1"].totals["10"].edges == 20
    assert set(counters_by_meter(tmp_path)) == {"g1", "s1", "sim1", "r1"}
    for runtime in service.meters:
        runtime.source.close()
    service.database.close()
    board.unplug()


def counters_by_meter(tmp_path: Path) -> dict[str, int]:
    with read_db(tmp_path / "g.db") as conn:
        rows = conn.execute(
            "select m.name, c.edges from channel_counters c join meters m on m.id = c.meter_id "
            "where c.channel = '10'"
        ).fetchall()
    return dict(rows)


def test_capture_files_older_than_the_limit_are_pruned(tmp_path) -> None:
    from gateway.core.edge import Edge
    from gateway.pulselog.capture import Capture

    directory = tmp_path / "capture"
    capture = Capture(str(directory), keep_days=7, gateway_id="t")
    old = directory / "capture-20250101T000000Z.csv.gz"
    recent = directory / "capture-20250120T000000Z.csv.gz"
    for path, age_days in ((old, 10), (recent, 3)):
        path.write_bytes(b"")
        stamp = time.time() - age_days * 86_400
        os.utime(path, (stamp, stamp))
    t0 = 1_764_057_600 * 10**9
    capture.write([Edge(t0, "m", "10", 1)], t0)  # opening a file prunes
    assert not old.exists() and recent.exists()
    # A new file at UTC midnight, by edge time.
    capture.write([Edge(t0 + 86_400 * 10**9, "m", "10", 0)], t0)
    capture.close()
    assert len(list(directory.glob("capture-2025112*.csv.gz"))) == 2


def test_capture_files_are_named_and_stamped_in_each_meters_own_clock(tmp_path) -> None:
    """A simulated meter's clock runs years away from the wall clock: its capture must say its
    own time, or a replay of it invents empty intervals between the two (issue #11)."""
    import gzip

    from gateway.core.edge import Edge
    from gateway.pulselog.capture import Capture
    from gateway.timefmt import format_iso

    capture = Capture(str(tmp_path / "capture"), keep_days=30, gateway_id="t")
    simulated = 1_700_000_000 * 10**9  # 2023-11-14T22:13:20Z
    wall = time.time_ns()
    capture.write([Edge(simulated + 10**9, "sim", "10", 1)], simulated + 2 * 10**9)
    capture.write([Edge(wall - 10**9, "live", "10", 1)], wall)
    capture.reopen({"sim": simulated + 3600 * 10**9, "live": wall + 10**9})  # SIGHUP
    capture.close()
    starts: dict[str, list[str]] = {}
    for path in sorted((tmp_path / "capture").glob("capture-*.csv.gz")):
        with gzip.open(path, "rt") as handle:
            head = handle.read()
        meter = "sim" if path.name.endswith("-sim.csv.gz") else "live"
        starts.setdefault(meter, []).append(head.split("start=")[1].split()[0])
    assert starts["sim"] == [format_iso(simulated + 10**9), format_iso(simulated + 3600 * 10**9)]
    assert starts["live"][0] == format_iso(wall - 10**9) and len(starts["live"]) == 2
