"""MeterCore by hand (SPEC section 2): register, sub-intervals and demand, power, intervals.

Cases that only need the end result run through both paths (``push`` and ``push_chunk``); the
live-only behaviour (``advance`` closing periods as time passes) is tested on ``push``.

The 2 kW stream: the register holds 2.5 Wh at T0, so `10` edge k comes at exactly 9k - 4.5 s
(5 Wh at 2 kW is 9 s) and `1K` edge j with `10` edge 100j. Every 15-minute window aligned to
5 minutes then holds exactly 100 `10` edges (500 Wh: 2.00 kW); 5-minute sub-intervals hold 33,
34, 33, 33, 34, 33, ... edges.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from core_helpers import (
    METER,
    MS,
    NS,
    S_NS,
    T0,
    Raw,
    alternating,
    interval_tuples,
    merged,
    model_edges,
    push_all,
    run_core,
)

from gateway.core.edge import CHANNEL_1K, CHANNEL_10, Edge
from gateway.core.events import EventKind
from gateway.core.intervals import Quality
from gateway.core.meter import CoreSettings, MeterCore
from meter_model.demand import Peak
from meter_model.units import round_kw

KW2 = 2_000_000  # mW
HOUR = T0 + 3600 * NS

Run = Callable[..., tuple[MeterCore, list[tuple[object, ...]]]]


@pytest.fixture(params=["push", "push_chunk"])
def run(request: pytest.FixtureRequest) -> Run:
    chunked = request.param == "push_chunk"

    def _run(edges: Sequence[Raw], **kwargs: Any) -> tuple[MeterCore, list[tuple[object, ...]]]:
        return run_core(edges, chunked=chunked, cuts=range(29, len(edges), 29), **kwargs)

    return _run


def at(seconds: float) -> int:
    return T0 + round(seconds * NS)


def us(t_ns: int) -> int:
    return t_ns // 1000


def kw2(start_ns: int = T0, end_ns: int = HOUR) -> tuple[list[Raw], list[Raw]]:
    """The 2 kW stream (register at 2.5 Wh at T0) between two times."""
    e10, e1k = model_edges(KW2, T0, end_ns, Fraction(5, 2))
    return [e for e in e10 if e[0] >= start_ns], [e for e in e1k if e[0] >= start_ns]


def spread(counts: Sequence[int], channel: str = CHANNEL_10) -> list[Raw]:
    """``counts[k]`` edges evenly inside sub-interval k from T0, levels alternating from 1."""
    times = [
        T0 + k * S_NS + (i + 1) * (S_NS // (n + 1)) for k, n in enumerate(counts) for i in range(n)
    ]
    return alternating(times, channel)


def test_the_2_kw_stream_is_what_the_docstring_says() -> None:
    e10, e1k = kw2()
    assert [t for t, _, _ in e10[:3]] == [at(4.5), at(13.5), at(22.5)]
    assert len(e10) == 400 and e10[-1][0] == at(3595.5)
    assert [t for t, _, _ in e1k] == [at(895.5), at(1795.5), at(2695.5), at(3595.5)]


# -- sub-interval boundaries and demand ---------------------------------------------------------


BOUNDARY = [
    (at(100), CHANNEL_10, 1),
    (at(200), CHANNEL_10, 0),
    (at(299), CHANNEL_10, 1),
    (at(300), CHANNEL_10, 0),  # exactly on the boundary: the second sub-interval
]


def test_an_edge_on_a_sub_interval_boundary_belongs_to_the_later_one_live() -> None:
    core = MeterCore(METER, start_ns=T0)
    push_all(core, BOUNDARY)
    demand = core.demand
    assert demand is not None
    # Until the glitch width has passed the boundary, the edge there may still be a glitch.
    core.advance(at(300))
    assert demand.last is None
    assert demand.instantaneous_kw() == 0
    core.advance(at(300) + 2 * MS)
    assert demand.last is not None
    assert (demand.last.start_us, demand.last.energy) == (us(T0), 15)  # 3 edges, 5 Wh each
    assert demand.instantaneous_kw() == Fraction(15 * 3600, 300 * 1000)  # 0.18 kW
    assert round_kw(demand.instantaneous_kw()) == Decimal("0.18")
    core.advance(at(600) + 2 * MS)
    assert (demand.last.start_us, demand.last.energy) == (us(at(300)), 5)
    assert round_kw(demand.instantaneous_kw()) == Decimal("0.06")


def test_an_edge_on_a_sub_interval_boundary_belongs_to_the_later_one(run: Run) -> None:
    core, _ = run(BOUNDARY, start_ns=T0, end_ns=at(600))
    assert core.demand is not None and core.demand.last is not None
    assert (core.demand.last.start_us, core.demand.last.energy) == (us(at(300)), 5)
    assert core.demand.instantaneous_kw() == Fraction(6, 100)


def test_an_edge_on_an_interval_boundary_belongs_to_the_later_one(run: Run) -> None:
    edges = [(at(450), CHANNEL_10, 1), (at(900), CHANNEL_10, 0), (at(1000), CHANNEL_10, 1)]
    _, intervals = run(edges, start_ns=T0, end_ns=at(1800))
    assert [(iv[1], iv[2], iv[3], iv[4]) for iv in intervals] == [
        (T0, at(900), 5, 1),
        (at(900), at(1800), 10, 2),
    ]


def test_2_kw_steady_is_2_00_kw_of_demand(run: Run) -> None:
    e10, e1k = kw2()
    core, _ = run(merged(e10, e1k), start_ns=T0, end_ns=HOUR)
    demand = core.demand
    assert demand is not None and demand.peak is not None
    # Every whole window holds 100 edges: 500 Wh in 15 min. The first one stays the peak (a
    # later window must be strictly larger).
    assert demand.peak == Peak(Fraction(2), us(at(900)), False)
    assert round_kw(demand.peak.demand_kw) == Decimal("2.00")
    assert demand.window_demand_kw() == 2
    # The last sub-interval, [3300 s, 3600 s), holds edges 368..400: 33 edges, 165 Wh.
    assert demand.instantaneous_kw() == Fraction(198, 100)
    assert round_kw(demand.instantaneous_kw()) == Decimal("1.98")
    assert core.energy_wh == 2000


def test_peak_demand_with_its_window_end_and_reset_peak() -> None:
    # Sub-intervals from T0: 10, 40, 0, 20, 0 edges. Windows (3 sub-intervals) ending with each:
    # 10 (partial), 50 (partial), 50, 60, 20 edges: the peak is 60 edges = 300 Wh in 15 minutes,
    # 1.2 kW, in the window ending at T0 + 1200 s.
    core = MeterCore(METER, start_ns=T0)
    push_all(core, spread([10, 40, 0, 20, 0]))
    core.advance(at(1500) + 2 * MS)
    demand = core.demand
    assert demand is not None
    assert demand.peak == Peak(Fraction(6, 5), us(at(1200)), False)
    assert demand.instantaneous_kw() == 0
    reading = core.reading(at(1500) + 2 * MS)
    assert (reading.energy_wh, reading.peak) == (70 * 5, demand.peak)

    cleared = core.reset_peak(at(1501), "key")
    assert cleared == Peak(Fraction(6, 5), us(at(1200)), False)
    assert demand.peak is None
    assert core.events[-1].kind is EventKind.PEAK_RESET
    assert (core.events[-1].t_ns, core.events[-1].detail) == (at(1501), "key")

    # 6 edges in [1500 s, 1800 s): the window (20, 0, 6) = 26 edges = 130 Wh, 0.52 kW, becomes
    # the peak; without the reset, 1.2 kW would have stayed.
    push_all(core, alternating([at(1500 + 40 * i) for i in range(1, 7)], CHANNEL_10, 1))
    core.advance(at(1800) + 2 * MS)
    assert demand.peak == Peak(Fraction(13, 25), us(at(1800)), False)
    assert demand.instantaneous_kw() == Fraction(6 * 5 * 3600, 300 * 1000)


def test_peak_demand_in_replay(run: Run) -> None:
    core, _ = run(spread([10, 40, 0, 20, 0]), start_ns=T0, end_ns=at(1500))
    assert core.demand is not None
    assert core.demand.peak == Peak(Fraction(6, 5), us(at(1200)), False)


def test_a_peak_window_starting_before_counting_is_partial(run: Run) -> None:
    # Counting starts mid sub-interval: the only window with energy is partial.
    edges = alternating([at(150 + i) for i in range(1, 11)], CHANNEL_10)
    core, _ = run(edges, start_ns=at(150), end_ns=at(300))
    assert core.demand is not None
    assert core.demand.peak == Peak(Fraction(50 * 3600, 900 * 1000), us(at(300)), True)


def test_the_sub_interval_where_an_outage_starts_is_partial() -> None:
    # Sub-intervals from T0 hold 2, 1 and 4 edges (10, 5 and 20 Wh); the gateway goes down at
    # 850 s, inside the third, and comes back at 1000 s, inside the fourth. The third was only
    # watched until 850 s: partial, and so is the window [0 s, 900 s) that ends with it, though
    # its other two sub-intervals were whole. That window, 35 Wh in 15 minutes (0.14 kW), is
    # the peak, and a partial one.
    core = MeterCore(METER, start_ns=T0, record_subintervals=True)
    push_all(core, spread([2, 1, 4]))  # the last edge at 840 s
    core.advance(at(850))
    demand = core.demand
    assert demand is not None and demand.closed_log is not None
    core.mark_gap(at(850), at(1000), "gateway down")
    assert [(s.start_us, s.energy, s.complete) for s in demand.closed_log] == [
        (us(T0), 10, True),
        (us(at(300)), 5, True),
        (us(at(600)), 20, False),
    ]
    assert demand.window_demand_kw() == Fraction(35 * 3600, 900 * 1000)
    assert demand.window_partial()
    assert demand.peak == Peak(Fraction(7, 50), us(at(900)), True)
    # The sub-interval where it ends is partial too; the next one is whole again.
    core.advance(at(1500) + 2 * MS)
    assert [(s.start_us, s.energy, s.complete) for s in demand.closed_log[3:]] == [
        (us(at(900)), 0, False),
        (us(at(1200)), 0, True),
    ]


def test_reset_peak_without_edges_is_an_event_and_clears_nothing() -> None:
    core = MeterCore(METER)
    assert core.reset_peak(T0) is None
    assert [e.kind for e in core.events] == [EventKind.PEAK_RESET]


# -- power -------------------------------------------------------------------------------------


def test_power_is_0_before_two_edges() -> None:
    core = MeterCore(METER, start_ns=T0)
    assert core.power_kw(T0) == 0.0
    core.push(Edge(at(10), METER, CHANNEL_10, 1))
    core.advance(at(11))
    assert core.totals[CHANNEL_10].edges == 1
    assert core.power_kw(at(11)) == 0.0


def test_power_falls_toward_0_when_pulses_stop(run: Run) -> None:
    e10, _ = kw2()
    core, _ = run(e10)
    last = at(3595.5)
    assert core.totals[CHANNEL_10].last_ns == last
    assert core.power_kw(last) == 2.0  # 5 Wh in 9 s
    assert core.power_kw(last + 9 * NS) == 2.0
    assert core.power_kw(last + 18 * NS) == 1.0  # 5 Wh could have taken no less than 18 s
    assert core.power_kw(last + 90 * NS) == pytest.approx(0.2)
    assert core.power_kw(last + 86_400 * NS) == pytest.approx(18 / 86_400)
    assert core.power_kw(last + 10**7 * NS) < 1e-5
    later = [core.power_kw(last + k * NS) for k in range(0, 4000, 7)]
    assert all(p <= 2.0 for p in later)
    assert later == sorted(later, reverse=True)


def test_power_follows_the_last_inter_edge_rate_live() -> None:
    core = MeterCore(METER, start_ns=T0)
    # 3 s apart (6 kW), then 6 s apart (3 kW).
    push_all(core, alternating([at(3), at(6), at(9), at(15)], CHANNEL_10))
    core.advance(at(15) + 2 * MS)
    assert core.power_kw(at(15) + 2 * MS) == 3.0
    assert core.power_kw(at(21)) == 3.0
    assert core.power_kw(at(27)) == 1.5


def test_power_on_a_1k_register(run: Run) -> None:
    _, e1k = model_edges(6_000_000, T0, HOUR)  # a `1K` edge every 300 s
    core, _ = run(e1k)
    assert core.register_channel == CHANNEL_1K
    assert core.power_kw(HOUR) == 6.0
    assert core.power_kw(HOUR + 300 * NS) == 6.0
    assert core.power_kw(HOUR + 600 * NS) == 3.0


# -- intervals ---------------------------------------------------------------------------------


def _view(intervals: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    """(start, end, energy_wh, edges, quality, flags) per interval."""
    return [iv[1:] for iv in intervals]


def test_intervals_are_15_minute_utc_aligned_and_complete(run: Run) -> None:
    e10, e1k = kw2()
    core, intervals = run(merged(e10, e1k), start_ns=T0, end_ns=HOUR)
    assert _view(intervals) == [
        (at(900 * i), at(900 * (i + 1)), 500, 100, Quality.COMPLETE, ()) for i in range(4)
    ]
    assert sum(int(iv[3]) for iv in intervals) == core.energy_wh == 2000


def test_an_interval_still_open_when_the_input_ends_is_partial(run: Run) -> None:
    e10, _ = kw2()
    _, intervals = run(e10, start_ns=T0)  # ends at the last edge, 3595.5 s
    assert [iv[5] for iv in intervals] == ["complete"] * 3 + ["partial"]


def test_intervals_started_and_ended_mid_interval_are_partial(run: Run) -> None:
    e10, _ = kw2(start_ns=at(450), end_ns=at(2250))
    assert (e10[0][0], e10[-1][0]) == (at(454.5), at(2245.5))
    core, intervals = run(e10, start_ns=at(450), end_ns=at(2250))
    assert _view(intervals) == [
        (T0, at(900), 250, 50, Quality.PARTIAL, ()),
        (at(900), at(1800), 500, 100, Quality.COMPLETE, ()),
        (at(1800), at(2700), 250, 50, Quality.PARTIAL, ()),
    ]
    assert core.energy_wh == 1000


def test_counting_starts_at_the_first_edge_without_a_start_time(run: Run) -> None:
    e10, _ = kw2(end_ns=at(1800))
    core, intervals = run(e10, end_ns=at(1800))
    assert core.start_ns == core.first_ns == at(4.5)
    assert [iv[5] for iv in intervals] == ["partial", "complete"]


def test_quiet_intervals_are_complete_zeros_and_the_sum_still_holds(run: Run) -> None:
    edges = [(at(100), CHANNEL_10, 1), (at(3000), CHANNEL_10, 0)]
    core, intervals = run(edges, start_ns=T0, end_ns=HOUR)
    assert [(iv[3], iv[5]) for iv in intervals] == [
        (5, "complete"),
        (0, "complete"),
        (0, "complete"),
        (5, "complete"),
    ]
    assert core.energy_wh == 10


def _glitch(e10: list[Raw], e1k: list[Raw]) -> tuple[list[Raw], list[Raw]]:
    t, _, lv = e10[111]  # edge 112 at 1003.5 s, level 0: a 1 ms rise 1 s later
    return [*e10, (t + NS, CHANNEL_10, 1 - lv), (t + NS + MS, CHANNEL_10, lv)], e1k


def _missed(e10: list[Raw], e1k: list[Raw]) -> tuple[list[Raw], list[Raw]]:
    return e10[:111] + e10[112:], e1k  # edge 112 missed: inferred back at 1003.5 s


def _coincidence(e10: list[Raw], e1k: list[Raw]) -> tuple[list[Raw], list[Raw]]:
    t, ch, lv = e1k[1]  # 1795.5 s
    return e10, [e1k[0], (t + 100 * MS, ch, lv), *e1k[2:]]


def _noise(e10: list[Raw], e1k: list[Raw]) -> tuple[list[Raw], list[Raw]]:
    _, ch, lv = e10[111]  # edge 112 moved to 1 s after edge 111 (995.5 s): 18 kW for a moment
    return [*e10[:111], (e10[110][0] + NS, ch, lv), *e10[112:]], e1k


@pytest.mark.parametrize(
    ("fault", "flag"),
    [(_glitch, "glitch"), (_missed, "inferred"), (_coincidence, "crosscheck"), (_noise, "noise")],
)
def test_an_interval_with_an_anomaly_is_a_gap(
    run: Run, fault: Callable[..., tuple[list[Raw], list[Raw]]], flag: str
) -> None:
    e10, e1k = fault(*kw2())
    core, intervals = run(
        merged(e10, e1k),
        start_ns=T0,
        end_ns=HOUR,
        settings=CoreSettings(max_power_w=10_000.0),
    )
    assert _view(intervals) == [
        (T0, at(900), 500, 100, Quality.COMPLETE, ()),
        (at(900), at(1800), 500, 100, Quality.GAP, (flag,)),
        (at(1800), at(2700), 500, 100, Quality.COMPLETE, ()),
        (at(2700), HOUR, 500, 100, Quality.COMPLETE, ()),
    ]
    assert core.energy_wh == 2000


def test_gap_wins_over_partial(run: Run) -> None:
    edges = [(at(450), CHANNEL_10, 1), (at(500), CHANNEL_10, 1)]  # a missed edge between
    _, intervals = run(edges, start_ns=at(400), end_ns=at(600))
    assert _view(intervals) == [(T0, at(900), 15, 3, Quality.GAP, ("inferred",))]


def test_live_intervals_close_once_the_glitch_width_has_passed_their_end() -> None:
    e10, _ = kw2(end_ns=at(1000))
    core = MeterCore(METER, start_ns=T0)
    push_all(core, e10)
    assert interval_tuples(core.advance(at(900))) == []
    closed = interval_tuples(core.advance(at(900) + 2 * MS))
    assert closed == [(METER, T0, at(900), 500, 100, Quality.COMPLETE, ())]
    assert interval_tuples(core.advance(at(1000))) == []
    rest = interval_tuples(core.finish(at(1000)))
    assert [(iv[1], iv[3], iv[5]) for iv in rest] == [
        (at(900), 55, Quality.PARTIAL)
    ]  # edges 101..111


def test_interval_demand() -> None:
    e10, _ = kw2()
    core = MeterCore(METER, start_ns=T0)
    push_all(core, e10)
    batch = core.finish(HOUR)
    assert batch is not None
    assert [iv.demand_kw for iv in batch] == [2, 2, 2, 2]
    assert batch[0].demand_kw_lcd == 2.0


# -- the register ------------------------------------------------------------------------------


def test_the_register_is_10_when_it_has_edges(run: Run) -> None:
    e10, e1k = kw2()
    core, intervals = run(merged(e10, e1k), start_ns=T0, end_ns=HOUR)
    assert core.register_channel == CHANNEL_10
    assert core.energy_wh == 400 * 5
    assert core.totals[CHANNEL_1K].energy_wh == 4 * 500
    assert [iv[4] for iv in intervals] == [100] * 4  # intervals count `10` edges


def test_the_register_is_1k_when_10_has_no_edges(run: Run) -> None:
    _, e1k = kw2()
    core, intervals = run(e1k, start_ns=T0, end_ns=HOUR)
    assert core.register_channel == CHANNEL_1K
    assert core.energy_wh == 4 * 500
    assert [(iv[3], iv[4]) for iv in intervals] == [(500, 1)] * 4
    assert core.demand is not None and core.demand.peak is not None
    assert core.demand.peak.demand_kw == 2  # 500 Wh in every window


def test_the_register_can_be_set(run: Run) -> None:
    e10, e1k = kw2()
    settings = CoreSettings(register_channel=CHANNEL_1K)
    core, intervals = run(merged(e10, e1k), settings=settings, start_ns=T0, end_ns=HOUR)
    assert core.energy_wh == 2000
    assert [iv[4] for iv in intervals] == [1] * 4


def test_other_pulse_weights(run: Run) -> None:
    settings = CoreSettings(wh_per_edge={CHANNEL_10: 10, CHANNEL_1K: 1000})
    edges = alternating([at(10 * i) for i in range(1, 8)], CHANNEL_10)
    core, intervals = run(edges, settings=settings, start_ns=T0, end_ns=at(900))
    assert core.energy_wh == 70
    assert intervals[0][3] == 70


def test_an_empty_core() -> None:
    core = MeterCore(METER)
    assert core.finish() is None
    assert (core.energy_wh, core.register_channel, core.demand) == (0, CHANNEL_10, None)
    assert core.crosscheck.summary()["status"] == "not checked"


def test_levels_read_at_start(run: Run) -> None:
    edges = alternating([at(10), at(20)], CHANNEL_10, first_level=0)  # a fall, then a rise
    core, _ = run(edges, initial_levels={CHANNEL_10: 1})  # high at start: the fall is real
    assert (core.energy_wh, core.inferred_edges) == (10, 0)
    core, _ = run(edges, initial_levels={CHANNEL_10: 0})  # low at start: a rise was missed
    assert (core.energy_wh, core.inferred_edges) == (15, 1)
    core, _ = run(edges)  # unknown: counted as seen
    assert (core.energy_wh, core.inferred_edges) == (10, 0)
