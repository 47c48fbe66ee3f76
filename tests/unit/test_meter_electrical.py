"""What the meter measures: phasor power per element, CT faults, the reverse LED, ranges."""

from __future__ import annotations

import math

import pytest

from meter_model import (
    Accuracy,
    CtInstall,
    Inputs,
    LineLoad,
    MeterConfig,
    OutOfRangeError,
    Service,
    balanced_inputs,
    measure,
)

WYE = MeterConfig.from_model("2O208-4W")  # 3 x 120 V at 0, -120, +120 degrees; 200 A CTs
DELTA = MeterConfig.from_model("2O208-4W", service=Service.DELTA_3P4W)
ONE_PHASE = MeterConfig.from_model("1K120")
SPLIT_PHASE = MeterConfig.from_model("1N240-3W")  # 2 x 120 V at 0 and 180 degrees

# 12 kW balanced on the wye at unity PF: 12000 / 360 = 33.33 A per line, 4000 W per element.
WYE_12KW = balanced_inputs(WYE, 12.0)


def _with_cts(inputs: Inputs, *cts: CtInstall) -> Inputs:
    return Inputs(inputs.lines, cts, inputs.frequency_hz)


# -- correct installations --------------------------------------------------------------------


def test_balanced_three_phase_load_registers_the_load() -> None:
    assert [ld.voltage_v for ld in WYE_12KW.lines] == [120.0, 120.0, 120.0]
    assert [ld.current_a for ld in WYE_12KW.lines] == pytest.approx([100 / 3] * 3)
    m = measure(WYE, WYE_12KW)
    assert m.powered
    assert m.element_power_w == pytest.approx((4000.0, 4000.0, 4000.0))
    assert m.net_power_w == pytest.approx(12000.0)
    assert m.registered_power_mw == 12_000_000
    assert not m.reverse_led


def test_balanced_delta_load_registers_the_load() -> None:
    inputs = balanced_inputs(DELTA, 10.0)
    # Equal currents: 10000 / (120 + 120 + 207.85) = 22.33 A; the high leg carries most power.
    current_a = 10000 / (240 + 120 * math.sqrt(3))
    assert [ld.current_a for ld in inputs.lines] == pytest.approx([current_a] * 3)
    m = measure(DELTA, inputs)
    assert m.element_power_w == pytest.approx(
        (120 * current_a, 120 * current_a, 120 * math.sqrt(3) * current_a)
    )
    assert m.registered_power_mw == 10_000_000
    assert not m.reverse_led


def test_split_phase_load_registers_the_load() -> None:
    inputs = balanced_inputs(SPLIT_PHASE, 2.4)  # 10 A on each leg
    assert [ld.current_a for ld in inputs.lines] == pytest.approx([10.0, 10.0])
    m = measure(SPLIT_PHASE, inputs)
    assert m.element_power_w == pytest.approx((1200.0, 1200.0))
    assert m.registered_power_mw == 2_400_000


@pytest.mark.parametrize("leading", [False, True])
def test_power_factor_scales_active_power_leading_or_lagging(leading: bool) -> None:
    # 120 V x 10 A x 0.5 = 600 W.
    m = measure(ONE_PHASE, Inputs((LineLoad(120.0, 10.0, 0.5, leading),)))
    assert m.element_power_w == pytest.approx((600.0,))
    assert m.registered_power_mw == 600_000


def test_no_current_registers_nothing_and_keeps_the_led_dark() -> None:
    m = measure(WYE, balanced_inputs(WYE, 0.0))
    assert m.powered
    assert m.registered_power_mw == 0
    assert m.element_power_w == (0.0, 0.0, 0.0)
    assert not m.reverse_led


def test_power_is_rounded_to_the_milliwatt() -> None:
    # 120 V x 0.0123456 A = 1.481472 W -> 1481 mW.
    m = measure(ONE_PHASE, Inputs((LineLoad(120.0, 0.0123456),)))
    assert m.registered_power_mw == 1481


