"""The `10` / `1K` cross-check and the noise check, fed by MeterCore from the meter model's edges.

The reference stream: 6 kW from T0 with the register at 0 Wh, so `10` edge n comes at exactly
3n s (5 Wh / 6 kW) and `1K` edge j at exactly 300j s with `10` edge 100j. Until T0+2500 s that is
833 `10` edges and 8 `1K` edges. Every case runs through both paths of the core.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction
from typing import Any

import pytest
from core_helpers import (
    MS,
    NS,
    T0,
    Raw,
    merged,
    model_edges,
    run_core,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.edge import CHANNEL_1K, CHANNEL_10
from gateway.core.events import EventKind
from gateway.core.meter import CoreSettings, MeterCore

KW6 = 6_000_000  # mW
END = T0 + 2500 * NS
N10, N1K = 833, 8

Run = Callable[..., tuple[MeterCore, list[tuple[object, ...]]]]


@pytest.fixture(params=["push", "push_chunk"])
def run(request: pytest.FixtureRequest) -> Run:
    chunked = request.param == "push_chunk"

    def _run(edges: Sequence[Raw], **kwargs: Any) -> tuple[MeterCore, list[tuple[object, ...]]]:
        return run_core(edges, chunked=chunked, cuts=range(37, len(edges), 37), **kwargs)

    return _run


def reference() -> tuple[list[Raw], list[Raw]]:
    return model_edges(KW6, T0, END)


def without(stream: Sequence[Raw], ordinals: Iterable[int]) -> list[Raw]:
    """Drop edges by ordinal (1-based: `10` edge n is stream[n - 1])."""
    gone = set(ordinals)
    return [e for i, e in enumerate(stream, start=1) if i not in gone]


HYGIENE_KINDS = {EventKind.GLITCH, EventKind.INFERRED, EventKind.NOISE}


def checks(core: MeterCore) -> list[Any]:
    """The cross-check's events (hygiene is reported per interval, separately)."""
    return [e for e in core.events if e.kind not in HYGIENE_KINDS]


def at(seconds: float) -> int:
    return T0 + round(seconds * NS)


def events(core: MeterCore) -> list[tuple[int, str, str | None, int]]:
    return sorted((e.t_ns, str(e.kind), e.channel, e.missed_wh) for e in checks(core))


def test_the_reference_stream_is_what_the_docstring_says() -> None:
    e10, e1k = reference()
    assert [t for t, _, _ in e10] == [T0 + 3 * n * NS for n in range(1, N10 + 1)]
    assert [lv for _, _, lv in e10[:4]] == [1, 0, 1, 0]
    assert [(t, lv) for t, _, lv in e1k] == [(T0 + 300 * j * NS, j % 2) for j in range(1, 9)]


# -- perfect counting --------------------------------------------------------------------------


def test_a_perfect_stream_is_ok(run: Run) -> None:
    core, _ = run(merged(*reference()))
    assert checks(core) == []
    assert core.crosscheck.summary() == {
        "status": "ok",
        "difference_wh": N10 * 5 - N1K * 500,  # 165
        "mismatches": 0,
        "missed_wh": {CHANNEL_10: 0, CHANNEL_1K: 0},
        "events": {},
    }


WH_NJ = 3_600 * 10**9


@settings(max_examples=60, deadline=None)
@given(
    start_nj=st.integers(0, 2_000 * WH_NJ),
    powers=st.lists(st.integers(1_000_000, 6_000_000), min_size=1, max_size=4),
    step_s=st.integers(60, 1500),
    chunked=st.booleans(),
)
def test_perfect_streams_from_any_register_phase_are_ok(
    start_nj: int, powers: list[int], step_s: int, chunked: bool
) -> None:
    steps = [(T0 + i * step_s * NS, p) for i, p in enumerate(powers)]
    end = T0 + 2 * 3600 * NS
    e10, e1k = model_edges(steps, T0, end, Fraction(start_nj, WH_NJ))
    core, _ = run_core(merged(e10, e1k), chunked=chunked, cuts=range(50, 5000, 97))
    # Exactly the model's edges were counted ...
    end_nj = start_nj + sum(
        p * ((steps[i + 1][0] if i + 1 < len(steps) else end) - t) // 1000
        for i, (t, p) in enumerate(steps)
    )
    q10, q1k = 5 * WH_NJ, 500 * WH_NJ
    assert core.totals[CHANNEL_10].edges == end_nj // q10 - start_nj // q10 == len(e10)
    assert core.totals[CHANNEL_1K].edges == end_nj // q1k - start_nj // q1k == len(e1k)
    assert len(e1k) >= 3  # enough energy for the check to mean something
    # ... and the two channels agree.
    assert checks(core) == []
    summary = core.crosscheck.summary()
    assert summary["status"] == "ok"
    difference = summary["difference_wh"]
    assert isinstance(difference, int) and -495 <= difference <= 495
    assert (core.glitches, core.inferred_edges, core.duplicates) == (0, 0, 0)


