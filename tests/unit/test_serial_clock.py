"""The serial board's clock: unwrapped with the host's receive times, mapped by heartbeats.

Every case runs on explicit host times: a board whose counter runs at a known rate against the
host, lines reaching the host a known latency after they were sent.
"""

from __future__ import annotations

import pytest

from gateway.sources.serial import WRAP, BoardClock

S = 1_000_000_000  # ns
MIN = 60 * S
HEARTBEAT_LATENCY_NS = 2_000_000
EDGE_LATENCY_NS = 30_000_000
# What the heartbeats can do: the heartbeat latency, and the crystal's drift over the second or
# so between a heartbeat and an edge.
ACCURACY_NS = 10_000_000


class Link:
    """A board seen from the host: its counter, what it sends and when the host gets it."""

    def __init__(self, counter_us: int, at_ns: int = 10**12, rate_ppm: int = 0) -> None:
        self.clock = BoardClock()
        self.rate_ppm = rate_ppm
        self.restart(counter_us, at_ns)

    def restart(self, counter_us: int, at_ns: int) -> None:
        """The board's counter reads ``counter_us`` at host time ``at_ns`` and runs on from it."""
        self.base_us, self.base_ns = counter_us, at_ns

    def counter(self, at_ns: int) -> int:
        elapsed_ns = (at_ns - self.base_ns) * (1_000_000 + self.rate_ppm) // 1_000_000
        return (self.base_us + elapsed_ns // 1_000) % WRAP

    def heartbeat(self, at_ns: int, latency_ns: int = HEARTBEAT_LATENCY_NS) -> int:
        """Send a heartbeat at ``at_ns``; return the board time it was unwrapped to."""
        received = at_ns + latency_ns
        board_us = self.clock.unwrap(self.counter(at_ns), received)
        self.clock.heartbeat(board_us, received)
        return board_us

    def edge(self, at_ns: int, latency_ns: int = EDGE_LATENCY_NS) -> int:
        """Send an edge that happened at ``at_ns``; return the host time it is stamped with."""
        received = at_ns + latency_ns
        board_us = self.clock.unwrap(self.counter(at_ns), received)
        return self.clock.to_host(board_us, received)

    def heartbeats(self, from_ns: int, count: int) -> int:
        """Send a heartbeat every second from ``from_ns``; return the time of the last."""
        for k in range(count):
            self.heartbeat(from_ns + k * S)
        return from_ns + (count - 1) * S


def assert_stamped_right(stamped_ns: int, happened_ns: int, drift_ns: int = 0) -> None:
    """Within the heartbeats' accuracy, and ``drift_ns`` either way for a drifting board."""
    error_ns = stamped_ns - happened_ns
    assert -drift_ns <= error_ns <= ACCURACY_NS + drift_ns, error_ns / S


def test_edges_are_stamped_through_the_heartbeats_and_never_after_they_came() -> None:
    link = Link(counter_us=1_000_000)
    t = link.heartbeats(10**12, 5)
    assert_stamped_right(link.edge(t + S // 2), t + S // 2)
    # A line held up 5 s is still stamped by the board's time, not by when it came.
    assert_stamped_right(link.edge(t + S // 2 + S // 10, latency_ns=5 * S), t + S // 2 + S // 10)
    # Offsets that say "later than it came" are wrong; when it came is the bound.
    clock = BoardClock()
    clock.heartbeat(clock.unwrap(5_000_000, 100 * S), 100 * S)
    assert clock.to_host(clock.unwrap(6_000_000, 100 * S), 100 * S) == 100 * S


def test_the_counter_unwraps_across_its_32_bits() -> None:
    link = Link(counter_us=WRAP - 2_500_000)  # 2.5 s before the counter wraps
    t0 = 10**12
    first = link.heartbeat(t0)
    assert_stamped_right(link.edge(t0 + S // 2), t0 + S // 2)
    link.heartbeats(t0 + S, 2)
    for at in (t0 + 2 * S + 700_000_000, t0 + 2 * S + 900_000_000):  # just past the wrap
        assert_stamped_right(link.edge(at), at)
    link.heartbeats(t0 + 3 * S, 3)
    assert link.clock.unwrapped_us == first + 5_000_000  # on past the wrap, not back by 71 min
    last = t0 + 5 * S + S // 4
    assert_stamped_right(link.edge(last), last)
    assert link.clock.epoch == 1 and not link.clock.notes
    # A line a little out of order (the board's own ordering) stays close.
    board_us = link.clock.unwrapped_us
    assert link.clock.unwrap((link.counter(last) - 2) % WRAP, last + S) == board_us - 2
    assert link.clock.epoch == 1


@pytest.mark.parametrize("rate_ppm", [-5_000, 0, 5_000])  # a board 0.5 % slow, exact, fast
@pytest.mark.parametrize("silence_min", [40, 80])  # over half a wrap; over a whole wrap
def test_a_long_silence_keeps_times_right(rate_ppm: int, silence_min: int) -> None:
    """No line at all for longer than half a wrap (35.8 min), then edges and heartbeats again."""
    link = Link(counter_us=1_000_000_000, rate_ppm=rate_ppm)
    # The smallest offset over 16 heartbeats lags a drifting board by up to 16 s of its drift.
    drift = abs(rate_ppm) * 16 * S // 1_000_000
    t = link.heartbeats(10**12, 10)
    assert_stamped_right(link.edge(t + S // 2), t + S // 2, drift)
    t = link.heartbeats(t + S, 2)
    before_us = link.clock.unwrapped_us
    back = t + silence_min * MIN
    # The first line after the silence is an edge: before any heartbeat, when it came bounds it.
    stamped = link.edge(back)
    assert back <= stamped <= back + EDGE_LATENCY_NS
    # Unwrapped across the silence, as long as the board saw it last, not taken for a restart.
    elapsed_us = link.clock.unwrapped_us - before_us
    assert abs(elapsed_us - (back - t) * (1_000_000 + rate_ppm) // 1_000_000 // 1_000) <= 1
    assert list(link.clock.notes) == [
        f"clock re-synchronised after {silence_min * 60} s without a line"
    ]
    assert link.clock.epoch == 2  # the offsets from before may have drifted: they are gone
    link.heartbeat(back + S // 5)
    assert_stamped_right(link.edge(back + S // 2), back + S // 2, drift)
    last = link.heartbeats(back + S + S // 5, 3)
    assert_stamped_right(link.edge(last + S // 4), last + S // 4, drift)


@pytest.mark.parametrize(
    "counter_after_us",
    [2_200_000_000, 3_000_000_000, 1_000],  # above 2^31 and ahead, above 2^31, back near zero
)
def test_a_board_restart_keeps_times_right(counter_after_us: int) -> None:
    link = Link(counter_us=500_000_000)  # up for 8 min 20 s
    t = link.heartbeats(10**12, 10)
    assert_stamped_right(link.edge(t + S // 2), t + S // 2)
    restarted = t + S + S // 2
    link.restart(counter_after_us, restarted)
    back = restarted + S // 5
    # Its first line an edge, then heartbeats: not minutes off, whatever the counter says.
    stamped = link.edge(back)
    assert back <= stamped <= back + EDGE_LATENCY_NS
    assert link.clock.epoch == 2
    (note,) = link.clock.notes
    assert note.startswith("board restarted") and "clock re-synchronised" in note
    link.heartbeat(back + S // 10)
    assert_stamped_right(link.edge(back + S // 2), back + S // 2)
    last = link.heartbeats(back + S + S // 10, 3)
    assert_stamped_right(link.edge(last + S // 2), last + S // 2)


def test_a_stray_counter_is_a_resync_not_a_lasting_error() -> None:
    """A line with a good checksum but a wrong counter: the mapping starts afresh, twice."""
    link = Link(counter_us=100_000_000)
    t = link.heartbeats(10**12, 5)
    received = t + S // 2
    stray = link.clock.unwrap((link.counter(t) + 1_500_000_000) % WRAP, received)
    assert link.clock.to_host(stray, received) == received  # never after it came
    assert link.clock.epoch == 2
    last = link.heartbeats(t + S, 3)  # back to the true counter: another resync, then right
    assert link.clock.epoch == 3 and len(link.clock.notes) == 2
    assert_stamped_right(link.edge(last + S // 2), last + S // 2)


def test_a_busy_host_holding_lines_back_is_not_a_restart() -> None:
    """The host did not read for 8 s: the lines come all at once, the board's times hold."""
    link = Link(counter_us=100_000_000)
    t = link.heartbeats(10**12, 5)
    read_at = t + 8 * S
    for k in range(1, 8):
        link.heartbeat(t + k * S, latency_ns=read_at - (t + k * S))
    happened = t + 7 * S + S // 2
    assert_stamped_right(link.edge(happened, latency_ns=read_at - happened), happened)
    assert link.clock.epoch == 1 and not link.clock.notes


def test_a_board_in_a_restart_loop_is_said_once_and_once_when_steady(caplog) -> None:
    """A line a second, its counter jumping at each: 60 restarts, one warning, then one line."""
    import logging

    from gateway.sources.serial import SerialBoard

    caplog.set_level(logging.DEBUG, logger="gateway.sources.serial")
    board = SerialBoard("/dev/ttyTEST", 115200)
    t0 = 10**12
    for k in range(61):
        counter = 100 if k % 2 else 2_000_000_000  # a brown-out: it starts again and again
        board.receive(f"H {counter}".encode(), t0 + k * S)
    restarts = [n for _, n in board.notes if "restarted" in n]
    assert len(restarts) == 60  # each is still an event
    said = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert len(said) == 1 and "restarted" in said[0].getMessage()
    # Then a steady counter, a heartbeat a second: the restarts ran from t0 + 1 s (the first
    # line only starts the clock) to t0 + 60 s, and a minute later, at t0 + 120 s, it is steady.
    last = t0 + 60 * S
    for k in range(1, 62):
        board.receive(f"H {2_000_000_000 + k * 1_000_000}".encode(), last + k * S)
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert said[1:] == ["serial board on /dev/ttyTEST works again after 119 s (60 failed tries)"]