# -- reversed CTs -----------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3])
def test_one_reversed_ct_on_balanced_three_phase_registers_a_third_led_dark(k: int) -> None:
    cts = tuple(CtInstall(j, reversed=(j == k)) for j in (1, 2, 3))
    m = measure(WYE, _with_cts(WYE_12KW, *cts))
    expected = [4000.0, 4000.0, 4000.0]
    expected[k - 1] = -4000.0
    assert m.element_power_w == pytest.approx(tuple(expected))
    assert m.registered_power_mw == 4_000_000  # 12 kW / 3
    assert not m.reverse_led  # net power still runs forwards


def test_two_reversed_cts_on_balanced_three_phase_light_the_led() -> None:
    cts = (CtInstall(1, True), CtInstall(2, True), CtInstall(3))
    m = measure(WYE, _with_cts(WYE_12KW, *cts))
    assert m.net_power_w == pytest.approx(-4000.0)
    assert m.registered_power_mw == 0  # never backwards
    assert m.reverse_led


@pytest.mark.parametrize("current_a", [1.0, 1.5, 50.0])
def test_single_phase_reversed_ct_with_1a_or_more_lights_led_registers_zero(
    current_a: float,
) -> None:
    m = measure(ONE_PHASE, Inputs((LineLoad(120.0, current_a),), (CtInstall(1, True),)))
    assert m.element_power_w == pytest.approx((-120.0 * current_a,))
    assert m.registered_power_mw == 0
    assert m.reverse_led


@pytest.mark.parametrize("current_a", [0.5, 0.999])
def test_single_phase_reversed_ct_under_1a_leaves_led_dark(current_a: float) -> None:
    m = measure(ONE_PHASE, Inputs((LineLoad(120.0, current_a),), (CtInstall(1, True),)))
    assert m.net_power_w == pytest.approx(-120.0 * current_a)
    assert m.registered_power_mw == 0
    assert not m.reverse_led


def test_1a_of_load_is_the_largest_current_on_any_line() -> None:
    both_reversed = (CtInstall(1, True), CtInstall(2, True))
    # 0.9 A on each leg: 1.8 A in all, but no line carries 1 A.
    m = measure(SPLIT_PHASE, Inputs((LineLoad(120.0, 0.9), LineLoad(120.0, 0.9)), both_reversed))
    assert m.net_power_w == pytest.approx(-216.0)
    assert not m.reverse_led
    # 1.5 A on one leg and 0.5 A on the other: one line carries 1 A or more.
    m = measure(SPLIT_PHASE, Inputs((LineLoad(120.0, 1.5), LineLoad(120.0, 0.5)), both_reversed))
    assert m.net_power_w == pytest.approx(-240.0)
    assert m.reverse_led


# -- CTs on the wrong line --------------------------------------------------------------------


def test_ct_on_a_line_120_degrees_away_contributes_minus_half_vi() -> None:
    # CT1 on line 2: element 1 is V1 x I2 x cos(120 deg) = -0.5 x 120 V x 33.33 A = -2000 W.
    m = measure(WYE, _with_cts(WYE_12KW, CtInstall(2), CtInstall(2), CtInstall(3)))
    assert m.element_power_w == pytest.approx((-2000.0, 4000.0, 4000.0))
    assert m.registered_power_mw == 6_000_000  # half the 12 kW load
    assert not m.reverse_led


def test_ct_on_the_wrong_line_at_pf_half_follows_the_phase_angle() -> None:
    # 120 V, 20 A at PF 0.5 lagging: I2 sits at -120 - 60 = -180 deg; V1 x I2 x cos(180 deg).
    lines = tuple(LineLoad(120.0, 20.0, 0.5) for _ in range(3))
    m = measure(WYE, Inputs(lines, (CtInstall(2), CtInstall(2), CtInstall(3))))
    assert m.element_power_w == pytest.approx((-2400.0, 1200.0, 1200.0))
    assert m.registered_power_mw == 0
    assert m.net_power_w == pytest.approx(0.0, abs=1e-6)
    assert not m.reverse_led  # net is 0 W, not negative: rounding noise must not light it


