"""The LCD: what it shows when, at its resolution, and the key switch that resets peak demand.

Manual section 2.3.1: demand models show total kWh, instantaneous demand and peak demand for six
seconds each, then test all segments for one second; models without demand show kWh and test all
segments for one second every 18 seconds. The cycle starts when the meter powers up.

Section 2.3.2: a reset is recognised only while peak demand is displayed, for a turn to the right
and back within one second. Modelling rule: the whole turn (right and back) must fall inside one
peak-demand display period; the reset takes effect on the turn back.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from meter_model.units import US_PER_S


class LcdItem(StrEnum):
    KWH = "kwh"
    DEMAND = "demand"  # instantaneous demand, last 5-minute average
    PEAK = "peak"  # 15-minute rolling peak demand
    TEST = "test"  # all segments on


DEMAND_CYCLE_S: tuple[tuple[LcdItem, int], ...] = (
    (LcdItem.KWH, 6),
    (LcdItem.DEMAND, 6),
    (LcdItem.PEAK, 6),
    (LcdItem.TEST, 1),
)
PLAIN_CYCLE_S: tuple[tuple[LcdItem, int], ...] = ((LcdItem.KWH, 17), (LcdItem.TEST, 1))
KEY_TURN_MAX_US = 1 * US_PER_S


@dataclass(frozen=True)
class LcdPeriod:
    """One display period: the item and its bounds in absolute microseconds."""

    item: LcdItem
    start_us: int
    end_us: int


@dataclass(frozen=True)
class LcdFrame:
    """What the LCD shows: the item, its value at LCD resolution and the text."""

    item: LcdItem
    value: int | Decimal | None

    @property
    def text(self) -> str:
        if self.item is LcdItem.TEST:
            return "8.8.8.8.8.8"
        if self.item is LcdItem.KWH:
            return f"{self.value} kWh"
        return f"{self.value} kW"


def display_period(power_on_us: int, t_us: int, has_demand: bool) -> LcdPeriod:
    """Return the display period shown at ``t_us`` by a meter powered on at ``power_on_us``."""
    cycle = DEMAND_CYCLE_S if has_demand else PLAIN_CYCLE_S
    cycle_us = sum(seconds for _, seconds in cycle) * US_PER_S
    elapsed = t_us - power_on_us
    cycle_start = power_on_us + (elapsed // cycle_us) * cycle_us
    offset = elapsed % cycle_us
    start = 0
    for item, seconds in cycle:
        end = start + seconds * US_PER_S
        if offset < end:
            return LcdPeriod(item, cycle_start + start, cycle_start + end)
        start = end
    raise AssertionError("unreachable: offset is inside the cycle")


def key_turn_honoured(power_on_us: int, right_us: int, back_us: int, has_demand: bool) -> bool:
    """Return whether a key turn right at ``right_us`` and back at ``back_us`` resets the peak."""
    if not has_demand or not 0 < back_us - right_us <= KEY_TURN_MAX_US:
        return False
    period = display_period(power_on_us, right_us, has_demand)
    return period.item is LcdItem.PEAK and back_us < period.end_us
