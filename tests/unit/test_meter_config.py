"""Model numbers and configurations (manual section 2.1, Tables 1 and 2; SPEC section 1)."""

from __future__ import annotations

import cmath
import math

import pytest

from meter_model import (
    MeterConfig,
    OutOfRangeError,
    Series,
    Service,
    UnknownModelError,
    parse_model_number,
)
from meter_model.config import (
    HIGH,
    HIGH_LEG,
    LOW,
    SUPPLY_RANGES,
    VOLTAGE_OPTIONS,
    WYE_EXTRA,
    Line,
    VoltageRange,
)


def _phasor(line: Line) -> complex:
    return cmath.rect(line.nominal_v, math.radians(line.angle_deg))


def _line_to_line_v(a: Line, b: Line) -> float:
    return abs(_phasor(a) - _phasor(b))


def _shape(config: MeterConfig) -> list[tuple[str, float, float, VoltageRange]]:
    return [(ln.name, ln.nominal_v, ln.angle_deg, ln.supply) for ln in config.lines]


# -- the model numbers the brief names -------------------------------------------------------


def test_2o208_4w_is_a_series_2000_120_208_wye() -> None:
    config = MeterConfig.from_model("2O208-4W")
    assert config.series is Series.S2000
    assert config.model.variant == "O"
    assert config.model.voltage_code == "208"
    assert config.model.wires == 4
    assert config.model.suffix == ""
    assert config.service is Service.WYE_3P4W
    assert config.voltage.name == "120/208"
    assert _shape(config) == [
        ("L1", 120.0, 0.0, LOW),
        ("L2", 120.0, -120.0, LOW),
        ("L3", 120.0, 120.0, LOW),
    ]
    # 120 V legs 120 degrees apart are 120 * sqrt(3) = 207.85 V line to line: the "208".
    l1, l2, l3 = config.lines
    for a, b in ((l1, l2), (l2, l3), (l3, l1)):
        assert _line_to_line_v(a, b) == pytest.approx(207.846, abs=1e-3)


def test_2o208_4w_is_the_grounded_delta_when_asked() -> None:
    config = MeterConfig.from_model("2O208-4W", service=Service.DELTA_3P4W)
    assert config.series is Series.S2000
    assert config.service is Service.DELTA_3P4W
    assert config.voltage.name == "120/208"
    (l1, l2, l3) = config.lines
    assert (l1.nominal_v, l1.angle_deg, l1.supply) == (120.0, 0.0, LOW)
    assert (l2.nominal_v, l2.angle_deg, l2.supply) == (120.0, 180.0, LOW)
    # The high leg: 208 V to neutral, supply range 175-240 V (Table 2).
    assert l3.nominal_v == pytest.approx(207.846, abs=1e-3)
    assert l3.angle_deg == -90.0
    assert l3.supply == HIGH_LEG == VoltageRange(175.0, 240.0)
    # A 240 V delta: every pair of lines is 240 V apart (sqrt(208^2 + 120^2) = 240).
    for a, b in ((l1, l2), (l2, l3), (l3, l1)):
        assert _line_to_line_v(a, b) == pytest.approx(240.0)


def test_1k120_is_one_phase_two_wire_120v() -> None:
    config = MeterConfig.from_model("1K120")
    assert config.series is Series.S1000
    assert config.model.variant == "K"
    assert config.model.wires is None
    assert config.service is Service.SINGLE_PHASE_2W
    assert config.voltage.name == "120"
    assert _shape(config) == [("L1", 120.0, 0.0, VoltageRange(102.0, 138.0))]


def test_1n240_3w_is_120_240_one_phase_three_wire() -> None:
    config = MeterConfig.from_model("1N240-3W")
    assert config.series is Series.S1000
    assert config.model.variant == "N"
    assert config.service is Service.SINGLE_PHASE_3W
    assert config.voltage.name == "120/240"
    assert _shape(config) == [("L1", 120.0, 0.0, LOW), ("L2", 120.0, 180.0, LOW)]
    assert _line_to_line_v(*config.lines) == pytest.approx(240.0)


