"""Edge hygiene of one channel (SPEC section 3): duplicates, then glitches, then missed edges.

Every hand case runs through both paths of :class:`ChannelHygiene`: edge by edge (``push`` then
``finish``) and vectorised (``push_block``), the latter as one block and as one block per edge
(so every carried state crosses a block boundary).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from core_helpers import MS, NS, T0, counted, hygiene_block, hygiene_stream
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.hygiene import DEFAULT_GLITCH_NS, ChannelHygiene, Cleaned, merge

Run = Callable[..., tuple[ChannelHygiene, Cleaned]]


def _one_block(edges: Sequence[tuple[int, int]], **kwargs: Any) -> tuple[ChannelHygiene, Cleaned]:
    return hygiene_block(edges, **kwargs)


def _edge_per_block(
    edges: Sequence[tuple[int, int]], **kwargs: Any
) -> tuple[ChannelHygiene, Cleaned]:
    return hygiene_block(edges, cuts=range(1, len(edges)), **kwargs)


@pytest.fixture(params=["push", "push_block", "push_block per edge"])
def run(request: pytest.FixtureRequest) -> Run:
    return {
        "push": hygiene_stream,
        "push_block": _one_block,
        "push_block per edge": _edge_per_block,
    }[request.param]


def test_the_default_glitch_width_is_2_ms() -> None:
    assert DEFAULT_GLITCH_NS == 2 * MS
    assert ChannelHygiene().glitch_ns == 2 * MS


# -- clean input ---------------------------------------------------------------------------------


def test_alternating_levels_far_apart_are_all_counted(run: Run) -> None:
    edges = [(T0 + i * NS, (i + 1) % 2) for i in range(6)]
    h, out = run(edges)
    assert counted(out) == [(T0 + i * NS, False) for i in range(6)]
    assert out.real_t_ns.tolist() == [T0 + i * NS for i in range(6)]
    assert (h.duplicates, h.glitches, h.inferred, h.confirmed) == (0, 0, 0, 6)
    assert h.level == 0 and h.last_t_ns == T0 + 5 * NS


# -- 1. duplicates -------------------------------------------------------------------------------


def test_an_exact_duplicate_is_dropped_and_counted(run: Run) -> None:
    edges = [(T0, 1), (T0, 1), (T0 + 10 * NS, 0)]
    h, out = run(edges)
    assert counted(out) == [(T0, False), (T0 + 10 * NS, False)]
    assert h.duplicates == 1 and out.duplicates == 1
    assert (h.glitches, h.inferred) == (0, 0)


def test_every_copy_of_a_repeated_row_is_one_duplicate(run: Run) -> None:
    edges = [(T0, 1), (T0, 1), (T0, 1), (T0 + 10 * NS, 0), (T0 + 10 * NS, 0)]
    h, out = run(edges)
    assert counted(out) == [(T0, False), (T0 + 10 * NS, False)]
    assert h.duplicates == 3


def test_duplicates_go_before_glitches(run: Run) -> None:
    # Without removing the duplicate first, (T0+10 s, 0) twice would look like a 0 ns glitch.
    edges = [(T0, 1), (T0 + 10 * NS, 0), (T0 + 10 * NS, 0), (T0 + 20 * NS, 1)]
    h, out = run(edges)
    assert counted(out) == [(T0, False), (T0 + 10 * NS, False), (T0 + 20 * NS, False)]
    assert (h.duplicates, h.glitches, h.inferred) == (1, 0, 0)


def test_same_time_other_level_is_not_a_duplicate_but_a_zero_width_glitch(run: Run) -> None:
    edges = [(T0, 1), (T0 + 10 * NS, 0), (T0 + 10 * NS, 1), (T0 + 20 * NS, 0)]
    h, out = run(edges)
    assert counted(out) == [(T0, False), (T0 + 20 * NS, False)]
    assert (h.duplicates, h.glitches, h.inferred) == (0, 1, 0)


# -- 2. glitches ---------------------------------------------------------------------------------


def test_a_level_held_under_the_glitch_width_is_one_glitch_and_both_edges_go(run: Run) -> None:
    # High from T0; a 1 ms dip to 0 at T0+10 s; a real fall at T0+20 s.
    edges = [(T0, 1), (T0 + 10 * NS, 0), (T0 + 10 * NS + MS, 1), (T0 + 20 * NS, 0)]
    h, out = run(edges)
    assert counted(out) == [(T0, False), (T0 + 20 * NS, False)]
    assert h.glitches == 1
    assert out.glitch_t_ns.tolist() == [T0 + 10 * NS]  # the edge that set the short level
    assert (h.duplicates, h.inferred, h.confirmed) == (0, 0, 2)


@pytest.mark.parametrize(
    ("held_ns", "glitch"),
    [(DEFAULT_GLITCH_NS - 1, True), (DEFAULT_GLITCH_NS, False), (DEFAULT_GLITCH_NS + 1, False)],
)
def test_the_glitch_width_is_exclusive(run: Run, held_ns: int, glitch: bool) -> None:
    dip = T0 + 10 * NS
    edges = [(T0, 1), (dip, 0), (dip + held_ns, 1), (T0 + 20 * NS, 0)]
    h, out = run(edges)
    if glitch:
        assert out.t_ns.tolist() == [T0, T0 + 20 * NS]
        assert h.glitches == 1
    else:
        assert out.t_ns.tolist() == [T0, dip, dip + held_ns, T0 + 20 * NS]
        assert h.glitches == 0
    assert h.inferred == 0


def test_a_custom_glitch_width(run: Run) -> None:
    edges = [(T0, 1), (T0 + 10 * NS, 0), (T0 + 10 * NS + 4 * MS, 1), (T0 + 20 * NS, 0)]
    h, out = run(edges, glitch_ns=5 * MS)
    assert out.t_ns.tolist() == [T0, T0 + 20 * NS]
    assert h.glitches == 1
    h, out = run(edges)  # 4 ms is no glitch at the default 2 ms
    assert h.glitches == 0 and len(out.t_ns) == 4


def test_a_chain_of_short_levels_even(run: Run) -> None:
    # Bounce: 0 at 10 s, 1 at +0.5 ms, 0 at +1 ms, 1 at +1.5 ms, then a clean fall at 20 s.
    # Edge 2 pops edge 1; edge 3 is compared with T0's edge, kept, then popped by edge 4.
    b = T0 + 10 * NS
    edges = [
        (T0, 1),
        (b, 0),
        (b + MS // 2, 1),
        (b + MS, 0),
        (b + 3 * MS // 2, 1),
        (T0 + 20 * NS, 0),
    ]
    h, out = run(edges)
    assert counted(out) == [(T0, False), (T0 + 20 * NS, False)]
    assert h.glitches == 2
    assert out.glitch_t_ns.tolist() == [b, b + MS]
    assert h.inferred == 0


def test_a_chain_of_short_levels_odd_settles_on_its_last_level(run: Run) -> None:
    # Bounce on a real fall: 0 at 10 s, 1 at +0.5 ms, 0 at +1 ms (stays low), rise at 20 s.
    b = T0 + 10 * NS
    edges = [(T0, 1), (b, 0), (b + MS // 2, 1), (b + MS, 0), (T0 + 20 * NS, 1)]
    h, out = run(edges)
    assert counted(out) == [(T0, False), (b + MS, False), (T0 + 20 * NS, False)]
    assert h.glitches == 1
    assert (h.inferred, h.duplicates) == (0, 0)


def test_a_long_chain_of_1_ms_levels(run: Run) -> None:
    # 9 edges 1 ms apart after a settled high: pairs (1,2), (3,4), (5,6), (7,8) pop; 9 stays.
    b = T0 + 10 * NS
    chain = [(b + i * MS, i % 2) for i in range(9)]  # levels 0,1,0,...,0
    edges = [(T0, 1), *chain, (T0 + 20 * NS, 1)]
    h, out = run(edges)
    assert counted(out) == [(T0, False), (b + 8 * MS, False), (T0 + 20 * NS, False)]
    assert h.glitches == 4
    assert out.glitch_t_ns.tolist() == [b, b + 2 * MS, b + 4 * MS, b + 6 * MS]


def test_glitches_go_before_missed_edges(run: Run) -> None:
    # After the glitch (T0+10 s, T0+10.001 s) is removed, 1 follows 1: one edge was missed.
    edges = [(T0, 1), (T0 + 10 * NS, 0), (T0 + 10 * NS + MS, 1), (T0 + 20 * NS, 1)]
    h, out = run(edges)
    assert counted(out) == [(T0, False), (T0 + 10 * NS, True), (T0 + 20 * NS, False)]
    assert (h.glitches, h.inferred) == (1, 1)


def test_a_glitch_on_the_very_first_edge(run: Run) -> None:
    edges = [(T0, 1), (T0 + MS, 0), (T0 + 10 * NS, 1)]
    h, out = run(edges)
    assert counted(out) == [(T0 + 10 * NS, False)]
    assert h.glitches == 1 and h.inferred == 0


# -- 3. missed edges -----------------------------------------------------------------------------


def test_a_repeated_level_is_one_inferred_edge_at_the_midpoint(run: Run) -> None:
    edges = [(T0, 1), (T0 + 10 * NS, 1), (T0 + 20 * NS, 0)]
    h, out = run(edges)
    assert counted(out) == [
        (T0, False),
        (T0 + 5 * NS, True),
        (T0 + 10 * NS, False),
        (T0 + 20 * NS, False),
    ]
    assert out.real_t_ns.tolist() == [T0, T0 + 10 * NS, T0 + 20 * NS]
    assert (h.inferred, h.confirmed) == (1, 3)


def test_the_midpoint_rounds_down_to_a_whole_ns(run: Run) -> None:
    edges = [(T0, 0), (T0 + 7, 0)]
    _, out = run(edges, glitch_ns=1)
    assert counted(out) == [(T0, False), (T0 + 3, True), (T0 + 7, False)]


def test_each_repeat_infers_one_edge(run: Run) -> None:
    edges = [(T0, 1), (T0 + 10 * NS, 1), (T0 + 30 * NS, 1), (T0 + 40 * NS, 0), (T0 + 60 * NS, 0)]
    h, out = run(edges)
    assert [t for t, inferred in counted(out) if inferred] == [
        T0 + 5 * NS,
        T0 + 20 * NS,
        T0 + 50 * NS,
    ]
    assert h.inferred == 3 and len(out.t_ns) == 8


@pytest.mark.parametrize("level", [0, 1])
def test_the_first_edge_with_an_unknown_level_is_counted_without_inference(
    run: Run, level: int
) -> None:
    h, out = run([(T0, level)])
    assert counted(out) == [(T0, False)]
    assert (h.inferred, h.confirmed, h.level) == (0, 1, level)


def test_a_line_high_at_start_whose_first_edge_falls_is_counted_once(run: Run) -> None:
    h, out = run([(T0, 0), (T0 + 10 * NS, 1)], level=1)
    assert counted(out) == [(T0, False), (T0 + 10 * NS, False)]
    assert h.inferred == 0


def test_a_line_high_at_start_whose_first_edge_rises_infers_one_edge(run: Run) -> None:
    # Read high at start, then an edge to high: a fall was missed before it. With no earlier
    # edge time it is stamped at the first edge's time.
    h, out = run([(T0, 1), (T0 + 10 * NS, 0)], level=1)
    assert counted(out) == [(T0, True), (T0, False), (T0 + 10 * NS, False)]
    assert h.inferred == 1


def test_a_line_low_at_start_whose_first_edge_falls_infers_one_edge(run: Run) -> None:
    h, out = run([(T0, 0)], level=0)
    assert counted(out) == [(T0, True), (T0, False)]
    assert h.inferred == 1


def _inferred_at(edges: Sequence[tuple[int, int]], period_ns: int, *, stream: bool) -> list[int]:
    h = ChannelHygiene(period_ns=period_ns)
    if stream:
        parts = [h.push(t, level) for t, level in edges]
    else:
        t_ns = np.array([t for t, _ in edges], np.int64)
        parts = [h.push_block(t_ns, np.array([level for _, level in edges], np.int8))]
    out = merge([*parts, h.finish()])
    return out.t_ns[out.inferred].tolist()


@pytest.mark.parametrize("stream", [True, False], ids=["push", "push_block"])
def test_an_inferred_edge_is_stamped_no_earlier_than_the_period_revealing_it(stream: bool) -> None:
    # Live, the periods before the revealing edge's may be closed and published by the time the
    # repeat is seen: midway (T0 + 160 s) would land in one that replay still fills but live
    # no longer can, so every path stamps it at the revealing edge's period start instead.
    period = 300 * NS
    assert _inferred_at([(T0 + 10 * NS, 1), (T0 + 310 * NS, 1)], period, stream=stream) == [
        T0 + 300 * NS
    ]
    # Within one period, or with no period set, it stays midway.
    assert _inferred_at([(T0 + 10 * NS, 1), (T0 + 50 * NS, 1)], period, stream=stream) == [
        T0 + 30 * NS
    ]
    assert _inferred_at([(T0 + 10 * NS, 1), (T0 + 310 * NS, 1)], 0, stream=stream) == [
        T0 + 160 * NS
    ]


# -- streaming: when a pending edge is confirmed -----------------------------------------------


def test_push_keeps_the_newest_edge_pending_until_the_glitch_width_has_passed() -> None:
    h = ChannelHygiene()
    assert len(h.push(T0, 1).t_ns) == 0  # pending
    assert len(h.advance(T0 + 2 * MS - 1).t_ns) == 0
    out = h.advance(T0 + 2 * MS)
    assert out.t_ns.tolist() == [T0]
    assert len(h.advance(T0 + 10 * MS).t_ns) == 0  # confirmed once only
    assert len(h.finish().t_ns) == 0


def test_push_confirms_the_previous_edge_when_the_next_comes_late_enough() -> None:
    h = ChannelHygiene()
    h.push(T0, 1)
    assert h.push(T0 + 2 * MS, 0).t_ns.tolist() == [T0]
    assert h.finish().t_ns.tolist() == [T0 + 2 * MS]


def test_push_pops_the_pending_edge_and_returns_its_time() -> None:
    h = ChannelHygiene()
    h.push(T0, 1)
    h.advance(T0 + 5 * MS)
    h.push(T0 + 10 * NS, 0)
    popped = h.push(T0 + 10 * NS + MS, 1)
    assert popped.glitch_t_ns.tolist() == [T0 + 10 * NS]
    assert len(popped.t_ns) == 0
    assert len(h.finish().t_ns) == 0
    assert h.glitches == 1


def test_finish_with_nothing_pending_yields_nothing() -> None:
    h = ChannelHygiene()
    out = h.finish()
    assert len(out.t_ns) == len(out.glitch_t_ns) == out.duplicates == 0


def test_push_block_keeps_the_last_edge_pending_for_the_next_block() -> None:
    h = ChannelHygiene()
    out = h.push_block(np.array([T0, T0 + NS], np.int64), np.array([1, 0], np.int8))
    assert out.t_ns.tolist() == [T0]
    assert h.pending_t_ns == T0 + NS
    # The next block's first edge comes within the glitch width: it pops the pending edge.
    out = h.push_block(np.array([T0 + NS + MS, T0 + 2 * NS], np.int64), np.array([1, 0], np.int8))
    assert len(out.t_ns) == 0 and out.glitch_t_ns.tolist() == [T0 + NS]
    assert h.finish().t_ns.tolist() == [T0 + 2 * NS]
    assert (h.glitches, h.inferred) == (1, 0)  # 1 at T0, then 0 at T0+2 s: no edge missed


# -- the two paths agree on any input ----------------------------------------------------------

_gaps = st.one_of(
    st.integers(0, 3 * MS),
    st.sampled_from([2 * MS - 1, 2 * MS, 2 * MS + 1]),
    st.integers(0, 10 * NS),
)


@st.composite
def _channel_inputs(
    draw: st.DrawFn,
) -> tuple[list[tuple[int, int]], list[int], list[bool], int | None]:
    gaps = draw(st.lists(_gaps, max_size=60))
    levels = draw(st.lists(st.integers(0, 1), min_size=len(gaps), max_size=len(gaps)))
    t = T0
    edges = []
    for gap, level in zip(gaps, levels, strict=True):
        t += gap
        edges.append((t, level))
    edges.sort()
    cuts = draw(st.lists(st.integers(1, max(1, len(edges) - 1)), max_size=8))
    advances = draw(st.lists(st.booleans(), min_size=len(edges), max_size=len(edges)))
    start_level = draw(st.none() | st.integers(0, 1))
    return edges, cuts, advances, start_level


@settings(max_examples=300, deadline=None)
@given(_channel_inputs())
def test_push_and_push_block_agree_on_any_sorted_input(
    data: tuple[list[tuple[int, int]], list[int], list[bool], int | None],
) -> None:
    edges, cuts, advances, start_level = data
    stream = ChannelHygiene(level=start_level)
    parts = []
    for i, (t, lv) in enumerate(edges):
        if advances[i]:
            parts.append(stream.advance(t))  # time passing up to the next edge changes nothing
        parts.append(stream.push(t, lv))
    parts.append(stream.finish())
    s_out = merge(parts)
    b, b_out = hygiene_block(edges, level=start_level, cuts=cuts)
    assert counted(b_out) == counted(s_out)
    assert b_out.real_t_ns.tolist() == s_out.real_t_ns.tolist()
    assert b_out.glitch_t_ns.tolist() == s_out.glitch_t_ns.tolist()
    assert b_out.duplicates == s_out.duplicates
    assert (b.duplicates, b.glitches, b.inferred, b.confirmed, b.level, b.last_t_ns) == (
        stream.duplicates,
        stream.glitches,
        stream.inferred,
        stream.confirmed,
        stream.level,
        stream.last_t_ns,
    )
    # Bookkeeping: every input edge is a duplicate, a popped/popping glitch edge or confirmed.
    assert len(edges) == b.duplicates + 2 * b.glitches + b.confirmed
    assert len(b_out.t_ns) == b.confirmed + b.inferred
    assert np.all(np.diff(b_out.t_ns) >= 0)
