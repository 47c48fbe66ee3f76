"""Resuming is exact: a core snapshotted anywhere and restored into a fresh one carries on as if
it had never stopped.

The gateway snapshots each core with every commit and restores it on start (gateway.core.state).
The property: any edge stream (faults included), fed edge by edge (``push``, live) or in chunks
(``push_chunk``, replay), with ``advance`` as time passes, ``mark_gap`` for time nobody watched
and ``reset_peak`` in between, split at any point and restored through JSON into a fresh core,
gives exactly what the same calls give without the split: totals, hygiene, cross-check, demand,
intervals, events, sub-intervals and the final state itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from core_helpers import METER, NS, T0, Raw, chunk_blocks, event_key, interval_tuples, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_core_parity import Case, cases

from gateway.core import state
from gateway.core.edge import CHANNEL_10, Edge
from gateway.core.meter import MeterCore

# An operation between edges: ("advance", now_ns), ("gap", from_ns, to_ns) or ("reset", now_ns).
Op = tuple[Any, ...]
LIVE, CHUNK = "live", "chunk"


@dataclass
class Plan:
    case: Case
    split: tuple[int, int]  # before edge i, after j of the operations at i
    paths: tuple[str, str]  # how the edges before and after the split are fed
    ops: dict[int, list[Op]] = field(default_factory=dict)  # before edge i
    record_subintervals: bool = False


def _bounds(case: Case, i: int) -> tuple[int, int]:
    """Return the times an operation before edge ``i`` may take: after the edge before it, at
    or before edge ``i`` (live operation advances between polls, never past an edge unseen)."""
    times = [e[0] for e in case.edges]
    if i > 0:
        lo = times[i - 1]
    elif case.start_ns is not None:
        lo = case.start_ns
    else:
        lo = (times[0] if times else T0) - 1000 * NS
    if i < len(times):
        hi = times[i]
    else:
        hi = max(lo, case.end_ns) if case.end_ns is not None else lo + 1000 * NS
    return lo, hi


@st.composite
def _ops_at(draw: st.DrawFn, case: Case, i: int) -> list[Op]:
    kinds = draw(
        st.lists(st.sampled_from(["advance", "advance", "gap", "reset"]), min_size=1, max_size=3)
    )
    lo, hi = _bounds(case, i)
    times = sorted(draw(st.lists(st.integers(lo, hi), min_size=2 * len(kinds), max_size=6)))
    return [
        ("gap", times[2 * m], times[2 * m + 1]) if kind == "gap" else (kind, times[2 * m])
        for m, kind in enumerate(kinds)
    ]


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    case = draw(cases())
    n = len(case.edges)
    k = draw(st.integers(0, n))
    positions = set(draw(st.lists(st.integers(0, n), max_size=5)))
    if draw(st.booleans()):
        positions.add(k)  # time passes (or was not watched) right at the split
    ops = {i: draw(_ops_at(case, i)) for i in sorted(positions)}
    j = draw(st.integers(0, len(ops.get(k, []))))
    paths = (draw(st.sampled_from([LIVE, CHUNK])), draw(st.sampled_from([LIVE, CHUNK])))
    return Plan(case, (k, j), paths, ops, draw(st.booleans()))


def _steps(plan: Plan) -> list[tuple[Any, ...]]:
    """Return the calls to make, in order: ("push", i), ("chunk", lo, hi), ops and ("split",)."""
    edges, (k, j) = plan.case.edges, plan.split
    cuts = set(plan.case.cuts)
    steps: list[tuple[Any, ...]] = []
    chunk_from: int | None = None

    def close_chunk(i: int) -> None:
        nonlocal chunk_from
        if chunk_from is not None and chunk_from < i:
            steps.append(("chunk", chunk_from, i))
        chunk_from = None

    for i in range(len(edges) + 1):
        here = plan.ops.get(i, [])
        if here or i == k or i in cuts or i == len(edges):
            close_chunk(i)
        for m, op in enumerate(here):
            if (i, m) == (k, j):
                steps.append(("split",))
            steps.append(op)
        if (i, len(here)) == (k, j):
            steps.append(("split",))
        if i == len(edges):
            break
        if plan.paths[0 if i < k else 1] == LIVE:
            steps.append(("push", i))
        elif chunk_from is None:
            chunk_from = i
    return steps


def _apply(core: MeterCore, case: Case, step: tuple[Any, ...]) -> list[tuple[object, ...]]:
    """Make one call; return the intervals it closed."""
    if step[0] == "push":
        t, channel, level = case.edges[step[1]]
        core.push(Edge(t, METER, channel, level))
    elif step[0] == "chunk":
        core.push_chunk(chunk_blocks(case.edges[step[1] : step[2]]))
    elif step[0] == "advance":
        return interval_tuples(core.advance(step[1]))
    elif step[0] == "gap":
        core.mark_gap(step[1], step[2], "not watched")
    elif step[0] == "reset":
        core.reset_peak(step[1], "key")
    return []


def _fresh(plan: Plan, **kwargs: Any) -> MeterCore:
    return MeterCore(
        METER, plan.case.settings, record_subintervals=plan.record_subintervals, **kwargs
    )


def _play(plan: Plan, *, restore: bool) -> dict[str, Any]:
    case = plan.case
    core = _fresh(plan, start_ns=case.start_ns, initial_levels=case.initial_levels)
    intervals: list[tuple[object, ...]] = []
    events = []
    subintervals = []
    for step in _steps(plan):
        if step[0] != "split":
            intervals += _apply(core, case, step)
            continue
        # The split: what a commit stores, then a restart.
        events += core.take_events()
        subintervals += core.take_subintervals()
        if restore:
            saved = json.loads(json.dumps(state.snapshot(core)))
            core = _fresh(plan)
            state.restore(core, saved)
            assert state.snapshot(core) == saved
    intervals += interval_tuples(core.finish(case.end_ns))
    events += core.take_events()
    subintervals += core.take_subintervals()
    return {
        "result": snapshot(core, intervals),
        "events": [event_key(e) for e in events],  # in order: the store's sequence
        "subintervals": subintervals,
        "state": json.loads(json.dumps(state.snapshot(core))),
    }


def _check(plan: Plan) -> None:
    whole = _play(plan, restore=False)
    resumed = _play(plan, restore=True)
    for key in whole:
        assert resumed[key] == whole[key], key


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans())
def test_a_core_restored_anywhere_carries_on_exactly(plan: Plan) -> None:
    _check(plan)


# -- by hand ------------------------------------------------------------------------------------


def _ten_edges() -> list[Raw]:
    return [(T0 + k * NS, CHANNEL_10, k % 2) for k in range(1, 11)]


def _resume(edges: list[Raw], split: int, *, drop_pending: bool) -> MeterCore:
    core = MeterCore(METER, start_ns=T0)
    for t, channel, level in edges[:split]:
        core.push(Edge(t, METER, channel, level))
    saved = json.loads(json.dumps(state.snapshot(core)))
    if drop_pending:
        saved["hygiene"][CHANNEL_10]["pending_t_ns"] = None
    resumed = MeterCore(METER)
    state.restore(resumed, saved)
    for t, channel, level in edges[split:]:
        resumed.push(Edge(t, METER, channel, level))
    resumed.finish()
    return resumed


def test_the_pending_edge_survives_a_restart() -> None:
    # Ten `10` edges a second apart, saved right after the last: it is still pending (a glitch
    # could yet pop it), so only 9 are confirmed. The restored core must still count it.
    edges = _ten_edges()
    assert _resume(edges, 10, drop_pending=False).energy_wh == 50
    assert _resume(edges, 10, drop_pending=True).energy_wh == 45  # what losing it costs
    # Mid-stream, the next edge repeats the confirmed level: losing the pending edge would turn
    # a clean count into an inferred edge (and an interval marked "gap").
    clean = _resume(edges, 4, drop_pending=False)
    assert (clean.energy_wh, clean.inferred_edges) == (50, 0)
    lossy = _resume(edges, 4, drop_pending=True)
    assert (lossy.energy_wh, lossy.inferred_edges) == (50, 1)


def test_the_plans_reach_what_a_restore_could_lose() -> None:
    """A sanity check on the strategy: at the split there are pending edges (hygiene and
    cross-check), open gaps and sub-intervals, reached by both paths."""
    seen = {"pending": 0, "pending1k": 0, "gaps": 0, LIVE: 0, CHUNK: 0, "record": 0}

    @settings(max_examples=100, deadline=None, database=None, derandomize=True)
    @given(plans())
    def collect(plan: Plan) -> None:
        core = _fresh(plan, start_ns=plan.case.start_ns, initial_levels=plan.case.initial_levels)
        for step in _steps(plan):
            if step[0] == "split":
                break
            _apply(core, plan.case, step)
        saved = state.snapshot(core)
        seen["pending"] += any(h["pending_t_ns"] is not None for h in saved["hygiene"].values())
        seen["pending1k"] += bool(saved["crosscheck"]["pending1k"])
        seen["gaps"] += bool(saved["intervals"] and saved["intervals"]["gaps"])
        seen[plan.paths[0]] += 1
        seen["record"] += plan.record_subintervals

    collect()
    # Since the cross-check judges a `1K` edge once time passes its tolerance (issue #11), a
    # `1K` edge waits in it for at most 22 ms: the plans seldom split inside that, and the
    # property covers it when they do; every other state must be reached.
    assert all(v for k, v in seen.items() if k != "pending1k"), seen
