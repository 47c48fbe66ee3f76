"""The timeline's floor: never behind what was counted, never dragged into the future."""

from __future__ import annotations

import logging

from gateway.timeline import Timeline

S = 1_000_000_000
WALL = 1_764_057_600 * S
MONO = 5 * S


def timeline(floor_ns: int, *, synchronized: bool = True) -> Timeline:
    return Timeline(
        wall_ns=lambda: WALL,
        monotonic_ns=lambda: MONO,
        floor_ns=floor_ns,
        synchronized=lambda: synchronized,
    )


def test_a_floor_far_in_the_future_does_not_drag_the_timeline_with_it(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.timeline"):
        line = timeline(WALL + 36 * 60 * S)  # a last edge stamped 36 min ahead by an old bug
    assert WALL <= line.now() <= WALL + 2 * S  # the floor's lead: 2 s at most
    assert "2160.0 s ahead of the system clock" in caplog.text
    assert line.check() is None  # and the lead is not taken for the clock stepping back


def test_a_floor_a_little_ahead_still_holds_the_timeline_up(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.timeline"):
        assert timeline(WALL + S).now() == WALL + S  # the clock lost a second while we slept
        assert timeline(WALL - 60 * S).now() == WALL
    assert not caplog.records


def test_before_the_clock_is_synchronised_the_floor_holds(caplog) -> None:
    """A Pi without a real-time clock boots an hour behind after a power cut: the last counted
    edge is right and the clock is stale, so timestamps go on from the edge."""
    with caplog.at_level(logging.WARNING, logger="gateway.timeline"):
        line = timeline(WALL + 3600 * S, synchronized=False)
    assert line.now() == WALL + 3600 * S
    assert "not known to be synchronised" in caplog.text
