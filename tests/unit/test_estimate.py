"""Estimates for unwatched time (gateway/core/estimate.py), computed by hand."""

from __future__ import annotations

from gateway.core.estimate import (
    HISTORY,
    LINEAR,
    WEEK_S,
    Estimate,
    Watched,
    estimate_gaps,
    period_estimate,
)

IS = 900  # interval seconds
NS = 1_000_000_000
T0 = 1_796_000_400 * NS  # some interval start


def at(k: int) -> int:
    return T0 + k * IS * NS


def day(energies: list[int | None], first: int = 0) -> list[Watched]:
    """Intervals from ``first`` on: an int is watched energy, None a wholly unwatched one."""
    return [
        Watched(at(first + k), 0 if e is None else e, IS if e is None else 0)
        for k, e in enumerate(energies)
    ]


def test_a_short_gap_is_interpolated_between_its_neighbours() -> None:
    # 100 Wh before, 400 Wh after, three unwatched intervals (45 min): 175, 250, 325 Wh.
    got = estimate_gaps(day([100, None, None, None, 400]), IS, None)
    assert got == {
        at(1): Estimate(at(1), 175, LINEAR),
        at(2): Estimate(at(2), 250, LINEAR),
        at(3): Estimate(at(3), 325, LINEAR),
    }


def test_a_half_watched_neighbour_counts_at_its_rate_and_only_unwatched_seconds_are_estimated() -> (
    None
):
    # Before: 60 Wh in the 450 s watched, a rate of 120 Wh per interval. After: 120 Wh.
    # The gap interval is unwatched for 300 s (it measured 30 Wh in the other 600 s):
    # 120 x 300 / 900 = 40 Wh. The half-watched interval's own 450 s: a short gap of its
    # own (750 s together with the next): interpolated too.
    items = [Watched(at(0), 60, 450), Watched(at(1), 30, 300), Watched(at(2), 120, 0)]
    got = estimate_gaps(items, IS, None)
    # Gap [0, 1]: no watched interval before: flat at the after-rate, 120 Wh per interval.
    # Interval 0: 120 x 450/900 = 60; interval 1: 120 x 300/900 = 40.
    assert got == {at(0): Estimate(at(0), 60, LINEAR), at(1): Estimate(at(1), 40, LINEAR)}


def test_one_side_missing_holds_the_other_and_no_side_estimates_nothing() -> None:
    assert estimate_gaps(day([200, None]), IS, None) == {at(1): Estimate(at(1), 200, LINEAR)}
    assert estimate_gaps(day([None, None]), IS, None) == {}


def test_rounding_is_half_up_in_whole_wh() -> None:
    # 0 and 5 Wh around one interval: 2.5 Wh -> 3 Wh.
    assert estimate_gaps(day([0, None, 5]), IS, None)[at(1)].estimated_wh == 3


def test_estimates_stay_inside_what_the_meter_can_carry() -> None:
    # A max power of 1,000 W carries 250 Wh in 900 s: 400 Wh neighbours are clipped there.
    got = estimate_gaps(day([400, None, 400]), IS, 1000)
    assert got[at(1)] == Estimate(at(1), 250, LINEAR)


def test_a_gap_longer_than_an_hour_takes_the_same_time_of_the_previous_weeks() -> None:
    week = WEEK_S // IS  # intervals per week
    # Five unwatched intervals (75 min) at 4k..4k+4 this week; the same times one and two
    # weeks before were watched at 100/300 and 200/400 Wh; three weeks before unwatched.
    two_back = day([200, 400, 200, 400, 200], first=-2 * week)
    one_back = day([100, 300, 100, 300, 100], first=-week)
    three_back = day([None] * 5, first=-3 * week)
    gap = day([None] * 5)
    got = estimate_gaps([*three_back, *two_back, *one_back, *gap], IS, None)
    # Average of watched weeks: (200 + 100) / 2 = 150, (400 + 300) / 2 = 350, ...
    assert {k: v for k, v in got.items() if k >= at(0)} == {
        at(0): Estimate(at(0), 150, HISTORY),
        at(1): Estimate(at(1), 350, HISTORY),
        at(2): Estimate(at(2), 150, HISTORY),
        at(3): Estimate(at(3), 350, HISTORY),
        at(4): Estimate(at(4), 150, HISTORY),
    }
    # Three weeks back had no watched history at all: not estimated (no linear fallback
    # for a long gap).
    assert not any(k < at(-2 * week) for k in got)


def test_a_long_gap_without_watched_history_is_not_estimated() -> None:
    assert estimate_gaps(day([100, None, None, None, None, None, 100]), IS, None) == {}


def test_a_missing_interval_splits_gaps() -> None:
    # Two single unwatched intervals with a stored-nowhere interval between them: each is a
    # short gap with one neighbour.
    items = [Watched(at(0), 80, 0), Watched(at(1), 0, IS), Watched(at(3), 0, IS)]
    assert estimate_gaps(items, IS, None) == {at(1): Estimate(at(1), 80, LINEAR)}


def test_a_period_sums_its_intervals_within_the_reads_bounds() -> None:
    a, b = Estimate(at(0), 150, HISTORY), Estimate(at(1), 40, LINEAR)
    assert period_estimate([a, b]) == (190, "history+linear")
    assert period_estimate([a]) == (150, "history")
    assert period_estimate([a, b], (200, 1000)) == (200, "history+linear")  # pins proved 200
    assert period_estimate([a, b], (0, 100)) == (100, "history+linear")  # max power: 100
    assert period_estimate([]) is None