def test_swapped_cts_on_balanced_three_phase_net_zero_leave_the_led_dark() -> None:
    # CT1 on L2 and CT2 on L1: -2000 W, -2000 W and +4000 W, net 0 W.
    m = measure(WYE, _with_cts(WYE_12KW, CtInstall(2), CtInstall(1), CtInstall(3)))
    assert m.element_power_w == pytest.approx((-2000.0, -2000.0, 4000.0))
    assert m.registered_power_mw == 0
    assert not m.reverse_led


def test_split_phase_cts_swapped_run_backwards_and_light_the_led() -> None:
    # Each element sees the other leg's current, 180 degrees away: -120 V x 10 A each.
    inputs = balanced_inputs(SPLIT_PHASE, 2.4)
    m = measure(SPLIT_PHASE, _with_cts(inputs, CtInstall(2), CtInstall(1)))
    assert m.element_power_w == pytest.approx((-1200.0, -1200.0))
    assert m.registered_power_mw == 0
    assert m.reverse_led


# -- supply range and powering ----------------------------------------------------------------


@pytest.mark.parametrize("voltage_v", [0.0, 50.0, 101.9])
def test_voltage_below_the_supply_range_leaves_the_meter_unpowered(voltage_v: float) -> None:
    m = measure(ONE_PHASE, Inputs((LineLoad(voltage_v, 10.0),), (CtInstall(1, True),)))
    assert not m.powered
    assert m.registered_power_mw == 0
    assert m.element_power_w == (0.0,)
    assert not m.reverse_led  # a dark meter lights nothing


def test_any_line_below_its_range_unpowers_a_three_phase_meter() -> None:
    lines = (LineLoad(120.0, 30.0), LineLoad(101.0, 30.0), LineLoad(120.0, 30.0))
    m = measure(WYE, Inputs(lines))
    assert not m.powered
    assert m.registered_power_mw == 0


def test_supply_range_edges_are_inclusive() -> None:
    assert measure(ONE_PHASE, Inputs((LineLoad(102.0, 1.0),))).registered_power_mw == 102_000
    assert measure(ONE_PHASE, Inputs((LineLoad(138.0, 1.0),))).registered_power_mw == 138_000


def test_the_delta_high_leg_has_its_own_supply_range() -> None:
    def lines(l3_v: float) -> Inputs:
        return Inputs((LineLoad(120.0, 1.0), LineLoad(120.0, 1.0), LineLoad(l3_v, 1.0)))

    assert not measure(DELTA, lines(174.0)).powered  # below 175 V
    # 120 + 120 + 175 V at 1 A, each element at its own line's voltage.
    assert measure(DELTA, lines(175.0)).registered_power_mw == 415_000
    assert measure(DELTA, lines(240.0)).powered
    with pytest.raises(OutOfRangeError, match=r"L3 voltage 241 V .*allowed: 0-240 V"):
        measure(DELTA, lines(241.0))


@pytest.mark.parametrize(
    ("voltage_v", "message"),
    [
        (138.5, "L1 voltage 138.5 V is out of range (allowed: 0-138 V)"),
        (-1.0, "L1 voltage -1 V is out of range (allowed: 0-138 V)"),
        (math.nan, "L1 voltage nan V is out of range (allowed: 0-138 V)"),
    ],
)
def test_voltage_above_range_or_negative_raises(voltage_v: float, message: str) -> None:
    with pytest.raises(OutOfRangeError) as info:
        measure(ONE_PHASE, Inputs((LineLoad(voltage_v, 1.0),)))
    assert str(info.value) == message
    assert info.value.quantity == "L1 voltage"


def test_277v_meter_takes_the_high_range() -> None:
    config = MeterConfig.from_model("1K277")
    assert not measure(config, Inputs((LineLoad(234.0, 1.0),))).powered
    assert measure(config, Inputs((LineLoad(320.0, 1.0),))).registered_power_mw == 320_000
    with pytest.raises(OutOfRangeError, match=r"0-320 V"):
        measure(config, Inputs((LineLoad(321.0, 1.0),)))


# -- other ranges -----------------------------------------------------------------------------


def test_series_2000_at_50hz_raises() -> None:
    inputs = Inputs(WYE_12KW.lines, frequency_hz=50.0)
    with pytest.raises(OutOfRangeError) as info:
        measure(WYE, inputs)
    assert str(info.value) == "line frequency 50 Hz is out of range (allowed: 60 Hz)"