@pytest.mark.parametrize(
    "start_wh", [0, Fraction(1, 1000), 5, 250, 497, Fraction(9995, 10), 500, 995]
)
def test_perfect_streams_from_hand_picked_phases_are_ok(run: Run, start_wh: Fraction) -> None:
    e10, e1k = model_edges(KW6, T0, END, start_wh)
    core, _ = run(merged(e10, e1k))
    assert checks(core) == []
    assert core.crosscheck.summary()["status"] == "ok"


# -- the `1K` channel misses edges --------------------------------------------------------------


def test_the_first_1k_edge_missing_is_a_mismatch_of_500_wh_on_1k(run: Run) -> None:
    e10, e1k = reference()
    core, _ = run(merged(e10, e1k[1:]))
    # At 600 s: 200 `10` edges (1000 Wh) against one `1K` edge (500 Wh).
    assert events(core) == [(at(600), "mismatch", CHANNEL_1K, 500)]
    assert checks(core)[0].detail == "`10` counted 500 Wh more than `1K`"
    summary = core.crosscheck.summary()
    assert summary["status"] == "mismatch"
    assert summary["mismatches"] == 1
    assert summary["missed_wh"] == {CHANNEL_10: 0, CHANNEL_1K: 500}
    assert summary["difference_wh"] == N10 * 5 - (N1K - 1) * 500


def test_one_1k_edge_missing_mid_stream_is_inferred_and_not_reported_twice(run: Run) -> None:
    # The power drops so the inferred edge (midway between 600 s and 1700 s: 1150 s) is nowhere
    # near a `10` edge and the stretch holds 200 `10` edges: the real `1K` edge at 1700 s is
    # judged for itself and the inferred one.
    e10, e1k = model_edges([(T0, KW6), (at(700), 3_000_000)], T0, END)
    assert [t for t, _, _ in e1k] == [at(300), at(600), at(1100), at(1700), at(2300)]
    core, intervals = run(merged(e10, without(e1k, [3])))
    assert core.inferred_edges == 1
    assert core.totals[CHANNEL_1K].edges == 5
    assert checks(core) == []
    inferred = [e for e in core.events if e.kind is EventKind.INFERRED]
    assert [(e.t_ns, e.detail) for e in inferred] == [
        (at(900), "1 missed edge(s) counted back in this interval")
    ]
    # The inferred edge is flagged in its interval (the register's intervals: [900, 1800) s).
    assert [iv[6] for iv in intervals] == [(), ("inferred",), ()]


def test_two_1k_edges_missing_are_a_silent_1k_and_a_mismatch_of_1000_wh(run: Run) -> None:
    e10, e1k = reference()
    core, _ = run(merged(e10, without(e1k, [3, 4])))  # levels still alternate: no inference
    assert core.inferred_edges == 0
    assert events(core) == [
        (at(1500), "mismatch", CHANNEL_1K, 1000),
        (at(1500), "silent", CHANNEL_1K, 0),
    ]
    silent = next(e for e in checks(core) if e.kind is EventKind.SILENT)
    assert silent.detail == "300 `10` edges between two `1K` edges"
    assert core.crosscheck.summary()["missed_wh"] == {CHANNEL_10: 0, CHANNEL_1K: 1000}


def test_1k_silent_to_the_end_is_reported_when_the_input_ends(run: Run) -> None:
    e10, e1k = reference()
    core, _ = run(merged(e10, e1k[:4]))
    # 433 `10` edges after the last `1K` edge (at 1200 s); 2165 Wh more on `10`.
    assert events(core) == [
        (at(2499), "mismatch", CHANNEL_1K, 2000),
        (at(2499), "silent", CHANNEL_1K, 0),
    ]
    silent = next(e for e in checks(core) if e.kind is EventKind.SILENT)
    assert silent.detail == "433 `10` edges after the last `1K` edge"


# -- the `10` channel misses edges --------------------------------------------------------------


