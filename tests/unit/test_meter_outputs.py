"""The `10` and `1K` outputs: exact edge times, scalar and vectorised paths, and properties."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from unittest import mock

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from meter_model import CHANNEL_1K, CHANNEL_10, Edge, Meter, MeterConfig, profile_edges
from meter_model import outputs as outputs_module
from meter_model.outputs import EDGE_10_NJ, edges_10_before, segment_edges, split_steps
from meter_model.profiles import (
    STEP_S,
    builtin_power_mw,
    builtin_segments,
)

US = 1_000_000
NJ_PER_WH = 3_600 * 10**9
Q = 5 * NJ_PER_WH  # one `10` edge: 5 Wh = 1.8e13 nJ
KW12_MW = 12_000_000

# The `scalar_path` fixture (conftest.py): a profile run through segment_edges step by step.
ScalarPath = Callable[[list[int], list[int], int, int], tuple[list[Edge], int]]


def _arrays(edges: list[Edge]) -> tuple[list[int], list[int], list[int], list[int]]:
    """Return (`10` times, `10` ordinals, `1K` times, `1K` ordinals) of a scalar edge list."""
    e10 = [e for e in edges if e.channel == CHANNEL_10]
    e1k = [e for e in edges if e.channel == CHANNEL_1K]
    return (
        [e.t_us for e in e10],
        [e.count for e in e10],
        [e.t_us for e in e1k],
        [e.count for e in e1k],
    )


def test_edge_10_is_5wh_in_nanojoules() -> None:
    assert EDGE_10_NJ == Q == 18_000_000_000_000
    assert edges_10_before(Q - 1) == 0
    assert edges_10_before(Q) == 1
    assert edges_10_before(100 * Q + 5) == 100


# -- the 12 kW, 10 minute hand case ----------------------------------------------------------

# 12 kW for 600 s is 2000 Wh: a `10` edge every 5 Wh / 12 kW = 1.5 s, 400 of them, and a `1K`
# edge every 500 Wh = 150 s, at 150, 300, 450 and 600 s.
T10_12KW = [1_500_000 * n for n in range(1, 401)]
T1K_12KW = [150 * US, 300 * US, 450 * US, 600 * US]


def test_12kw_for_10_minutes_scalar() -> None:
    edges = list(segment_edges(0, 0, KW12_MW, 600 * US))
    t10, n10, t1k, n1k = _arrays(edges)
    assert t10 == T10_12KW
    assert n10 == list(range(1, 401))
    assert t1k == T1K_12KW
    assert n1k == [1, 2, 3, 4]
    assert [e.level for e in edges if e.channel == CHANNEL_10] == [1, 0] * 200
    assert [e.level for e in edges if e.channel == CHANNEL_1K] == [1, 0, 1, 0]
    # Each `1K` edge follows the `10` edge it coincides with.
    assert edges[0] == Edge(1_500_000, CHANNEL_10, 1, 1)
    i = edges.index(Edge(150 * US, CHANNEL_10, 0, 100))
    assert edges[i + 1] == Edge(150 * US, CHANNEL_1K, 1, 1)
    assert edges[-1] == Edge(600 * US, CHANNEL_1K, 0, 4)


def test_12kw_for_10_minutes_vectorised() -> None:
    result = profile_edges([0], [KW12_MW], 600 * US)
    assert result.t10_us.tolist() == T10_12KW
    assert result.n10.tolist() == list(range(1, 401))
    assert result.t1k_us.tolist() == T1K_12KW
    assert result.n1k.tolist() == [1, 2, 3, 4]
    assert result.end_energy_nj == 2000 * NJ_PER_WH
    assert result.t10_us.dtype == np.int64


def test_12kw_for_10_minutes_through_the_meter() -> None:
    meter = Meter(MeterConfig.from_model("2O208-4W"), start_us=0)
    meter.apply_power_kw(0, 12.0)
    assert meter.measurement.registered_power_mw == KW12_MW
    edges = meter.advance(600 * US)
    t10, n10, t1k, _ = _arrays(edges)
    assert t10 == T10_12KW
    assert n10 == list(range(1, 401))
    assert t1k == T1K_12KW
    assert meter.energy_wh == 2000
    assert (meter.edges_10, meter.edges_1k) == (400, 4)
    assert (meter.level_10, meter.level_1k) == (0, 0)


def test_first_10_edge_comes_at_5wh_with_level_1() -> None:
    # 1 kW: 5 Wh after 18 s; 1 us earlier the register holds 5 Wh less 1 J.
    assert list(segment_edges(0, 0, 1_000_000, 18 * US - 1)) == []
    assert list(segment_edges(0, 0, 1_000_000, 18 * US)) == [Edge(18 * US, CHANNEL_10, 1, 1)]


def test_first_1k_edge_comes_at_500wh() -> None:
    # 1 kW: 500 Wh after 1800 s.
    result = profile_edges([0], [1_000_000], 1800 * US - 1)
    assert len(result.t10_us) == 99
    assert len(result.t1k_us) == 0
    result = profile_edges([0], [1_000_000], 1800 * US)
    assert result.t1k_us.tolist() == [1800 * US]
    assert result.n1k.tolist() == [1]


def test_edges_are_stamped_at_the_first_whole_microsecond_past_the_threshold() -> None:
    # 7 mW: 1.8e13 / 7 = 2571428571428.57 us; 7 x 2571428571428 = 17999999999996 < 1.8e13.
    edges = list(segment_edges(0, 0, 7, 2_571_428_571_429))
    assert edges == [Edge(2_571_428_571_429, CHANNEL_10, 1, 1)]
    assert list(segment_edges(0, 0, 7, 2_571_428_571_428)) == []
    result = profile_edges([0], [7], 2_571_428_571_429)
    assert result.t10_us.tolist() == [2_571_428_571_429]


def test_start_energy_offset_hand_case() -> None:
    # One nJ short of edge 100 (also `1K` edge 1); 1 mW adds 1 nJ per us.
    start_nj = 100 * Q - 1
    edges = list(segment_edges(1000, start_nj, 1, 1001))
    assert edges == [Edge(1001, CHANNEL_10, 0, 100), Edge(1001, CHANNEL_1K, 1, 1)]
    result = profile_edges([1000], [1], 1001, start_energy_nj=start_nj)
    assert result.t10_us.tolist() == [1001]
    assert result.n10.tolist() == [100]
    assert result.n1k.tolist() == [1]
    assert result.end_energy_nj == 100 * Q


def test_start_energy_offset_shifts_every_edge() -> None:
    # 2.5 Wh already in the register at 12 kW: edges 0.75 s earlier than from 0 Wh.
    start_nj = Q // 2
    result = profile_edges([0], [KW12_MW], 600 * US, start_energy_nj=start_nj)
    assert result.t10_us[:3].tolist() == [750_000, 2_250_000, 3_750_000]
    assert len(result.t10_us) == 400  # 2002.5 Wh: edge 401 would need 2005 Wh
    assert result.t1k_us.tolist() == [149_250_000, 299_250_000, 449_250_000, 599_250_000]
    scalar = list(segment_edges(0, start_nj, KW12_MW, 600 * US))
    t10, n10, t1k, _ = _arrays(scalar)
    assert t10 == result.t10_us.tolist()
    assert n10 == result.n10.tolist()
    assert t1k == result.t1k_us.tolist()


def test_an_edge_exactly_at_a_step_end_belongs_to_that_step_only() -> None:
    # 12 kW, 0 W, 12 kW, each for 1.5 s: edges exactly at the ends of the powered steps.
    t_us, power_mw = [0, 1_500_000, 3_000_000], [KW12_MW, 0, KW12_MW]
    result = profile_edges(t_us, power_mw, 4_500_000)
    assert result.t10_us.tolist() == [1_500_000, 4_500_000]
    assert result.n10.tolist() == [1, 2]
    first = list(segment_edges(0, 0, KW12_MW, 1_500_000))
    second = list(segment_edges(1_500_000, Q, KW12_MW, 3_000_000))
    assert [e.count for e in first] == [1]
    assert [e.count for e in second] == [2]  # edge 1 is not repeated


def test_no_power_or_no_time_makes_no_edges() -> None:
    assert list(segment_edges(0, 0, 0, 10**15)) == []
    assert list(segment_edges(0, 0, -5, 10**15)) == []
    assert list(segment_edges(10, 0, KW12_MW, 10)) == []
    assert list(segment_edges(10, 0, KW12_MW, 5)) == []
    empty = profile_edges([], [], 10**9, start_energy_nj=7)
    assert empty.t10_us.tolist() == []
    assert empty.end_energy_nj == 7
    zero = profile_edges([0, 5], [0, 0], 10**12, start_energy_nj=Q - 1)
    assert zero.t10_us.tolist() == []
    assert zero.end_energy_nj == Q - 1


# -- very long steps --------------------------------------------------------------------------


def testsplit_steps_keeps_every_piece_within_int64() -> None:
    power = np.array([10**12, 0, 5], dtype=np.int64)
    t_us = np.array([0, 10**7, 2 * 10**7], dtype=np.int64)
    start, duration, p = split_steps(t_us, power, 3 * 10**7)
    assert len(start) > 3  # the 1 GW step (1e19 nJ > 2**62) was split
    assert (p * duration <= 2**62).all()
    # The pieces tile the profile with no gap or overlap, keeping each step's power.
    assert start[0] == 0
    assert (start[1:] == start[:-1] + duration[:-1]).all()
    assert int(start[-1] + duration[-1]) == 3 * 10**7
    assert int((p * duration).sum(dtype=object)) == 10**12 * 10**7 + 5 * 10**7
    assert sorted(set(p.tolist())) == [0, 5, 10**12]


def test_short_steps_are_not_split() -> None:
    t_us = np.array([0, 100], dtype=np.int64)
    power = np.array([KW12_MW, 0], dtype=np.int64)
    start, duration, p = split_steps(t_us, power, 250)
    assert start.tolist() == [0, 100]
    assert duration.tolist() == [100, 150]
    assert p.tolist() == [KW12_MW, 0]


def test_a_step_over_2_62_nj_splits_and_matches_the_scalar_path(scalar_path: ScalarPath) -> None:
    # 1.8e13 mW puts exactly one `10` edge in every microsecond: 300,000 us is 5.4e18 nJ.
    power = Q
    assert power * 300_000 > 2**62
    result = profile_edges([0], [power], 300_000)
    assert result.t10_us.tolist() == list(range(1, 300_001))
    assert result.n10.tolist() == list(range(1, 300_001))
    assert result.t1k_us.tolist() == list(range(100, 300_001, 100))
    assert result.end_energy_nj == 300_000 * Q
    edges, end_nj = scalar_path([0], [power], 300_000, 0)
    t10, _, t1k, _ = _arrays(edges)
    assert t10 == result.t10_us.tolist()
    assert t1k == result.t1k_us.tolist()
    assert end_nj == result.end_energy_nj


def test_odd_power_long_steps_match_the_scalar_path(scalar_path: ScalarPath) -> None:
    # ~1 GW for 5 s then for 0.4 s, with an offset: about 300,000 edges, several split pieces.
    t_us, power_mw = [10**9, 10**9 + 5 * US], [10**12 + 7, 10**12 - 3]
    end_us, start_nj = 10**9 + 5_400_000, 123_456_789_012_345
    result = profile_edges(t_us, power_mw, end_us, start_energy_nj=start_nj)
    total_nj = start_nj + (10**12 + 7) * 5 * US + (10**12 - 3) * 400_000
    assert result.end_energy_nj == total_nj
    assert int(result.n10[-1]) == total_nj // Q
    edges, end_nj = scalar_path(t_us, power_mw, end_us, start_nj)
    t10, n10, t1k, n1k = _arrays(edges)
    assert t10 == result.t10_us.tolist()
    assert n10 == result.n10.tolist()
    assert t1k == result.t1k_us.tolist()
    assert n1k == result.n1k.tolist()
    assert end_nj == total_nj


# -- properties over any piecewise-constant profile -------------------------------------------


@st.composite
def profiles(draw: st.DrawFn) -> tuple[list[int], list[int], int, int]:
    """Draw (t_us, power_mw, end_us, start_energy_nj): up to 8 steps of up to 6 min, <= 20 kW."""
    n = draw(st.integers(1, 8))
    t0 = draw(st.integers(-(10**12), 2 * 10**15))
    durations = draw(
        st.lists(st.one_of(st.integers(1, 1000), st.integers(1, 360 * US)), min_size=n, max_size=n)
    )
    powers = draw(
        st.lists(
            st.one_of(st.just(0), st.integers(1, 1000), st.integers(0, 20_000_000)),
            min_size=n,
            max_size=n,
        )
    )
    start_energy = draw(
        st.one_of(
            st.just(0),
            st.integers(0, 10**16),
            # Just short of a `1K` edge, so `1K` edges are common.
            st.builds(lambda m, d: max(0, m * 100 * Q - d), st.integers(1, 5), st.integers(0, Q)),
        )
    )
    t_us = [t0]
    for d in durations[:-1]:
        t_us.append(t_us[-1] + d)
    return t_us, powers, t_us[-1] + durations[-1], start_energy


@settings(max_examples=200, deadline=None)
@given(profiles())
def test_profile_properties(
    scalar_path: ScalarPath, profile: tuple[list[int], list[int], int, int]
) -> None:
    t_us, power_mw, end_us, start_nj = profile
    result = profile_edges(t_us, power_mw, end_us, start_energy_nj=start_nj)
    stops = [*t_us[1:], end_us]
    energy_nj = sum(p * (t1 - t0) for t0, p, t1 in zip(t_us, power_mw, stops, strict=True))
    total_nj = start_nj + energy_nj
    assert result.end_energy_nj == total_nj

    # Counting: the edges made are exactly floor(E / 5 Wh) less those already made, so
    # edges x 5 Wh is within one edge of the integrated energy.
    made = len(result.t10_us)
    assert made == total_nj // Q - start_nj // Q
    if start_nj == 0:
        assert made * Q <= energy_nj < (made + 1) * Q
    assert result.n10.tolist() == list(range(start_nj // Q + 1, total_nj // Q + 1))

    # Levels alternate: the level after edge n is n % 2.
    levels = (result.n10 % 2).tolist()
    assert all(a != b for a, b in itertools.pairwise(levels))

    # Times never decrease and lie within the profile, after its start.
    times = result.t10_us.tolist()
    assert times == sorted(times)
    assert all(t_us[0] < t <= end_us for t in times)

    # `1K` edges are exactly every 100th `10` edge, at the same times.
    assert result.n1k.tolist() == list(range(start_nj // (100 * Q) + 1, total_nj // (100 * Q) + 1))
    by_count = dict(zip(result.n10.tolist(), times, strict=True))
    assert result.t1k_us.tolist() == [by_count[100 * m] for m in result.n1k.tolist()]

    # The scalar path gives exactly the same edges.
    edges, end_nj = scalar_path(t_us, power_mw, end_us, start_nj)
    t10, n10, t1k, n1k = _arrays(edges)
    assert t10 == times
    assert n10 == result.n10.tolist()
    assert t1k == result.t1k_us.tolist()
    assert n1k == result.n1k.tolist()
    assert [e.level for e in edges] == [e.count % 2 for e in edges]
    assert end_nj == total_nj


@settings(max_examples=100, deadline=None)
@given(profiles(), st.integers(Q, 40 * Q))
def test_forced_splitting_changes_nothing(
    profile: tuple[list[int], list[int], int, int], max_step_nj: int
) -> None:
    t_us, power_mw, end_us, start_nj = profile
    whole = profile_edges(t_us, power_mw, end_us, start_energy_nj=start_nj)
    with mock.patch.object(outputs_module, "MAX_STEP_NJ", max_step_nj):
        split = profile_edges(t_us, power_mw, end_us, start_energy_nj=start_nj)
    assert split.t10_us.tolist() == whole.t10_us.tolist()
    assert split.n10.tolist() == whole.n10.tolist()
    assert split.end_energy_nj == whole.end_energy_nj


@settings(max_examples=150, deadline=None)
@given(profiles(), st.integers(Q // 2, 40 * Q), st.lists(st.integers(1, 60), max_size=8))
def test_a_profile_run_piece_by_piece_gives_the_same_edges(
    profile: tuple[list[int], list[int], int, int], max_step_nj: int, cuts: list[int]
) -> None:
    """Cut into short steps, run in pieces carrying the energy: the same edges (simulate's blocks)."""
    t_us, power_mw, end_us, start_nj = profile
    whole = profile_edges(t_us, power_mw, end_us, start_energy_nj=start_nj)
    starts, durations, powers = split_steps(
        np.array(t_us, np.int64), np.array(power_mw, np.int64), end_us, max_step_nj
    )
    assert (powers * durations <= max(max_step_nj, int(max(power_mw)))).all()
    bounds = sorted({0, len(starts), *(c for c in cuts if c < len(starts))})
    t10: list[int] = []
    n10: list[int] = []
    energy_nj = start_nj
    for lo, hi in itertools.pairwise(bounds):
        stop = int(starts[hi - 1] + durations[hi - 1])
        piece = profile_edges(starts[lo:hi], powers[lo:hi], stop, start_energy_nj=energy_nj)
        t10 += piece.t10_us.tolist()
        n10 += piece.n10.tolist()
        energy_nj = piece.end_energy_nj
    assert t10 == whole.t10_us.tolist()
    assert n10 == whole.n10.tolist()
    assert energy_nj == whole.end_energy_nj


# -- the built-in load profile ----------------------------------------------------------------


def test_builtin_profile_hand_value_at_midnight_utc() -> None:
    # Minute 0: wobble -150 W; HVAC on (duty 23 % at 00:00, cycle second 0); no bumps.
    assert builtin_power_mw(0) == 650_000 - 150_000 + 3_400_000


def test_builtin_profile_bumps_by_local_hour() -> None:
    # Same UTC minute (same wobble), same second of the 20-minute HVAC cycle; only the local
    # hour moves, by utc_offset_h.
    at_18_utc = 18 * 3600 * US  # cycle second 0: the HVAC is on at any duty
    assert builtin_power_mw(at_18_utc) - builtin_power_mw(at_18_utc, -3.0) == 2_600_000  # evening
    at_07_utc = 7 * 3600 * US
    assert builtin_power_mw(at_07_utc) - builtin_power_mw(at_07_utc, 2.0) == 1_200_000  # morning
    # 03:10 UTC is cycle second 600: duty 15 % (180 s) leaves the HVAC off; at 15:10 local
    # the duty is 70 % (840 s) and it is on.
    at_0310_utc = (3 * 3600 + 600) * US
    assert builtin_power_mw(at_0310_utc, 12.0) - builtin_power_mw(at_0310_utc) == 3_400_000


def test_builtin_profile_is_constant_within_each_minute() -> None:
    # "Power during the minute containing t_us": it may change only at whole minutes.
    for minute in range(24 * 60):
        start_us = minute * STEP_S * US
        first = builtin_power_mw(start_us)
        later = [builtin_power_mw(start_us + s * US + 999_999) for s in (0, 29, 59)]
        assert later == [first] * 3, f"minute {minute}"


def test_builtin_segments_are_minute_steps_that_agree_wherever_they_start() -> None:
    # Starting at 00:04:50 UTC, inside the minute where the HVAC's first cycle ends (its duty at
    # midnight is 23 %, 276.6 s of the 1200 s cycle).
    start_us, end_us = 290 * US, 3600 * US
    segments = list(builtin_segments(start_us, end_us))
    times = [t for t, _ in segments]
    assert times[0] == start_us
    assert times[1:] == list(range(300 * US, 3600 * US, STEP_S * US))
    # A run started earlier sees the same power over the overlap.
    earlier = dict(builtin_segments(0, end_us))
    assert segments[0][1] == earlier[240 * US]
    assert all(earlier[t] == p for t, p in segments[1:])
    assert all(p > 0 for _, p in segments)
