"""The fast paths of replay give exactly what the general ones give.

- The packed-key sorts (:func:`gateway.batch.extsort.sort_columns`, :func:`order_rows`) against
  ``np.lexsort`` on the same rows, times far apart (the lexsort fallback) included.
- Hygiene's clean-block path against edge-by-edge ``push`` on mostly clean input: alternating
  levels well apart, with now and then a duplicate, a glitch or a missed edge, cut into blocks.
"""

from __future__ import annotations

import numpy as np
from core_helpers import MS, NS, T0, counted, hygiene_block
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.batch.extsort import sort_columns
from gateway.core.hygiene import ChannelHygiene, merge
from gateway.pulselog.scan import order_rows

FAR = 2**62  # a time this far from the others cannot be packed with them

row = st.tuples(
    st.sampled_from([0, 1, 5, 10**18, FAR, -(10**12)]).flatmap(
        lambda base: st.integers(base, base + 40)
    ),
    st.integers(0, 3),
    st.integers(0, 1),
    st.integers(0, 1),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(row, max_size=80))
def test_the_packed_sort_orders_rows_as_lexsort_does(rows: list[tuple[int, int, int, int]]) -> None:
    t = np.array([r[0] for r in rows], np.int64)
    meter = np.array([r[1] for r in rows], np.int32)
    channel = np.array([r[2] for r in rows], np.int8)
    level = np.array([r[3] for r in rows], np.int8)
    order = np.lexsort((level, channel, t, meter))
    got = sort_columns((t, meter, channel, level))
    for column, want in zip(got, (t, meter, channel, level), strict=True):
        assert column.tolist() == want[order].tolist()
        assert column.dtype == want.dtype


@settings(max_examples=300, deadline=None)
@given(st.lists(row, max_size=80))
def test_order_rows_sorts_by_time_then_level(rows: list[tuple[int, int, int, int]]) -> None:
    t = np.array([r[0] for r in rows], np.int64)
    level = np.array([r[3] for r in rows], np.int8)
    got_t, got_lv = order_rows(t, level)
    assert list(zip(got_t.tolist(), got_lv.tolist(), strict=True)) == sorted(
        zip(t.tolist(), level.tolist(), strict=True)
    )
    assert got_lv.dtype == np.int8


@st.composite
def mostly_clean(draw: st.DrawFn) -> tuple[list[tuple[int, int]], list[int], int | None]:
    """Alternating edges seconds apart, with a few faults, and where to cut them into blocks."""
    n = draw(st.integers(1, 60))
    faults = draw(st.dictionaries(st.integers(0, n - 1), st.sampled_from("dgmz"), max_size=3))
    t, level, edges = T0, 0, []
    for i in range(n):
        t += draw(st.sampled_from([2 * MS, 2 * MS + 1, NS, 7 * NS]))
        level = 1 - level
        fault = faults.get(i)
        if fault == "m":  # a missed edge: the level repeats
            level = 1 - level
        edges.append((t, level))
        if fault == "d":
            edges.append((t, level))
        elif fault == "g":  # a short level, then back
            edges += [(t + MS, 1 - level), (t + MS + 1, level)]
            t += MS + 1
        elif fault == "z":  # the same time, the other level
            edges.append((t, 1 - level))
            level = 1 - level
    edges.sort()
    cuts = draw(st.lists(st.integers(1, max(1, len(edges) - 1)), max_size=6))
    return edges, cuts, draw(st.none() | st.integers(0, 1))


@settings(max_examples=400, deadline=None)
@given(mostly_clean())
def test_clean_blocks_give_what_edge_by_edge_gives(
    data: tuple[list[tuple[int, int]], list[int], int | None],
) -> None:
    edges, cuts, start_level = data
    stream = ChannelHygiene(level=start_level)
    parts = [stream.push(t, lv) for t, lv in edges]
    parts.append(stream.finish())
    s_out = merge(parts)
    b, b_out = hygiene_block(edges, level=start_level, cuts=cuts)
    assert counted(b_out) == counted(s_out)
    assert b_out.real_t_ns.tolist() == s_out.real_t_ns.tolist()
    assert b_out.glitch_t_ns.tolist() == s_out.glitch_t_ns.tolist()
    assert _state(b) == _state(stream)


def _state(h: ChannelHygiene) -> dict[str, object]:
    """The hygiene state that matters: a pending level only while an edge is pending."""
    state = h.to_state()
    if state["pending_t_ns"] is None:
        del state["pending_level"]
    return state