@pytest.mark.parametrize(
    ("dropped", "inferred", "between"),
    [
        ([150], 1, None),  # a single missed edge is inferred back: the count is right
        ([150, 151], 0, 98),
        ([150, 151, 152], 1, 98),  # three missed, one inferred back
        ([150, 151, 152, 153], 0, 96),
    ],
)
def test_a_few_10_edges_missing_are_a_count_event(
    run: Run, dropped: list[int], inferred: int, between: int | None
) -> None:
    e10, e1k = reference()
    core, _ = run(merged(without(e10, dropped), e1k))
    assert core.inferred_edges == inferred
    assert core.totals[CHANNEL_10].edges == N10 - len(dropped) + inferred
    if between is None:
        assert checks(core) == []
        return
    assert events(core) == [(at(600), "count", None, 0)]
    assert checks(core)[0].detail == f"{between} `10` edges between two `1K` edges (expected 100)"
    summary = core.crosscheck.summary()
    assert (summary["status"], summary["mismatches"]) == ("warning", 0)


def test_120_10_edges_missing_are_a_mismatch_on_10(run: Run) -> None:
    e10, e1k = reference()
    core, _ = run(merged(without(e10, range(110, 230)), e1k))
    # 600 s: `1K` edge 2 has no `10` edge beside it; 9 `10` edges since 300 s; -455 Wh.
    # 900 s: 71 `10` edges since 600 s; `10` is 600 Wh behind: 105 Wh over the 495 Wh slack.
    assert events(core) == [
        (at(600), "coincidence", None, 0),
        (at(600), "count", None, 0),
        (at(900), "count", None, 0),
        (at(900), "mismatch", CHANNEL_10, 105),
    ]
    details = sorted(e.detail for e in checks(core) if e.kind is EventKind.COUNT)
    assert details == [
        "71 `10` edges between two `1K` edges (expected 100)",
        "9 `10` edges between two `1K` edges (expected 100)",
    ]
    assert core.crosscheck.summary() == {
        "status": "mismatch",
        "difference_wh": (N10 - 120) * 5 - N1K * 500,
        "mismatches": 1,
        "missed_wh": {CHANNEL_10: 105, CHANNEL_1K: 0},
        "events": {"coincidence": 1, "count": 2, "mismatch": 1},
    }


def test_10_silent_while_1k_moves_is_silent_on_10(run: Run) -> None:
    e10, e1k = reference()
    core, _ = run(merged(e10[:300], e1k))  # `10` stops at 900 s
    silent = [e for e in checks(core) if e.kind is EventKind.SILENT]
    assert [(e.t_ns, e.channel, e.missed_wh) for e in silent] == [
        (at(s), CHANNEL_10, 500) for s in (1200, 1500, 1800, 2100, 2400)
    ]
    assert all(e.detail == "no `10` edge between two `1K` edges" for e in silent)
    coincidence = [e.t_ns for e in checks(core) if e.kind is EventKind.COINCIDENCE]
    assert coincidence == [at(s) for s in (1200, 1500, 1800, 2100, 2400)]
    # Mismatch: -500 Wh at 1200 s (5 over the slack), then 500 Wh more at each `1K` edge.
    mismatch = [
        (e.t_ns, e.channel, e.missed_wh) for e in checks(core) if e.kind is EventKind.MISMATCH
    ]
    assert mismatch == [(at(1200), CHANNEL_10, 5)] + [
        (at(s), CHANNEL_10, 500) for s in (1500, 1800, 2100, 2400)
    ]
    assert core.crosscheck.summary()["missed_wh"] == {CHANNEL_10: 2005, CHANNEL_1K: 0}


def test_one_channel_alone_is_not_checked(run: Run) -> None:
    e10, e1k = reference()
    for stream in (e10, e1k):
        core, _ = run(stream)
        assert checks(core) == []
        assert core.crosscheck.summary()["status"] == "not checked"


# -- coincidence ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shift_ns", "reported"),
    [
        (100 * MS, True),
        (20 * MS + 1, True),
        (20 * MS, False),  # the tolerance is inclusive
        (5 * MS, False),
        (-20 * MS, False),
    ],
)
def test_a_1k_edge_with_no_10_edge_beside_it_is_a_coincidence_event(
    run: Run, shift_ns: int, reported: bool
) -> None:
    e10, e1k = reference()
    t, ch, lv = e1k[2]  # 900 s
    e1k[2] = (t + shift_ns, ch, lv)
    core, _ = run(merged(e10, e1k))
    if reported:
        assert events(core) == [(t + shift_ns, "coincidence", None, 0)]
        assert checks(core)[0].detail == "`1K` edge with no `10` edge beside it"
        assert core.crosscheck.summary()["status"] == "warning"
    else:
        assert checks(core) == []


