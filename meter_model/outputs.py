"""The `10` and `1K` pulse outputs: exact edge times for piecewise-constant power.

Both outputs are 50 % duty toggles of the one register (manual Table 3): `10` toggles every 5 Wh,
`1K` every 500 Wh, both starting at 0 Wh and level 0. Edge n of `10` happens when the register
reaches n * 5 Wh; its level after the edge is n % 2. Every 100th `10` edge is also a `1K` edge.

Times are integer microseconds and energy integer nanojoules, so with power in integer milliwatts
the register at time t is exactly ``energy_nj + power_mw * (t - t0)``. An edge is stamped with the
first whole microsecond at which the register has reached its threshold (a ceiling division).
The scalar path (:func:`segment_edges`) and the vectorised path (:func:`profile_edges`) use the
same integer formula and give identical results.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from meter_model.units import EDGES_10_PER_1K, NJ_PER_WH, WH_PER_EDGE_10, ceil_div

EDGE_10_NJ = WH_PER_EDGE_10 * NJ_PER_WH  # 1.8e13 nJ
CHANNEL_10 = "10"
CHANNEL_1K = "1K"
# Largest energy one vectorised step may hold, so int64 products never overflow.
MAX_STEP_NJ = 2**62

I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Edge:
    """One edge on one output: its time, channel, level after the edge, and ordinal on it."""

    t_us: int
    channel: str
    level: int
    count: int


def edges_10_before(energy_nj: int) -> int:
    """Return how many `10` edges a register holding ``energy_nj`` has produced."""
    return energy_nj // EDGE_10_NJ


def segment_edges(t0_us: int, energy_nj: int, power_mw: int, t1_us: int) -> Iterator[Edge]:
    """Yield the edges of both outputs while ``power_mw`` flows from t0 up to and including t1."""
    if power_mw <= 0 or t1_us <= t0_us:
        return
    end_nj = energy_nj + power_mw * (t1_us - t0_us)
    for n in range(edges_10_before(energy_nj) + 1, edges_10_before(end_nj) + 1):
        t_us = t0_us + ceil_div(n * EDGE_10_NJ - energy_nj, power_mw)
        yield Edge(t_us, CHANNEL_10, n & 1, n)
        if n % EDGES_10_PER_1K == 0:
            m = n // EDGES_10_PER_1K
            yield Edge(t_us, CHANNEL_1K, m & 1, m)


@dataclass(frozen=True)
class ProfileEdges:
    """The edges of a whole profile as arrays: `10` edge times and ordinals, and the end state."""

    t10_us: I64
    n10: I64  # ordinal of each `10` edge since 0 Wh; the level after it is n10 % 2
    end_energy_nj: int

    @property
    def t1k_us(self) -> I64:
        return np.asarray(self.t10_us[self.n10 % EDGES_10_PER_1K == 0], dtype=np.int64)

    @property
    def n1k(self) -> I64:
        return np.asarray(self.n10[self.n10 % EDGES_10_PER_1K == 0] // EDGES_10_PER_1K, np.int64)


def split_steps(
    t_us: I64, power_mw: I64, end_us: int, max_step_nj: int | None = None
) -> tuple[I64, I64, I64]:
    """Return the profile as (start, duration, power) steps holding at most ``max_step_nj`` each.

    Row i holds ``power_mw[i]`` from ``t_us[i]`` until ``t_us[i+1]``; the last until ``end_us``.
    A step is cut only at whole microseconds, which moves no edge: the register is linear within
    a step, so ``t0 + ceil((n·Q − E0) / P)`` is the same from either piece's start. So a profile
    may be run piece by piece, carrying the energy from one piece to the next. The limit is at
    most :data:`MAX_STEP_NJ` (the default), so a step's energy fits int64.
    """
    limit = MAX_STEP_NJ if max_step_nj is None else min(max_step_nj, MAX_STEP_NJ)
    duration: I64 = np.diff(np.append(t_us, np.int64(end_us))).astype(np.int64)
    max_duration = np.where(
        power_mw > 0, np.maximum(1, limit // np.maximum(power_mw, 1)), duration + 1
    )
    pieces = np.maximum(1, -(-duration // max_duration))
    if int(pieces.max(initial=1)) == 1:
        return t_us, duration, power_mw
    index = np.repeat(np.arange(len(t_us)), pieces)
    first = np.cumsum(pieces) - pieces
    k = np.arange(len(index)) - np.repeat(first, pieces)
    step = -(-duration // pieces)
    start = t_us[index] + k * step[index]
    stop = np.minimum(start + step[index], t_us[index] + duration[index])
    return start, stop - start, power_mw[index]


def profile_edges(
    t_us: npt.ArrayLike, power_mw: npt.ArrayLike, end_us: int, start_energy_nj: int = 0
) -> ProfileEdges:
    """Return every edge of a piecewise-constant power profile, vectorised.

    Row i holds ``power_mw[i]`` from ``t_us[i]`` until ``t_us[i+1]``; the last until ``end_us``.
    Times must be strictly increasing and powers non-negative (callers validate their input).
    """
    starts = np.asarray(t_us, dtype=np.int64)
    powers = np.asarray(power_mw, dtype=np.int64)
    if len(starts) == 0:
        return ProfileEdges(np.empty(0, np.int64), np.empty(0, np.int64), start_energy_nj)
    starts, durations, powers = split_steps(starts, powers, end_us)
    step_nj = powers * durations
    # Energy at each step's start as quotient and remainder of EDGE_10_NJ, summed in chunks so
    # no running sum overflows int64.
    quotient = step_nj // EDGE_10_NJ
    remainder = step_nj % EDGE_10_NJ
    q_start = np.empty(len(step_nj) + 1, np.int64)
    r_start = np.empty(len(step_nj) + 1, np.int64)
    q_carry, r_carry = divmod(start_energy_nj, EDGE_10_NJ)
    chunk = 1 << 18  # 2**18 * EDGE_10_NJ < 2**63
    q_start[0], r_start[0] = q_carry, r_carry
    for lo in range(0, len(step_nj), chunk):
        hi = min(lo + chunk, len(step_nj))
        q_sum = np.cumsum(quotient[lo:hi]) + q_carry
        r_sum = np.cumsum(remainder[lo:hi]) + r_carry
        q_start[lo + 1 : hi + 1] = q_sum + r_sum // EDGE_10_NJ
        r_start[lo + 1 : hi + 1] = r_sum % EDGE_10_NJ
        q_carry, r_carry = int(q_start[hi]), int(r_start[hi])
    counts = q_start[1:] - q_start[:-1]
    step = np.repeat(np.arange(len(counts)), counts)
    first_edge = np.cumsum(counts) - counts
    k = np.arange(len(step), dtype=np.int64) - np.repeat(first_edge, counts) + 1
    numerator = k * EDGE_10_NJ - r_start[:-1][step]
    p = powers[step]
    t10 = starts[step] + (numerator + p - 1) // p
    n10 = q_start[:-1][step] + k
    end_energy = q_carry * EDGE_10_NJ + r_carry
    return ProfileEdges(t10, n10, end_energy)
