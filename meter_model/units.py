"""Integer units shared by the meter model and the gateway, and the LCD's rounding.

The model keeps time in integer microseconds (``t_us``), power in integer milliwatts
(``power_mw``) and energy in integer nanojoules (``energy_nj``), so that
``power_mw * dt_us == energy_nj`` exactly and no energy is ever accumulated in floats.
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

US_PER_S = 1_000_000
NS_PER_US = 1_000
NS_PER_S = 1_000_000_000  # the gateway's times are integer ns since the epoch
NJ_PER_WH = 3_600 * 1_000_000_000  # 1 Wh = 3600 J
WH_PER_EDGE_10 = 5  # `10` output: 10 Wh per full cycle, so every edge is 5 Wh
WH_PER_EDGE_1K = 500  # `1K` output: 1 kWh per full cycle, so every edge is 500 Wh
EDGES_10_PER_1K = WH_PER_EDGE_1K // WH_PER_EDGE_10


def kw_from_energy(energy_j: Fraction | int, duration_s: int) -> Fraction:
    """Return the average power in kW of ``energy_j`` joules over ``duration_s`` seconds."""
    return Fraction(energy_j) / (duration_s * 1000)


def round_kw(power_kw: Fraction) -> Decimal:
    """Round a power exactly to the LCD's 0.01 kW resolution, halves away from zero."""
    centi_kw = abs(power_kw) * 100
    rounded = math.floor(centi_kw + Fraction(1, 2))
    return Decimal(rounded if power_kw >= 0 else -rounded).scaleb(-2)


def lcd_kwh(energy_wh: int) -> int:
    """Return the LCD's kWh reading: the register truncated to whole kWh."""
    return energy_wh // 1000


def ceil_div(numerator: int, denominator: int) -> int:
    """Return ceil(numerator / denominator) for a positive denominator, exactly."""
    return -(-numerator // denominator)