def test_events_are_flagged_in_their_interval(run: Run) -> None:
    e10, e1k = reference()
    t, ch, lv = e1k[2]  # 900 s: the second interval
    e1k[2] = (t + 100 * MS, ch, lv)
    _, intervals = run(merged(e10, e1k), start_ns=T0, end_ns=at(2700))
    assert [(iv[5], iv[6]) for iv in intervals] == [
        ("complete", ()),
        ("gap", ("crosscheck",)),
        ("complete", ()),
    ]


# -- noise: edges faster than the meter can make them ------------------------------------------


def test_min_edge_gap_at_max_power() -> None:
    s = CoreSettings(max_power_w=10_000.0)
    assert s.min_edge_gap_ns(CHANNEL_10) == 1_800 * MS  # 5 Wh at 10 kW
    assert s.min_edge_gap_ns(CHANNEL_1K) == 180 * NS  # 500 Wh at 10 kW
    assert CoreSettings().min_edge_gap_ns(CHANNEL_10) == 0


@pytest.mark.parametrize(("gap_ns", "noise"), [(NS, 1), (1_800 * MS - 1, 1), (1_800 * MS, 0)])
def test_edges_closer_than_5_wh_at_max_power_are_noise(run: Run, gap_ns: int, noise: int) -> None:
    times = [at(10 * i) for i in range(1, 11)]
    times[4] = times[3] + gap_ns  # edge 5 right after edge 4
    edges = [(t, CHANNEL_10, i % 2) for i, t in enumerate(times, start=1)]
    core, intervals = run(
        edges, settings=CoreSettings(max_power_w=10_000.0), start_ns=T0, end_ns=at(900)
    )
    assert core.totals[CHANNEL_10].noise == noise
    assert core.totals[CHANNEL_10].edges == 10  # noise is flagged, not dropped
    assert intervals[0][5:] == (("gap", ("noise",)) if noise else ("complete", ()))
    core, _ = run(edges, end_ns=at(900))  # unchecked without a maximum power
    assert core.totals[CHANNEL_10].noise == 0


@pytest.mark.parametrize(
    ("max_w", "noise10", "noise1k"), [(7_000.0, 0, 0), (5_000.0, N10 - 1, N1K - 1)]
)
def test_a_meter_running_above_max_power_is_all_noise(
    run: Run, max_w: float, noise10: int, noise1k: int
) -> None:
    core, _ = run(merged(*reference()), settings=CoreSettings(max_power_w=max_w))
    assert core.totals[CHANNEL_10].noise == noise10  # 3 s apart; 3.6 s at 5 kW
    assert core.totals[CHANNEL_1K].noise == noise1k  # 300 s apart; 360 s at 5 kW


def test_noise_is_judged_on_real_edges_only(run: Run) -> None:
    # A glitch (dropped) between two edges 10 s apart is no noise, even at 1 ms.
    edges = [
        (at(10), CHANNEL_10, 1),
        (at(15), CHANNEL_10, 0),
        (at(15) + MS, CHANNEL_10, 1),
        (at(20), CHANNEL_10, 0),
    ]
    core, _ = run(edges, settings=CoreSettings(max_power_w=10_000.0))
    assert core.glitches == 1
    assert core.totals[CHANNEL_10].noise == 0
    assert core.totals[CHANNEL_10].edges == 2


@pytest.mark.parametrize(
    ("pulses", "expected", "detail"),
    [
        (
            49,
            # 490 Wh too many on `10`: within the slack until the 33 edges after the last `1K`
            # edge bring it to 655 Wh when the input ends.
            [(at(900), "count", None, 0), (at(2499), "mismatch", CHANNEL_1K, 500)],
            "198 `10` edges between two `1K` edges (expected 100)",
        ),
        (
            50,
            [(at(900), "mismatch", CHANNEL_1K, 500), (at(900), "silent", CHANNEL_1K, 0)],
            "200 `10` edges between two `1K` edges",
        ),
    ],
)
def test_twice_the_ratio_of_10_edges_between_1k_edges_is_silent_1k(
    run: Run, pulses: int, expected: list[tuple[object, ...]], detail: str
) -> None:
    # Extra pulses on `10` (two edges each, so levels still alternate) after edges 201, 202...
    e10, e1k = reference()
    extra = []
    for n in range(201, 201 + pulses):
        t, ch, lv = e10[n - 1]
        extra += [(t + NS, ch, 1 - lv), (t + 2 * NS, ch, lv)]
    core, _ = run(merged(e10 + extra, e1k))
    assert events(core) == expected
    structural = [e for e in checks(core) if e.kind is not EventKind.MISMATCH]
    assert [e.detail for e in structural] == [detail]
