"""A built-in, realistic household-style load profile, as piecewise-constant power.

Deterministic in time alone (no randomness, no clock): a base load with a small minute-to-minute
wobble, an HVAC compressor cycling on and off with a duty that peaks in the afternoon, a morning
bump and an evening peak. Hours are UTC shifted by ``utc_offset_h``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from meter_model.units import US_PER_S

BASE_MW = 650_000
HVAC_MW = 3_400_000
HVAC_CYCLE_S = 20 * 60
MORNING_MW = 1_200_000
EVENING_MW = 2_600_000
STEP_S = 60
# The most any minute draws: base, the largest wobble, the compressor and the evening peak.
BUILTIN_PEAK_MW = BASE_MW + 150_000 + HVAC_MW + max(MORNING_MW, EVENING_MW)


def _wobble_mw(minute: int) -> int:
    """Return a deterministic pseudo-random wobble of -150..+150 W for a minute."""
    x = (minute * 2_654_435_761) & 0xFFFFFFFF
    x ^= x >> 16
    return (x % 301 - 150) * 1000


def builtin_power_mw(t_us: int, utc_offset_h: float = 0.0) -> int:
    """Return the built-in profile's power in mW during the minute containing ``t_us``."""
    minute = t_us // US_PER_S // STEP_S
    t_s = minute * STEP_S  # constant within the minute, as builtin_segments steps it
    local_s = (t_s + int(utc_offset_h * 3600)) % 86_400
    hour = local_s / 3600.0
    power = BASE_MW + _wobble_mw(minute)
    # HVAC duty 15 % at 03:00 rising to 70 % at 15:00, cycling within 20-minute cycles.
    duty = 0.425 - 0.275 * math.cos((hour - 3.0) / 24.0 * 2.0 * math.pi)
    if (t_s % HVAC_CYCLE_S) < duty * HVAC_CYCLE_S:
        power += HVAC_MW
    if 6.5 <= hour < 8.0:
        power += MORNING_MW
    if 17.0 <= hour < 20.5:
        power += EVENING_MW
    return power


def builtin_segments(
    start_us: int, end_us: int, utc_offset_h: float = 0.0
) -> Iterator[tuple[int, int]]:
    """Yield (t_us, power_mw) for each minute step from ``start_us`` until ``end_us``."""
    step_us = STEP_S * US_PER_S
    t_us = start_us
    while t_us < end_us:
        yield t_us, builtin_power_mw(t_us, utc_offset_h)
        t_us = (t_us // step_us + 1) * step_us