@pytest.mark.parametrize(
    ("model", "service", "name", "nominal_v", "angles", "supply"),
    [
        ("1K277", Service.SINGLE_PHASE_2W, "277", 277.0, [0.0], HIGH),
        ("1O208-3W", Service.TWO_PHASE_3W, "120/208", 120.0, [0.0, -120.0], LOW),
        ("1K480", Service.TWO_PHASE_3W, "277/480", 277.0, [0.0, -120.0], HIGH),
        ("2K480-4W", Service.WYE_3P4W, "277/480", 277.0, [0.0, -120.0, 120.0], HIGH),
        ("2N208", Service.WYE_3P4W, "120/208", 120.0, [0.0, -120.0, 120.0], LOW),
    ],
)
def test_other_manual_configurations(
    model: str,
    service: Service,
    name: str,
    nominal_v: float,
    angles: list[float],
    supply: VoltageRange,
) -> None:
    config = MeterConfig.from_model(model)
    assert config.service is service
    assert config.voltage.name == name
    assert [ln.angle_deg for ln in config.lines] == angles
    assert {ln.nominal_v for ln in config.lines} == {nominal_v}
    assert {ln.supply for ln in config.lines} == {supply}


def test_277_480_two_legs_are_480v_apart() -> None:
    assert _line_to_line_v(*MeterConfig.from_model("1K480").lines) == pytest.approx(479.78, 0.01)


def test_supply_ranges_match_tables_1_and_2() -> None:
    assert (LOW.min_v, LOW.max_v) == (102.0, 138.0)
    assert (HIGH.min_v, HIGH.max_v) == (235.0, 320.0)
    assert str(LOW) == "102-138 V"
    assert SUPPLY_RANGES[Series.S1000] == (LOW, HIGH)
    assert set(SUPPLY_RANGES[Series.S2000]) == {LOW, HIGH, WYE_EXTRA, HIGH_LEG}


def test_the_295_400v_range_is_listed_but_no_model_uses_it() -> None:
    assert (WYE_EXTRA.min_v, WYE_EXTRA.max_v) == (295.0, 400.0)
    used = {
        line.supply
        for by_code in VOLTAGE_OPTIONS.values()
        for options in by_code.values()
        for option in options
        for line in option.lines
    }
    assert used == {LOW, HIGH, HIGH_LEG}


# -- parsing ----------------------------------------------------------------------------------


def test_lowercase_and_surrounding_space_are_accepted() -> None:
    assert MeterConfig.from_model("2o208-4w") == MeterConfig.from_model("2O208-4W")
    parsed = parse_model_number("  1n240-3w ")
    assert parsed.text == "1N240-3W"
    assert (parsed.series, parsed.variant, parsed.voltage_code, parsed.wires) == (
        Series.S1000,
        "N",
        "240",
        3,
    )


def test_a_suffix_is_kept_and_not_interpreted() -> None:
    parsed = parse_model_number("2O208-4W-X2-D")
    assert parsed.wires == 4
    assert parsed.suffix == "-X2-D"
    assert MeterConfig.from_model("2O208-4W-X2-D").service is Service.WYE_3P4W


