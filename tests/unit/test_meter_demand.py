"""Demand (SPEC section 2): sub-intervals, instantaneous, rolling and peak demand."""

from __future__ import annotations

import itertools
from decimal import Decimal
from fractions import Fraction

import pytest

from meter_model import DemandMeter, DemandSettings, Inputs, LineLoad, Meter, MeterConfig, Peak
from meter_model.units import kw_from_energy, round_kw

US = 1_000_000
S_US = 300 * US  # 5-minute sub-interval
W_US = 900 * US  # 15-minute window
NJ_PER_J = 10**9
WH = Fraction(3600)  # joules per Wh, the gateway's unit


def _nj_meter(start_us: int = 0, settings: DemandSettings | None = None) -> DemandMeter:
    return DemandMeter(settings or DemandSettings(), Fraction(1, NJ_PER_J), start_us)


def _wh_meter(start_us: int = 0) -> DemandMeter:
    return DemandMeter(DemandSettings(), WH, start_us)


# -- settings ---------------------------------------------------------------------------------


def test_default_settings_are_5_and_15_minutes() -> None:
    settings = DemandSettings()
    assert (settings.sub_interval_s, settings.window_s) == (300, 900)
    assert settings.sub_interval_us == S_US
    assert settings.sub_intervals_per_window == 3


@pytest.mark.parametrize(("s", "w"), [(300, 1000), (400, 900), (600, 900)])
def test_a_sub_interval_that_does_not_divide_the_window_raises(s: int, w: int) -> None:
    with pytest.raises(ValueError, match=f"sub-interval {s} s must divide window {w} s"):
        DemandSettings(s, w)


@pytest.mark.parametrize(("s", "w"), [(0, 900), (-300, 900), (300, 0)])
def test_non_positive_settings_raise(s: int, w: int) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        DemandSettings(s, w)


def test_other_divisible_settings_are_accepted() -> None:
    assert DemandSettings(60, 900).sub_intervals_per_window == 15
    assert DemandSettings(900, 900).sub_intervals_per_window == 1


def test_kw_from_energy() -> None:
    assert kw_from_energy(600_000, 300) == 2  # 600 kJ in 5 min
    assert kw_from_energy(Fraction(1, 2), 1) == Fraction(1, 2000)


# -- hand cases -------------------------------------------------------------------------------


def test_2kw_for_15_minutes_aligned_in_nanojoules() -> None:
    # 2 kW for 5 min = 600 kJ = 6e14 nJ per sub-interval.
    demand = _nj_meter(0)
    per_sub_nj = 2_000_000 * S_US  # mW x us
    for k in range(3):
        demand.add(k * S_US, per_sub_nj)
    closed = demand.close_through(W_US)
    assert [(c.start_us, c.end_us, c.energy, c.complete) for c in closed] == [
        (600 * US, 900 * US, per_sub_nj, True)
    ]
    assert demand.instantaneous_kw() == 2
    assert demand.window_demand_kw() == 2
    assert round_kw(demand.instantaneous_kw()) == Decimal("2.00")
    assert not demand.window_partial()
    assert demand.peak == Peak(Fraction(2), W_US, False)
    assert round_kw(demand.peak.demand_kw) == Decimal("2.00")


def test_the_first_windows_are_partial_until_three_sub_intervals_close() -> None:
    demand = _nj_meter(0)
    per_sub_nj = 2_000_000 * S_US
    demand.add(0, per_sub_nj)
    demand.close_through(S_US)
    # [none, none, 600 kJ] / 900 s = 0.67 kW, partial.
    assert demand.window_demand_kw() == Fraction(2, 3)
    assert demand.window_partial()
    assert demand.peak == Peak(Fraction(2, 3), S_US, True)
    demand.add(S_US, per_sub_nj)
    demand.close_through(2 * S_US)
    assert demand.peak == Peak(Fraction(4, 3), 2 * S_US, True)


def test_3kw_in_5wh_edges() -> None:
    # 3 kW for 5 min = 250 Wh = 50 edges of 5 Wh; D5 = 250 Wh / (1/12 h) = 3 kW.
    demand = _wh_meter(0)
    for i in range(50):
        demand.add(i * 6 * US + 1, 5)
    demand.close_through(S_US)
    assert demand.last is not None
    assert demand.last.energy == 250
    assert demand.instantaneous_kw() == 3
    assert demand.window_demand_kw() == 1  # 250 Wh over 15 minutes


def test_energy_exactly_on_a_boundary_belongs_to_the_later_sub_interval() -> None:
    demand = _wh_meter(0)
    demand.add(S_US - 1, 5)
    closed = demand.add(S_US, 10)  # exactly on the boundary: closes [0, S) first
    assert [(c.start_us, c.energy) for c in closed] == [(0, 5)]
    assert demand.current_start_us == S_US
    assert demand.current_energy == 10
    closed = demand.close_through(2 * S_US)
    assert [(c.start_us, c.end_us, c.energy) for c in closed] == [(S_US, 2 * S_US, 10)]