@pytest.mark.parametrize("frequency_hz", [50.0, 55.0, 60.0])
def test_series_1000_accepts_50_to_60hz(frequency_hz: float) -> None:
    m = measure(ONE_PHASE, Inputs((LineLoad(120.0, 1.0),), frequency_hz=frequency_hz))
    assert m.registered_power_mw == 120_000


@pytest.mark.parametrize("frequency_hz", [49.9, 60.1, 0.0])
def test_series_1000_outside_50_to_60hz_raises(frequency_hz: float) -> None:
    with pytest.raises(OutOfRangeError, match=r"line frequency .* \(allowed: 50-60 Hz\)"):
        measure(ONE_PHASE, Inputs((LineLoad(120.0, 1.0),), frequency_hz=frequency_hz))


@pytest.mark.parametrize("pf", [0.4, 0.49, 1.01, 0.0, -0.5])
def test_power_factor_outside_half_to_one_raises(pf: float) -> None:
    with pytest.raises(OutOfRangeError) as info:
        measure(ONE_PHASE, Inputs((LineLoad(120.0, 1.0, pf),)))
    assert info.value.quantity == "L1 power factor"
    assert str(info.value).endswith("(allowed: 0.5-1.0 leading or lagging)")


def test_current_over_110_percent_of_the_ct_rating_raises() -> None:
    config = MeterConfig.from_model("1K120", ct_rating_a=100)
    assert measure(config, Inputs((LineLoad(120.0, 110.0),))).registered_power_mw == 13_200_000
    with pytest.raises(OutOfRangeError) as info:
        measure(config, Inputs((LineLoad(120.0, 110.5),)))
    assert str(info.value) == (
        "L1 current 110.5 A is out of range (allowed: 0-110 A (CT rating 100 A + 10 %))"
    )
    with pytest.raises(OutOfRangeError, match="L1 current -1 A"):
        measure(config, Inputs((LineLoad(120.0, -1.0),)))


def test_wrong_number_of_lines_or_cts_raises() -> None:
    with pytest.raises(OutOfRangeError, match=r"number of lines 1 .*3 for 3-phase 4-wire wye"):
        measure(WYE, Inputs((LineLoad(120.0),)))
    with pytest.raises(OutOfRangeError, match=r"number of CTs 2 .*allowed: 3"):
        measure(WYE, _with_cts(WYE_12KW, CtInstall(1), CtInstall(2)))


@pytest.mark.parametrize("line", [0, 4])
def test_a_ct_on_a_line_the_meter_lacks_raises(line: int) -> None:
    with pytest.raises(OutOfRangeError, match=rf"CT2 line {line} .*allowed: 1-3"):
        measure(WYE, _with_cts(WYE_12KW, CtInstall(1), CtInstall(line), CtInstall(3)))


# -- accuracy ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pf1", "pf05", "quantity", "allowed"),
    [
        (0.51, 0.0, "registration error at PF 1.0", "-0.5 % to +0.5 %"),
        (-0.6, 0.0, "registration error at PF 1.0", "-0.5 % to +0.5 %"),
        (0.0, 0.76, "registration error at PF 0.5", "-0.75 % to +0.75 %"),
        (0.0, -0.8, "registration error at PF 0.5", "-0.75 % to +0.75 %"),
        (math.nan, 0.0, "registration error at PF 1.0", "-0.5 % to +0.5 %"),
    ],
)
def test_accuracy_outside_the_ansi_class_raises(
    pf1: float, pf05: float, quantity: str, allowed: str
) -> None:
    with pytest.raises(OutOfRangeError) as info:
        Accuracy(pf1, pf05)
    assert info.value.quantity == quantity
    assert info.value.allowed == allowed
    assert quantity in str(info.value)


def test_accuracy_at_the_class_limits_is_accepted() -> None:
    assert Accuracy(0.5, 0.75).error_pct(1.0) == 0.5
    assert Accuracy(-0.5, -0.75).error_pct(0.5) == -0.75


