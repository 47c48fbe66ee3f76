"""What MeterCore hands to its owner: events, sub-intervals, the last edges seen, line levels;
and ``skip_seen``, the rule a resumed source uses to leave out what was already counted."""

from __future__ import annotations

import numpy as np
from core_helpers import METER, MS, NS, T0, push_all
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.edge import CHANNEL_1K, CHANNEL_10, Edge
from gateway.core.events import EventKind
from gateway.core.hygiene import skip_seen
from gateway.core.meter import CoreSettings, MeterCore
from meter_model.demand import SubInterval

US = 1_000  # ns per µs


def _arrays(rows: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([t for t, _ in rows], np.int64), np.array([lv for _, lv in rows], np.int8)


def _rows(t: np.ndarray, lv: np.ndarray) -> list[tuple[int, int]]:
    return list(zip(t.tolist(), lv.tolist(), strict=True))


# -- skip_seen ----------------------------------------------------------------------------------


def test_skip_seen_drops_what_is_before_the_last_edge_and_at_its_time_up_to_its_level() -> None:
    t, lv = _arrays([(50, 1), (100, 0), (100, 1), (150, 0)])
    kept_t, kept_lv, skipped = skip_seen((100, 0), t, lv)
    assert (_rows(kept_t, kept_lv), skipped) == ([(100, 1), (150, 0)], 2)
    kept_t, kept_lv, skipped = skip_seen((100, 1), t, lv)
    assert (_rows(kept_t, kept_lv), skipped) == ([(150, 0)], 3)


def test_skip_seen_keeps_everything_with_nothing_seen_or_all_after() -> None:
    t, lv = _arrays([(100, 1), (200, 0)])
    for last in (None, (99, 1), (100, 0)):
        kept_t, kept_lv, skipped = skip_seen(last, t, lv)
        assert kept_t is t and kept_lv is lv and skipped == 0  # no copy
    empty_t, empty_lv = _arrays([])
    assert skip_seen((100, 0), empty_t, empty_lv)[2] == 0


def test_skip_seen_drops_a_whole_block_already_counted() -> None:
    t, lv = _arrays([(10, 1), (20, 0), (30, 1)])
    kept_t, _, skipped = skip_seen((30, 1), t, lv)
    assert (len(kept_t), skipped) == (0, 3)


@given(
    st.lists(st.tuples(st.integers(0, 20), st.integers(0, 1)), max_size=30),
    st.none() | st.tuples(st.integers(-1, 21), st.integers(0, 1)),
)
def test_skip_seen_keeps_exactly_the_edges_sorting_after_the_last(
    rows: list[tuple[int, int]], last: tuple[int, int] | None
) -> None:
    rows.sort()
    kept_t, kept_lv, skipped = skip_seen(last, *_arrays(rows))
    expected = [r for r in rows if last is None or r > last]
    assert _rows(kept_t, kept_lv) == expected
    assert skipped == len(rows) - len(expected)


# -- MeterCore hand-over ------------------------------------------------------------------------


def _steady(core: MeterCore, n: int, *, step_s: int = 100) -> None:
    """Push `10` edges at T0 + k * step_s for k = 1..n, levels 1, 0, 1, ..."""
    push_all(core, [(T0 + k * step_s * NS, CHANNEL_10, k % 2) for k in range(1, n + 1)])


def test_take_events_hands_over_once() -> None:
    core = MeterCore(METER, start_ns=T0)
    core.reset_peak(T0 + NS, "key")
    events = core.take_events()
    assert [(e.kind, e.detail) for e in events] == [(EventKind.PEAK_RESET, "key")]
    assert core.take_events() == [] and core.events == []
    core.reset_peak(T0 + 2 * NS)
    assert len(core.take_events()) == 1
    assert events[0].detail == "key"  # what was handed over is the caller's


def test_take_subintervals_hands_over_the_registers_closed_sub_intervals_once() -> None:
    core = MeterCore(METER, start_ns=T0, record_subintervals=True)
    _steady(core, 10)  # `10` edges every 100 s: 2, 3, 3 in the first sub-intervals, then 2
    push_all(core, [(T0 + 1000 * NS, CHANNEL_1K, 1)])
    s_us = 300 * NS // US
    t0_us = T0 // US
    # The edge at 900 s (confirmed by the one at 1000 s) closed the first three.
    assert core.take_subintervals() == [
        SubInterval(t0_us, t0_us + s_us, 10, True),
        SubInterval(t0_us + s_us, t0_us + 2 * s_us, 15, True),
        SubInterval(t0_us + 2 * s_us, t0_us + 3 * s_us, 15, True),
    ]
    core.advance(T0 + 1100 * NS)
    assert core.take_subintervals() == []
    core.finish(T0 + 1200 * NS)
    assert core.take_subintervals() == [SubInterval(t0_us + 3 * s_us, t0_us + 4 * s_us, 10, True)]


def test_take_subintervals_is_empty_when_not_recorded_or_not_begun() -> None:
    assert MeterCore(METER, record_subintervals=True).take_subintervals() == []
    core = MeterCore(METER, start_ns=T0)
    _steady(core, 10)
    core.finish(T0 + 1200 * NS)
    assert core.take_subintervals() == []


def test_take_subintervals_returns_the_1k_channels_when_it_is_the_register() -> None:
    settings = CoreSettings(wh_per_edge={CHANNEL_10: 5, CHANNEL_1K: 500})
    core = MeterCore(METER, settings, start_ns=T0, record_subintervals=True)
    push_all(core, [(T0 + 100 * NS, CHANNEL_1K, 1), (T0 + 400 * NS, CHANNEL_1K, 0)])
    core.finish(T0 + 600 * NS)
    assert [s.energy for s in core.take_subintervals()] == [500, 500]


def test_last_seen_and_last_level_include_the_pending_edge() -> None:
    core = MeterCore(METER)
    assert core.last_seen() == {} and core.last_level(CHANNEL_10) is None
    _steady(core, 3)
    last = (T0 + 300 * NS, 1)
    assert core.last_seen() == {CHANNEL_10: last}
    assert core.hygiene[CHANNEL_10].level == 0  # the newest edge is still pending ...
    assert core.last_level(CHANNEL_10) == 1  # ... and is what the line shows
    core.push(Edge(T0 + 300 * NS + MS, METER, CHANNEL_10, 0))  # a glitch pops it
    assert core.last_level(CHANNEL_10) == 0
    assert core.last_seen() == {CHANNEL_10: (T0 + 300 * NS + MS, 0)}
    assert core.last_level(CHANNEL_1K) is None


def test_set_initial_levels_a_line_high_at_start_is_not_counted() -> None:
    core = MeterCore(METER, start_ns=T0)
    core.set_initial_levels({CHANNEL_10: 1, CHANNEL_1K: 0})
    assert core.last_level(CHANNEL_10) == 1 and core.last_level(CHANNEL_1K) == 0
    push_all(core, [(T0 + NS, CHANNEL_10, 0), (T0 + 2 * NS, CHANNEL_10, 1)])
    core.finish()
    assert (core.energy_wh, core.inferred_edges) == (10, 0)
    # Unread, the first falling edge would say nothing about the one before it; read as low,
    # it reveals a missed rising edge.
    low = MeterCore(METER, start_ns=T0)
    low.set_initial_levels({CHANNEL_10: 0})
    push_all(low, [(T0 + NS, CHANNEL_10, 0), (T0 + 2 * NS, CHANNEL_10, 1)])
    low.finish()
    assert (low.energy_wh, low.inferred_edges) == (15, 1)
