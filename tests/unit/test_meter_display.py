"""The LCD cycle, its resolution, and the key switch that resets peak demand (manual 2.3)."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest

from meter_model import Inputs, LcdFrame, LcdItem, LineLoad, Meter, MeterConfig
from meter_model.display import display_period, key_turn_honoured
from meter_model.units import lcd_kwh, round_kw

US = 1_000_000
NJ_PER_WH = 3_600 * 10**9
T0 = 1_764_057_600_123_457  # power-up: an arbitrary, unaligned instant

DEMAND_CYCLE = [
    (0, LcdItem.KWH),
    (6, LcdItem.DEMAND),
    (12, LcdItem.PEAK),
    (18, LcdItem.TEST),
]


def _meter(model: str = "1K120", *, has_demand: bool = True, start_us: int = T0) -> Meter:
    return Meter(MeterConfig.from_model(model, has_demand=has_demand), start_us=start_us)


# -- the cycle --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset_us", "item"),
    [
        (0, LcdItem.KWH),
        (6 * US - 1, LcdItem.KWH),
        (6 * US, LcdItem.DEMAND),
        (12 * US - 1, LcdItem.DEMAND),
        (12 * US, LcdItem.PEAK),
        (18 * US - 1, LcdItem.PEAK),
        (18 * US, LcdItem.TEST),
        (19 * US - 1, LcdItem.TEST),
        (19 * US, LcdItem.KWH),  # and round again
        (25 * US, LcdItem.DEMAND),
        (31 * US, LcdItem.PEAK),
        (37 * US, LcdItem.TEST),
        (19 * 1000 * US + 12 * US, LcdItem.PEAK),
    ],
)
def test_demand_model_cycle(offset_us: int, item: LcdItem) -> None:
    meter = _meter()
    meter.advance(T0 + offset_us)
    frame = meter.display()
    assert frame is not None
    assert frame.item is item
    assert display_period(T0, T0 + offset_us, True).item is item


def test_demand_model_periods_have_their_bounds() -> None:
    period = display_period(T0, T0 + 19 * US + 13 * US, True)
    assert (period.item, period.start_us, period.end_us) == (
        LcdItem.PEAK,
        T0 + 31 * US,
        T0 + 37 * US,
    )


@pytest.mark.parametrize(
    ("offset_us", "item"),
    [
        (0, LcdItem.KWH),
        (17 * US - 1, LcdItem.KWH),
        (17 * US, LcdItem.TEST),
        (18 * US - 1, LcdItem.TEST),
        (18 * US, LcdItem.KWH),
        (35 * US, LcdItem.TEST),
        (36 * US, LcdItem.KWH),
    ],
)
def test_non_demand_model_cycle(offset_us: int, item: LcdItem) -> None:
    meter = _meter(has_demand=False)
    meter.advance(T0 + offset_us)
    frame = meter.display()
    assert frame is not None
    assert frame.item is item
    assert display_period(T0, T0 + offset_us, False).item is item


def test_the_cycle_restarts_at_power_up() -> None:
    meter = _meter()
    meter.apply(T0 + 3 * US, Inputs((LineLoad(0.0),)))
    meter.advance(T0 + 10 * US)
    assert meter.display() is None  # an unpowered meter shows nothing
    meter.apply(T0 + 10 * US, Inputs((LineLoad(120.0),)))  # power-up at +10 s
    frame = meter.display()
    assert frame is not None
    assert frame.item is LcdItem.KWH  # would be DEMAND without the restart
    meter.advance(T0 + 16 * US)
    assert meter.display() == LcdFrame(LcdItem.DEMAND, Decimal("0.00"))
    meter.advance(T0 + 28 * US)
    assert meter.display() == LcdFrame(LcdItem.TEST, None)


def test_staying_powered_does_not_restart_the_cycle() -> None:
    meter = _meter()
    meter.apply_power_kw(T0 + 7 * US, 1.0)
    frame = meter.display()
    assert frame is not None
    assert frame.item is LcdItem.DEMAND


# -- values at LCD resolution -----------------------------------------------------------------


def test_kwh_is_truncated() -> None:
    # 1999.99... Wh in the register shows 1 kWh.
    meter = Meter(MeterConfig.from_model("1K120"), start_us=0, energy_nj=2000 * NJ_PER_WH - 1)
    frame = meter.display()
    assert frame == LcdFrame(LcdItem.KWH, 1)
    assert frame is not None
    assert frame.text == "1 kWh"
    meter = Meter(MeterConfig.from_model("1K120"), start_us=0, energy_nj=2000 * NJ_PER_WH)
    assert meter.display() == LcdFrame(LcdItem.KWH, 2)


@pytest.mark.parametrize(
    ("power_kw", "shown"),
    [(2.005, Decimal("2.01")), (2.0049, Decimal("2.00")), (2.0, Decimal("2.00"))],
)
def test_demand_is_rounded_to_a_hundredth_of_a_kw(power_kw: float, shown: Decimal) -> None:
    meter = _meter(start_us=0)
    meter.apply_power_kw(0, power_kw)
    assert meter.measurement.registered_power_mw == round(power_kw * 1_000_000)
    meter.advance(900 * US)  # 900 s = 47 cycles + 7 s: instantaneous demand on show
    frame = meter.display()
    assert frame == LcdFrame(LcdItem.DEMAND, shown)
    assert frame is not None
    assert frame.text == f"{shown} kW"
    meter.advance(905 * US)  # peak demand on show: the 15-minute window, same power
    assert meter.display() == LcdFrame(LcdItem.PEAK, shown)


def test_peak_shows_zero_before_any_window_closes() -> None:
    meter = _meter()
    meter.advance(T0 + 12 * US)
    assert meter.display() == LcdFrame(LcdItem.PEAK, Decimal("0.00"))


def test_the_test_frame_lights_every_segment() -> None:
    assert LcdFrame(LcdItem.TEST, None).text == "8.8.8.8.8.8"


@pytest.mark.parametrize(
    ("power_kw", "shown"),
    [
        (Fraction(2005, 1000), "2.01"),
        (Fraction(2004999, 10**6), "2.00"),
        (Fraction(1, 3), "0.33"),
        (Fraction(2, 3), "0.67"),
        (Fraction(0), "0.00"),
        (Fraction(-2005, 1000), "-2.01"),
        (Fraction(12345, 10), "1234.50"),
    ],
)
def test_round_kw_halves_away_from_zero(power_kw: Fraction, shown: str) -> None:
    assert str(round_kw(power_kw)) == shown


def test_lcd_kwh_truncates_whole_kwh() -> None:
    assert [lcd_kwh(wh) for wh in (0, 999, 1000, 1999, 2000, 123_456)] == [0, 0, 1, 1, 2, 123]


# -- the key switch ---------------------------------------------------------------------------


def _meter_with_peak() -> Meter:
    """Return a meter powered up at 0, 2 kW since, advanced to 900 s: peak 2.00 kW."""
    meter = _meter(start_us=0)
    meter.apply_power_kw(0, 2.0)
    meter.advance(900 * US)
    assert meter.peak is not None
    assert meter.peak.demand_kw == 2
    return meter


# 900 s is 47 cycles of 19 s (893 s) + 7 s: this cycle shows peak demand in [905 s, 911 s).
PEAK_FROM_US, PEAK_TO_US = 905 * US, 911 * US


def test_a_turn_outside_the_peak_display_leaves_the_peak_alone() -> None:
    meter = _meter_with_peak()
    before = meter.peak
    reset, edges = meter.turn_key(901 * US, 901 * US + 500_000)  # instantaneous demand on show
    assert not reset
    assert meter.peak == before
    assert edges == []  # 2 kW makes an edge every 9 s: at 900 s, then 909 s
    assert meter.t_us == 901 * US + 500_000


def test_a_turn_inside_the_peak_display_within_1s_resets_the_peak() -> None:
    meter = _meter_with_peak()
    meter.advance(PEAK_FROM_US)
    reset, _ = meter.turn_key(PEAK_FROM_US + 200_000, PEAK_FROM_US + 900_000)
    assert reset
    assert meter.peak is None
    assert meter.display() == LcdFrame(LcdItem.PEAK, Decimal("0.00"))


def test_a_turn_of_exactly_1s_resets_the_peak() -> None:
    meter = _meter_with_peak()
    reset, _ = meter.turn_key(PEAK_FROM_US, PEAK_FROM_US + US)
    assert reset
    assert meter.peak is None


def test_a_turn_longer_than_1s_does_not_reset() -> None:
    meter = _meter_with_peak()
    before = meter.peak
    reset, _ = meter.turn_key(PEAK_FROM_US, PEAK_FROM_US + US + 1)
    assert not reset
    assert meter.peak == before


def test_a_turn_running_past_the_peak_display_does_not_reset() -> None:
    # Right while peak demand shows, back once the segment test has begun.
    meter = _meter_with_peak()
    before = meter.peak
    reset, _ = meter.turn_key(PEAK_TO_US - 300_000, PEAK_TO_US + 100_000)
    assert not reset
    assert meter.peak == before
    assert key_turn_honoured(0, PEAK_TO_US - 300_000, PEAK_TO_US - 1, True)
    assert not key_turn_honoured(0, PEAK_TO_US - 300_000, PEAK_TO_US, True)


def test_a_turn_starting_before_the_peak_display_does_not_reset() -> None:
    assert not key_turn_honoured(0, PEAK_FROM_US - 1, PEAK_FROM_US + 500_000, True)
    assert key_turn_honoured(0, PEAK_FROM_US, PEAK_FROM_US + 500_000, True)


def test_a_turn_back_before_right_is_refused() -> None:
    meter = _meter_with_peak()
    with pytest.raises(ValueError, match="comes back after it goes right"):
        meter.turn_key(PEAK_FROM_US + 500_000, PEAK_FROM_US)
    assert not key_turn_honoured(0, PEAK_FROM_US, PEAK_FROM_US, True)  # no turn at all


def test_non_demand_models_ignore_the_key() -> None:
    meter = _meter(start_us=0, has_demand=False)
    meter.apply_power_kw(0, 2.0)
    meter.advance(900 * US)
    before = meter.peak
    assert before is not None  # the register still keeps demand; the LCD does not show it
    for right_us in range(900 * US, 918 * US, US // 2):
        reset, _ = meter.turn_key(right_us, right_us + 400_000)
        assert not reset
    assert meter.peak == before
    assert not key_turn_honoured(0, PEAK_FROM_US, PEAK_FROM_US + 500_000, False)


def test_an_unpowered_meter_ignores_the_key_and_shows_nothing() -> None:
    meter = _meter_with_peak()
    meter.apply(900 * US, Inputs((LineLoad(50.0),)))
    assert meter.display() is None
    before = meter.peak
    reset, _ = meter.turn_key(PEAK_FROM_US, PEAK_FROM_US + 500_000)
    assert not reset
    assert meter.peak == before


def test_several_turns_in_one_peak_display_are_each_honoured() -> None:
    meter = _meter_with_peak()
    assert meter.turn_key(PEAK_FROM_US, PEAK_FROM_US + 500_000)[0]
    assert meter.turn_key(PEAK_FROM_US + US, PEAK_FROM_US + 1_500_000)[0]
    assert meter.peak is None
