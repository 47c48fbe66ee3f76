"""The whole meter: register, outputs, LEDs and demand over time."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meter_model import (
    CHANNEL_1K,
    CHANNEL_10,
    Accuracy,
    CtInstall,
    DemandSettings,
    Inputs,
    LineLoad,
    Meter,
    MeterConfig,
    OutOfRangeError,
    profile_edges,
)

US = 1_000_000
S_US = 300 * US
W_US = 900 * US
NJ_PER_WH = 3_600 * 10**9
Q = 5 * NJ_PER_WH  # 5 Wh
ONE_PHASE = MeterConfig.from_model("1K120")
WYE = MeterConfig.from_model("2O208-4W")


# -- register and LCD kWh ---------------------------------------------------------------------


def test_a_new_meter_is_idle_and_powered() -> None:
    meter = Meter(WYE, start_us=123)
    assert meter.t_us == 123
    assert meter.measurement.powered
    assert meter.measurement.registered_power_mw == 0
    assert (meter.energy_nj, meter.edges_10, meter.edges_1k) == (0, 0, 0)
    assert (meter.level_10, meter.level_1k, meter.reverse_led) == (0, 0, False)
    assert meter.advance(10**9) == []
    assert meter.peak is not None  # the sub-intervals closed meanwhile, all zero
    assert meter.peak.demand_kw == 0


def test_lcd_kwh_truncates() -> None:
    meter = Meter(WYE, start_us=0)
    meter.apply_power_kw(0, 12.0)  # 200 Wh a minute
    meter.advance(300 * US - 1)  # 999.99... Wh
    assert meter.lcd_kwh == 0
    assert meter.energy_wh == Fraction(12_000_000 * (300 * US - 1), NJ_PER_WH)
    meter.advance(300 * US)  # 1000 Wh exactly
    assert meter.lcd_kwh == 1
    meter.advance(600 * US - 1)
    assert meter.lcd_kwh == 1
    meter.advance(600 * US)
    assert meter.lcd_kwh == 2


def test_a_starting_register_is_kept() -> None:
    meter = Meter(ONE_PHASE, start_us=0, energy_nj=123_456 * NJ_PER_WH + 7)
    assert meter.lcd_kwh == 123
    assert meter.edges_10 == 123_456 // 5
    assert meter.edges_1k == 123_456 // 500
    assert meter.level_10 == (123_456 // 5) % 2
    assert meter.level_1k == (123_456 // 500) % 2


def test_a_negative_register_is_refused() -> None:
    with pytest.raises(ValueError, match="negative energy"):
        Meter(ONE_PHASE, start_us=0, energy_nj=-1)


def test_half_percent_error_makes_12kw_register_12_06kw_worth_of_edges() -> None:
    # 12.06 kW for 600 s = 2010 Wh = 402 edges; edge 402 lands exactly at 600 s.
    meter = Meter(WYE, start_us=0, accuracy=Accuracy(error_pf1_pct=0.5))
    meter.apply_power_kw(0, 12.0)
    edges = meter.advance(600 * US)
    e10 = [e for e in edges if e.channel == CHANNEL_10]
    assert len(e10) == 402
    assert e10[-1].t_us == 600 * US
    assert meter.energy_wh == 2010
    assert [e.t_us for e in edges if e.channel == CHANNEL_1K] == [
        (500 * 3600 * 10**9 * m + 12_060_000 - 1) // 12_060_000 for m in range(1, 5)
    ]


# -- the register never runs backwards, and time never does -----------------------------------


def test_a_reversed_ct_stops_the_register_and_lights_the_led() -> None:
    meter = Meter(ONE_PHASE, start_us=0)
    meter.apply_power_kw(0, 1.2)  # 10 A
    meter.advance(60 * US)
    energy = meter.energy_nj
    assert energy == 1_200_000 * 60 * US
    meter.apply(60 * US, Inputs((LineLoad(120.0, 10.0),), (CtInstall(1, True),)))
    assert meter.measurement.net_power_w == pytest.approx(-1200.0)
    assert meter.reverse_led
    assert meter.advance(3600 * US) == []
    assert meter.energy_nj == energy  # not a nanojoule backwards
    meter.apply_power_kw(3600 * US, 1.2)
    assert not meter.reverse_led


def test_time_going_backwards_raises() -> None:
    meter = Meter(ONE_PHASE, start_us=10 * US)
    meter.advance(20 * US)
    with pytest.raises(ValueError, match="time runs backwards"):
        meter.advance(20 * US - 1)
    with pytest.raises(ValueError, match="time runs backwards"):
        meter.apply_power_kw(5 * US, 1.0)
    assert meter.t_us == 20 * US
    assert meter.advance(20 * US) == []  # standing still is fine


def test_bad_inputs_leave_the_meter_untouched() -> None:
    meter = Meter(ONE_PHASE, start_us=0)
    meter.apply_power_kw(0, 1.0)
    with pytest.raises(OutOfRangeError, match="L1 voltage"):
        meter.apply(100 * US, Inputs((LineLoad(200.0, 1.0),)))
    assert meter.t_us == 0  # the time was not advanced either
    assert meter.measurement.registered_power_mw == 1_000_000


def test_an_unpowered_meter_makes_no_edges() -> None:
    meter = Meter(ONE_PHASE, start_us=0)
    meter.apply(0, Inputs((LineLoad(90.0, 50.0),)))
    assert not meter.measurement.powered
    assert meter.advance(3600 * US) == []
    assert meter.energy_nj == 0
    assert meter.display() is None


@st.composite
def ct_steps(draw: st.DrawFn) -> list[tuple[int, Inputs]]:
    """Draw up to 6 (duration_us, inputs) steps on the wye, with CTs anywhere, either way."""
    steps = []
    for _ in range(draw(st.integers(1, 6))):
        lines = tuple(
            LineLoad(
                draw(st.sampled_from([120.0, 110.0, 90.0])),
                draw(st.floats(0.0, 220.0)),
                draw(st.floats(0.5, 1.0)),
                draw(st.booleans()),
            )
            for _ in range(3)
        )
        cts = tuple(CtInstall(draw(st.integers(1, 3)), draw(st.booleans())) for _ in range(3))
        steps.append((draw(st.integers(1, 20 * 60 * US)), Inputs(lines, cts)))
    return steps


@settings(max_examples=100, deadline=None)
@given(ct_steps())
def test_the_register_never_runs_backwards(steps: list[tuple[int, Inputs]]) -> None:
    meter = Meter(WYE, start_us=0)
    t_us = 0
    last_count = 0
    for duration_us, inputs in steps:
        meter.apply(t_us, inputs)
        m = meter.measurement
        assert m.registered_power_mw >= 0
        load_a = max(ld.current_a for ld in inputs.lines)
        if m.reverse_led:
            assert m.powered and m.net_power_w < 0 and load_a >= 1.0
        elif m.powered and load_a >= 1.0:
            assert m.net_power_w > -0.001  # running backwards with 1 A lights the LED
        before = meter.energy_nj
        t_us += duration_us
        edges = meter.advance(t_us)
        assert meter.energy_nj == before + m.registered_power_mw * duration_us
        counts = [e.count for e in edges if e.channel == CHANNEL_10]
        assert counts == list(range(last_count + 1, last_count + 1 + len(counts)))
        last_count += len(counts)
    assert last_count == meter.edges_10


# -- the meter agrees with the vectorised path and with demand computed by hand -------------


@st.composite
def kw_profiles(draw: st.DrawFn) -> tuple[int, list[tuple[int, float]], int, int]:
    """Draw (start_us, [(duration_us, kW)], start_energy_nj, end pad) for a 1K120 meter."""
    start_us = draw(st.integers(0, 10**12))
    steps = draw(
        st.lists(
            st.tuples(
                st.one_of(st.integers(1, 10 * US), st.integers(1, 20 * 60 * US)),
                st.one_of(st.just(0.0), st.floats(0.0, 26.0)),
            ),
            min_size=1,
            max_size=8,
        )
    )
    start_energy = draw(st.one_of(st.just(0), st.integers(0, 10**16)))
    return start_us, steps, start_energy, draw(st.integers(0, W_US))


@settings(max_examples=100, deadline=None)
@given(kw_profiles())
def test_meter_matches_profile_edges_and_hand_demand(
    profile: tuple[int, list[tuple[int, float]], int, int],
) -> None:
    start_us, steps, start_nj, pad_us = profile
    meter = Meter(ONE_PHASE, start_us=start_us, energy_nj=start_nj)
    t_us, times, powers, edges = start_us, [], [], []
    for duration_us, kw in steps:
        edges += meter.apply_power_kw(t_us, kw)
        times.append(t_us)
        powers.append(meter.measurement.registered_power_mw)
        t_us += duration_us
    end_us = t_us + pad_us
    edges += meter.advance(end_us)

    vector = profile_edges(times, powers, end_us, start_energy_nj=start_nj)
    assert [e.t_us for e in edges if e.channel == CHANNEL_10] == vector.t10_us.tolist()
    assert [e.count for e in edges if e.channel == CHANNEL_10] == vector.n10.tolist()
    assert [e.t_us for e in edges if e.channel == CHANNEL_1K] == vector.t1k_us.tolist()
    assert [e.count for e in edges if e.channel == CHANNEL_1K] == vector.n1k.tolist()
    assert meter.energy_nj == vector.end_energy_nj
    assert meter.edges_10 == meter.energy_nj // Q
    assert meter.lcd_kwh == meter.energy_nj // (1000 * NJ_PER_WH)

    # Demand by hand: integrate the profile over [a, b) directly.
    stops = [*times[1:], end_us]

    def energy_nj(a: int, b: int) -> int:
        return sum(
            p * max(0, min(b, t1) - max(a, t0))
            for t0, p, t1 in zip(times, powers, stops, strict=True)
        )

    boundaries = list(range((start_us // S_US + 1) * S_US, end_us + 1, S_US))
    if not boundaries:
        assert meter.peak is None
        return
    last_end = boundaries[-1]
    d5 = Fraction(energy_nj(last_end - S_US, last_end), 10**9 * 300 * 1000)
    assert meter.instantaneous_demand_kw == d5
    windows = [(Fraction(energy_nj(b - W_US, b), 10**9 * 900 * 1000), b) for b in boundaries]
    best = max(d for d, _ in windows)
    first_best_end = min(b for d, b in windows if d == best)
    assert meter.peak is not None
    assert (meter.peak.demand_kw, meter.peak.window_end_us) == (best, first_best_end)
    # A window is partial if it reaches back before counting started into a partial sub-interval.
    partial = first_best_end - W_US < start_us
    assert meter.peak.partial == partial


def test_meter_with_other_demand_settings() -> None:
    meter = Meter(ONE_PHASE, start_us=0, demand=DemandSettings(60, 600))
    meter.apply_power_kw(0, 3.0)
    meter.advance(60 * US)
    assert meter.instantaneous_demand_kw == 3
    assert meter.peak is not None
    assert meter.peak.demand_kw == Fraction(3, 10)  # 1 of 10 minutes
    meter.advance(600 * US)
    assert meter.peak.demand_kw == 3
    assert meter.peak.window_end_us == 600 * US