def test_close_through_inside_the_current_sub_interval_closes_nothing() -> None:
    demand = _wh_meter(S_US)
    demand.add(S_US + 1, 5)
    assert demand.close_through(2 * S_US - 1) == []
    assert demand.last is None
    assert demand.instantaneous_kw() == 0
    assert demand.peak is None


def test_sub_intervals_are_aligned_to_the_epoch() -> None:
    demand = _wh_meter(7 * S_US + 123)
    assert demand.current_start_us == 7 * S_US
    closed = demand.close_through(9 * S_US)
    assert [(c.start_us, c.end_us) for c in closed] == [(7 * S_US, 8 * S_US), (8 * S_US, 9 * S_US)]


def test_starting_mid_sub_interval_makes_the_first_window_partial() -> None:
    # Counting starts 150 s into [0, 5 min): that sub-interval was only half observed.
    demand = _nj_meter(150 * US)
    per_sub_nj = 2_000_000 * S_US  # 600 kJ
    demand.add(150 * US, per_sub_nj // 2)
    first = demand.close_through(S_US)
    assert [(c.start_us, c.energy, c.complete) for c in first] == [(0, per_sub_nj // 2, False)]
    for k in (1, 2):
        demand.add(k * S_US, per_sub_nj)
        demand.close_through((k + 1) * S_US)
    # (300 + 600 + 600 kJ) / 900 s = 1.67 kW, partial because of [0, 5 min).
    assert demand.window_demand_kw() == Fraction(5, 3)
    assert demand.window_partial()
    assert demand.peak == Peak(Fraction(5, 3), 3 * S_US, True)
    # The next window no longer holds it: whole, and strictly larger.
    demand.add(3 * S_US, per_sub_nj)
    demand.close_through(4 * S_US)
    assert not demand.window_partial()
    assert demand.peak == Peak(Fraction(2), 4 * S_US, False)


def test_peak_keeps_the_end_time_of_its_window() -> None:
    demand = _wh_meter(0)
    # Sub-interval energies in Wh: 300, 300, 300, 0, 0, 0. Window kW = sum Wh / 250 Wh-per-kW.
    for k in range(3):
        demand.add(k * S_US, 300)
    demand.close_through(6 * S_US)
    assert demand.window_demand_kw() == 0
    assert demand.peak == Peak(Fraction(900, 250), 3 * S_US, False)  # 3.6 kW at 00:15


def test_an_equal_window_does_not_replace_the_peak_a_larger_one_does() -> None:
    demand = _wh_meter(0)
    energies = [100, 100, 100, 0, 0, 0, 100, 100, 100, 0, 100, 101]
    for k, energy in enumerate(energies):
        demand.add(k * S_US, energy)
        demand.close_through((k + 1) * S_US)
        if k == 8:  # [100, 100, 100] again, equal: the peak keeps its first window
            assert demand.peak == Peak(Fraction(300, 250), 3 * S_US, False)
    # Window [0, 100, 101] = 201 Wh: smaller. The largest, 300 Wh, is still the first one.
    assert demand.peak == Peak(Fraction(300, 250), 3 * S_US, False)
    demand.add(12 * S_US, 100)
    demand.close_through(13 * S_US)  # [100, 101, 100] = 301 Wh: strictly larger
    assert demand.peak == Peak(Fraction(301, 250), 13 * S_US, False)


def test_reset_clears_the_peak_and_a_new_one_follows() -> None:
    demand = _wh_meter(0)
    for k in range(3):
        demand.add(k * S_US, 300)
    demand.close_through(3 * S_US)
    before = demand.peak
    assert before == Peak(Fraction(900, 250), 3 * S_US, False)
    assert demand.reset_peak() == before
    assert demand.peak is None
    assert demand.reset_peak() is None
    demand.add(3 * S_US, 50)
    demand.close_through(4 * S_US)  # window [300, 300, 50] = 650 Wh
    assert demand.peak == Peak(Fraction(650, 250), 4 * S_US, False)


def test_a_long_quiet_stretch_closes_fast_and_leaves_zero_demand() -> None:
    demand = _wh_meter(0)
    for k in range(3):
        demand.add(k * S_US, 300)
    ten_thousand_days_us = 10_000 * 86_400 * US  # 2.88 million sub-intervals
    closed = demand.close_through(ten_thousand_days_us + 5)
    # Not 2.88 million sub-intervals: the current one, then at most two windows' worth of the
    # empty ones (the first after the data, the last before the target), in order.
    assert 1 + 3 <= len(closed) <= 1 + 2 * 3
    assert (closed[0].start_us, closed[0].energy) == (2 * S_US, 300)
    assert [c.start_us for c in closed[1:4]] == [3 * S_US, 4 * S_US, 5 * S_US]
    assert closed[-1].end_us == ten_thousand_days_us
    assert all(c.energy == 0 and c.end_us - c.start_us == S_US for c in closed[1:])
    assert all(a.end_us <= b.start_us for a, b in itertools.pairwise(closed))
    assert all(c.complete for c in closed)
    assert demand.last == closed[-1]
    assert demand.current_start_us == ten_thousand_days_us
    assert demand.instantaneous_kw() == 0
    assert demand.window_demand_kw() == 0
    assert not demand.window_partial()
    assert demand.peak == Peak(Fraction(900, 250), 3 * S_US, False)
    # Energy after the stretch lands in the right sub-interval.
    demand.add(ten_thousand_days_us + S_US, 25)
    assert demand.close_through(ten_thousand_days_us + 2 * S_US)[-1].energy == 25
    assert demand.instantaneous_kw() == Fraction(25 * 12, 1000)


def test_an_unobserved_stretch_is_a_partial_gap() -> None:
    demand = _wh_meter(0)
    demand.add(0, 300)
    closed = demand.close_through(4 * S_US, observed=False)
    assert [(c.start_us, c.complete) for c in closed] == [
        (0, True),  # the current one was watched
        (S_US, False),
        (2 * S_US, False),
        (3 * S_US, False),
    ]
    assert demand.window_partial()
    # After a whole watched window the demand is whole again.
    demand.close_through(7 * S_US)
    assert not demand.window_partial()


def test_mark_gap_makes_the_current_sub_interval_partial() -> None:
    demand = _wh_meter(0)
    demand.add(10, 5)
    demand.mark_gap()
    (closed,) = demand.close_through(S_US)
    assert not closed.complete
    (closed,) = demand.close_through(2 * S_US)
    assert closed.complete  # the next one starts whole


def test_other_settings_one_minute_in_a_quarter_hour() -> None:
    demand = DemandMeter(DemandSettings(60, 900), WH, 0)
    for k in range(15):
        demand.add(k * 60 * US, 10)  # 10 Wh a minute = 0.6 kW
    demand.close_through(900 * US)
    assert demand.instantaneous_kw() == Fraction(6, 10)
    assert demand.window_demand_kw() == Fraction(6, 10)
    assert not demand.window_partial()


# -- the meter's own demand -------------------------------------------------------------------


def test_meter_2kw_steady_for_15_minutes_aligned() -> None:
    meter = Meter(MeterConfig.from_model("1K120"), start_us=0)
    meter.apply_power_kw(0, 2.0)
    assert meter.measurement.registered_power_mw == 2_000_000
    meter.advance(900 * US)
    assert round_kw(meter.instantaneous_demand_kw) == Decimal("2.00")
    assert meter.peak is not None
    assert round_kw(meter.peak.demand_kw) == Decimal("2.00")
    assert meter.peak.window_end_us == 900 * US
    assert not meter.peak.partial
    assert meter.instantaneous_demand_kw == 2  # exactly


def test_meter_starting_mid_sub_interval_has_a_partial_first_window() -> None:
    meter = Meter(MeterConfig.from_model("1K120"), start_us=150 * US)
    meter.apply_power_kw(150 * US, 2.0)
    meter.advance(900 * US)
    # [0, 5 min) was watched for 150 s only: (300 + 600 + 600 kJ) / 900 s = 1.67 kW.
    assert meter.peak is not None
    assert meter.peak.demand_kw == Fraction(5, 3)
    assert meter.peak.partial
    meter.advance(1200 * US)
    assert meter.peak == Peak(Fraction(2), 1200 * US, False)


def test_an_outage_marks_every_dark_sub_interval_partial() -> None:
    meter = Meter(MeterConfig.from_model("1K120"), start_us=0)
    meter.apply_power_kw(0, 2.0)
    meter.apply(S_US, Inputs((LineLoad(0.0),)))  # the supply drops out at 00:05
    closed = []
    for k in (2, 3):
        meter.advance(k * S_US)
        assert meter.demand.last is not None
        closed.append((meter.demand.last.start_us, meter.demand.last.complete))
    assert closed == [(S_US, False), (2 * S_US, False)]
    assert meter.demand.window_partial()


def test_an_outage_spanning_sub_intervals_in_one_call_marks_each_partial() -> None:
    meter = Meter(MeterConfig.from_model("1K120"), start_us=0)
    meter.apply_power_kw(0, 2.0)
    meter.apply(S_US, Inputs((LineLoad(0.0),)))  # dark from 00:05 ...
    meter.apply_power_kw(3 * S_US, 2.0)  # ... to 00:15, in one call
    assert meter.demand.last is not None
    assert (meter.demand.last.start_us, meter.demand.last.complete) == (2 * S_US, False)
    meter.advance(5 * S_US)
    # The window [00:10, 00:25) holds the dark [00:10, 00:15): partial, 2 of 3 sub-intervals.
    assert meter.demand.window_partial()
    assert meter.demand.window_demand_kw() == Fraction(4, 3)
    meter.advance(6 * S_US)
    assert not meter.demand.window_partial()
    assert meter.peak == Peak(Fraction(2), 6 * S_US, False)


def test_an_outage_inside_one_sub_interval_marks_it_partial() -> None:
    meter = Meter(MeterConfig.from_model("1K120"), start_us=0)
    meter.apply_power_kw(0, 2.0)
    meter.apply(100 * US, Inputs((LineLoad(0.0),)))
    meter.apply_power_kw(200 * US, 2.0)
    meter.advance(S_US)
    assert meter.demand.last is not None
    assert not meter.demand.last.complete
    assert meter.demand.last.energy == 2_000_000 * 200 * US  # 200 s of 2 kW
