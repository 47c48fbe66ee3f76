"""The timeline's floor: never behind what was counted, never dragged into the future."""

from __future__ import annotations

import logging

from gateway.daemon.clock import Timeline

S = 1_000_000_000
WALL = 1_764_057_600 * S
MONO = 5 * S


def timeline(floor_ns: int) -> Timeline:
    return Timeline(wall_ns=lambda: WALL, monotonic_ns=lambda: MONO, floor_ns=floor_ns)


def test_a_floor_far_in_the_future_does_not_drag_the_timeline_with_it(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.daemon.clock"):
        line = timeline(WALL + 36 * 60 * S)  # a last edge stamped 36 min ahead by an old bug
    assert WALL <= line.now() <= WALL + 2 * S  # the floor's lead: 2 s at most
    assert "2160.0 s ahead of the system clock" in caplog.text
    assert line.check() is None  # and the lead is not taken for the clock stepping back


def test_a_floor_a_little_ahead_still_holds_the_timeline_up(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.daemon.clock"):
        assert timeline(WALL + S).now() == WALL + S  # the clock lost a second while we slept
        assert timeline(WALL - 60 * S).now() == WALL
    assert not caplog.records