def test_variant_letters_are_kept_but_given_no_meaning() -> None:
    configs = [MeterConfig.from_model(f"2{v}208-4W") for v in "KNO"]
    assert [c.model.variant for c in configs] == ["K", "N", "O"]
    assert configs[0].voltage == configs[1].voltage == configs[2].voltage
    # Whether the LCD shows demand is its own setting, on by default for every variant.
    assert [c.has_demand for c in configs] == [True, True, True]
    assert MeterConfig.from_model("2O208-4W", has_demand=False).has_demand is False


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ("3K208", "expected a series digit 1 or 2"),
        ("1X208", "a letter K, N or O"),
        ("0K120", "expected a series digit 1 or 2"),
        ("1K999", "voltage code 999 is not a Series 1000 option (120, 208, 240, 277, 480)"),
        ("2K120", "voltage code 120 is not a Series 2000 option (208, 480)"),
        ("2N277", "voltage code 277 is not a Series 2000 option"),
        ("2O208-3W", "a Series 2000 208 V meter is not a 3-wire meter"),
        ("2K480-3W", "a Series 2000 480 V meter is not a 3-wire meter"),
        ("1K120-3W", "a Series 1000 120 V meter is not a 3-wire meter"),
        ("1N240-2W", "a Series 1000 240 V meter is not a 2-wire meter"),
        ("1O208-4W", "a Series 1000 208 V meter is not a 4-wire meter"),
        ("1K120-5W", "a Series 1000 120 V meter is not a 5-wire meter"),
        ("2O208-1W", "a Series 2000 208 V meter is not a 1-wire meter"),
        ("2O208-10W", "a Series 2000 208 V meter is not a 10-wire meter"),
        ("garbage", "three-digit voltage code"),
        ("", "e.g. 2O208-4W"),
        ("2O20", "three-digit voltage code"),
        ("2O2080", "three-digit voltage code"),
        ("2O208-4W-", "three-digit voltage code"),
        ("2O208 4W", "three-digit voltage code"),
    ],
)
def test_unknown_models_raise_a_clear_error(model: str, reason: str) -> None:
    with pytest.raises(UnknownModelError) as info:
        MeterConfig.from_model(model)
    assert info.value.model == model
    assert str(info.value).startswith(f"unknown meter model {model!r}: ")
    assert reason in str(info.value)
    with pytest.raises(UnknownModelError):
        parse_model_number(model)


def test_unknown_model_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown meter model"):
        parse_model_number("3K208")


@pytest.mark.parametrize(
    ("model", "service"),
    [
        ("2O208-4W", Service.SINGLE_PHASE_2W),
        ("2O480-4W", Service.DELTA_3P4W),
        ("1N240-3W", Service.TWO_PHASE_3W),
        ("1K120", Service.WYE_3P4W),
    ],
)
def test_a_service_the_model_does_not_offer_raises(model: str, service: Service) -> None:
    with pytest.raises(UnknownModelError, match=f"is not for {service.value}"):
        MeterConfig.from_model(model, service=service)


def test_a_service_the_model_offers_is_accepted() -> None:
    assert MeterConfig.from_model("1K120", service=Service.SINGLE_PHASE_2W).service is (
        Service.SINGLE_PHASE_2W
    )
    assert MeterConfig.from_model("2O208", service=Service.WYE_3P4W).service is Service.WYE_3P4W
    assert MeterConfig.from_model("2O208", service=Service.DELTA_3P4W).service is (
        Service.DELTA_3P4W
    )


# -- ratings ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rating", [0.0, -5.0, math.nan, math.inf])
def test_ct_rating_must_be_a_positive_finite_current(rating: float) -> None:
    with pytest.raises(OutOfRangeError) as info:
        MeterConfig.from_model("1K120", ct_rating_a=rating)
    assert info.value.quantity == "CT rating"
    assert "allowed: a positive primary current" in str(info.value)


def test_ratings_follow_the_ct_and_the_supply() -> None:
    small = MeterConfig.from_model("1K120", ct_rating_a=100)
    assert small.ct_rating_a == 100.0
    assert small.max_current_a == pytest.approx(110.0)  # rating + 10 %
    assert small.max_power_kw == pytest.approx(138 * 110 / 1000)  # 15.18 kW
    assert small.nominal_max_power_kw == pytest.approx(120 * 110 / 1000)  # 13.2 kW
    wye = MeterConfig.from_model("2O208-4W")  # 200 A CTs by default
    assert wye.ct_rating_a == 200.0
    assert wye.max_power_kw == pytest.approx(3 * 138 * 220 / 1000)  # 91.08 kW
    assert wye.nominal_max_power_kw == pytest.approx(3 * 120 * 220 / 1000)  # 79.2 kW


def test_line_frequency_ranges() -> None:
    assert MeterConfig.from_model("1K120").frequency_range_hz == (50.0, 60.0)
    assert MeterConfig.from_model("2O208-4W").frequency_range_hz == (60.0, 60.0)