def test_accuracy_interpolates_linearly_between_pf_half_and_one() -> None:
    accuracy = Accuracy(0.5, -0.75)
    assert accuracy.error_pct(1.0) == pytest.approx(0.5)
    assert accuracy.error_pct(0.75) == pytest.approx(-0.125)  # halfway
    assert accuracy.error_pct(0.5) == pytest.approx(-0.75)
    assert accuracy.error_pct(0.3) == pytest.approx(-0.75)  # clamped below PF 0.5


def test_half_percent_error_makes_12kw_register_12_06kw() -> None:
    m = measure(WYE, WYE_12KW, Accuracy(error_pf1_pct=0.5))
    assert m.net_power_w == pytest.approx(12000.0)  # what flows is unchanged
    assert m.registered_power_mw == 12_060_000


def test_negative_error_lowers_registration() -> None:
    m = measure(ONE_PHASE, Inputs((LineLoad(120.0, 10.0),)), Accuracy(-0.5))
    assert m.registered_power_mw == 1_194_000  # 1200 W x 0.995


def test_pf_half_error_applies_at_pf_half() -> None:
    # 120 V x 100 A x 0.5 = 6000 W, +0.75 % = 6045 W.
    m = measure(ONE_PHASE, Inputs((LineLoad(120.0, 100.0, 0.5),)), Accuracy(0.0, 0.75))
    assert m.registered_power_mw == 6_045_000


def test_interpolated_error_at_pf_three_quarters() -> None:
    # 120 V x 10 A x 0.75 = 900 W; error -0.125 % -> 898.875 W.
    m = measure(ONE_PHASE, Inputs((LineLoad(120.0, 10.0, 0.75),)), Accuracy(0.5, -0.75))
    assert m.registered_power_mw == 898_875


def test_each_element_takes_the_error_of_its_own_power_factor() -> None:
    # CT1 on line 2: element 1 sees PF 0.5 (-2000 W x 1.0075), elements 2 and 3 PF 1.0 (no error).
    inputs = _with_cts(WYE_12KW, CtInstall(2), CtInstall(2), CtInstall(3))
    m = measure(WYE, inputs, Accuracy(0.0, 0.75))
    assert m.registered_power_mw == 5_985_000


# -- balanced_inputs --------------------------------------------------------------------------


def test_balanced_inputs_are_nominal_equal_currents_at_the_highest_frequency() -> None:
    inputs = balanced_inputs(ONE_PHASE, 2.0, power_factor=0.8)
    assert inputs.frequency_hz == 60.0
    assert inputs.cts is None
    (load,) = inputs.lines
    assert load.voltage_v == 120.0
    assert load.current_a == pytest.approx(2000 / (120 * 0.8))
    assert load.power_factor == 0.8
    assert measure(ONE_PHASE, inputs).registered_power_mw == 2_000_000


@pytest.mark.parametrize("power_kw", [-0.001, math.inf, math.nan])
def test_balanced_inputs_reject_negative_or_non_finite_power(power_kw: float) -> None:
    with pytest.raises(OutOfRangeError, match=r"power .* 0 kW or more"):
        balanced_inputs(ONE_PHASE, power_kw)


def test_balanced_inputs_reject_power_beyond_the_cts() -> None:
    # 1K120 with 200 A CTs: 120 V x 220 A = 26.4 kW at most.
    assert balanced_inputs(ONE_PHASE, 26.4).lines[0].current_a == pytest.approx(220.0)
    with pytest.raises(OutOfRangeError) as info:
        balanced_inputs(ONE_PHASE, 27.0)
    assert str(info.value) == (
        "power 27 kW is out of range (allowed: 0-26.4 kW for 1K120 with 200 A CTs (rating + 10 %))"
    )


@pytest.mark.parametrize("pf", [0.0, 0.4, -0.5, 1.5])
def test_balanced_inputs_reject_a_power_factor_out_of_range(pf: float) -> None:
    with pytest.raises(OutOfRangeError, match=r"power factor .*allowed: 0.5-1.0"):
        measure(ONE_PHASE, balanced_inputs(ONE_PHASE, 1.0, power_factor=pf))
