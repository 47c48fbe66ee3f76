"""A paced source that cannot keep up with its speed says so in the reading line, and by how much.

The service runs in-process on a stepped monotonic clock, so the figures are exact: a replay at
10^9x reaches the end of its log's window at once, while a poll hands over at most
MAX_EDGES_PER_POLL edges and holds its clock at the last one.
"""

from __future__ import annotations

import io
from pathlib import Path

from gateway.config import Config, GatewaySettings, MqttSettings, meter_settings
from gateway.daemon.console import format_behind
from gateway.daemon.service import Service
from gateway.sources.replay import MAX_EDGES_PER_POLL

NS = 1_000_000_000
T0_S = 1_764_057_600  # 2025-11-25T08:00:00Z


class StepClock:
    """The service's monotonic clock: each reading is a second later."""

    def __init__(self) -> None:
        self.t = 10**12

    def __call__(self) -> int:
        self.t += NS
        return self.t


def test_the_wording_of_running_behind() -> None:
    behind = (2 * 86_400 + 3 * 3600 + 4 * 60 + 5) * NS
    assert format_behind(behind, 4 * behind) == (
        "; running behind its speed by 2 d 03:04:05 of source time (at 75.0% of it)"
    )
    assert format_behind(59 * NS, 60 * NS) == (
        "; running behind its speed by 00:00:59 of source time (at 1.7% of it)"
    )
    assert format_behind(0, 60 * NS) == ""  # on pace
    assert format_behind(0, 0) == ""  # not started


def reading_lines(tmp_path: Path, speed: float, ticks: int) -> list[str]:
    # 30,000 edges a second apart from T0 + 1 s; the log's window ends at T0 + 30,000 s.
    n = 30_000
    assert n > MAX_EDGES_PER_POLL == 20_000
    log = tmp_path / "log.csv"
    log.write_text(
        f"# start={T0_S} end={T0_S + n}\ntime,meter,channel,level\n"
        + "".join(f"{T0_S + k}.000000,r1,10,{k % 2}\n" for k in range(1, n + 1))
    )
    config = Config(
        GatewaySettings(id="t", database=f"sqlite:///{tmp_path / 'g.db'}"),
        MqttSettings(enabled=False),
        (meter_settings("r1", source="replay", file=str(log), speed=speed),),
    )
    out = io.StringIO()
    clock = StepClock()
    service = Service(config, out=out, monotonic_ns=clock, wall_ns=lambda: clock.t)
    try:
        service.start()  # the first reading line, before any poll
        for _ in range(ticks):
            service.step()
        service.report()
    finally:
        service.shutdown()
    return [line for line in out.getvalue().splitlines() if " r1: " in line]


def test_a_replay_behind_its_speed_says_by_how_much(tmp_path: Path) -> None:
    # The first poll starts the replay clock; the second asks for the whole window (30,000 s)
    # and gets 20,000 edges: the clock holds at T0 + 20,000 s, 10,000 s (2:46:40) behind.
    lines = reading_lines(tmp_path, 1e9, 2)
    assert "running behind" not in lines[0]
    assert lines[-1].endswith(
        "edges 10=19999 1K=0; running behind its speed by 02:46:40 of source time (at 66.7% of it)"
    )  # the 20,000th edge is still pending (the glitch width)


def test_a_replay_on_pace_says_nothing_of_it(tmp_path: Path) -> None:
    lines = reading_lines(tmp_path, 1000, 3)  # 1000 s of log a poll: 1000 edges
    assert "running behind" not in lines[-1]
    assert "edges 10=" in lines[-1]
