"""Estimates for unwatched time, as utilities' validation-editing-estimation (VEE) rules make them.

Pure arithmetic over one meter's intervals, oldest first; no I/O, no clock. An interval is
*unwatched* for ``unwatched_s`` of its seconds (nobody counted then); consecutive intervals
with unwatched time form a gap. Its estimate:

- a short gap (at most :data:`SHORT_GAP_S` unwatched in all): linear interpolation between the
  rates of the watched intervals on either side (one side alone when the other is missing),
  method ``linear`` (ESPI reading quality 9);
- a longer gap: per interval, the average energy of the same weekday and time of day (whole UTC
  weeks back) over the previous :data:`HISTORY_WEEKS` weeks where those intervals were wholly
  watched, method ``history`` (ESPI reading quality 8); none where no such week was watched.

Every estimate covers only the unwatched seconds, is a whole number of Wh (half up) and lies in
the physical bounds: 0 to what the meter can carry at its maximum power over those seconds.
It is kept apart from the measured energy; nothing here adds the two.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from meter_model.units import NS_PER_S

SHORT_GAP_S = 3600
HISTORY_WEEKS = 4
WEEK_S = 7 * 86_400
J_PER_WH = 3600

LINEAR = "linear"
HISTORY = "history"


@dataclass(frozen=True, slots=True)
class Watched:
    """One stored interval as the estimate sees it."""

    start_ns: int
    energy_wh: int  # measured
    unwatched_s: int


@dataclass(frozen=True, slots=True)
class Estimate:
    """The estimated energy of an interval's unwatched seconds."""

    start_ns: int
    estimated_wh: int
    method: str  # LINEAR or HISTORY


def _half_up(value: Fraction) -> int:
    return int((value + Fraction(1, 2)).__floor__())


def max_wh(max_power_w: float | None, seconds: int) -> int | None:
    """Return the most energy (whole Wh) the meter can carry in ``seconds``; None: unbounded."""
    if max_power_w is None:
        return None
    return int(Fraction(max_power_w) * seconds / J_PER_WH)


def _bounded(value: Fraction, unwatched_s: int, max_power_w: float | None) -> int:
    wh = max(0, _half_up(value))
    most = max_wh(max_power_w, unwatched_s)
    return wh if most is None else min(wh, most)


def _rate(item: Watched | None, interval_s: int) -> Fraction | None:
    """Return the energy a whole interval would hold at the rate watched in ``item``."""
    if item is None or item.unwatched_s >= interval_s:
        return None
    return Fraction(item.energy_wh * interval_s, interval_s - item.unwatched_s)


def estimate_gaps(
    intervals: Sequence[Watched],
    interval_s: int,
    max_power_w: float | None,
    *,
    short_gap_s: int = SHORT_GAP_S,
    weeks: int = HISTORY_WEEKS,
) -> dict[int, Estimate]:
    """Return the estimate of every interval with unwatched time that can be estimated,
    by interval start. ``intervals`` are one meter's, sorted by start."""
    length_ns = interval_s * NS_PER_S
    by_start = {item.start_ns: item for item in intervals}
    result: dict[int, Estimate] = {}
    i = 0
    while i < len(intervals):
        if intervals[i].unwatched_s <= 0:
            i += 1
            continue
        j = i + 1  # the gap: consecutive intervals (no missing one) with unwatched time
        while (
            j < len(intervals)
            and intervals[j].unwatched_s > 0
            and intervals[j].start_ns == intervals[j - 1].start_ns + length_ns
        ):
            j += 1
        gap = intervals[i:j]
        if sum(item.unwatched_s for item in gap) <= short_gap_s:
            before = _rate(by_start.get(gap[0].start_ns - length_ns), interval_s)
            after = _rate(by_start.get(gap[-1].start_ns + length_ns), interval_s)
            before = after if before is None else before
            after = before if after is None else after
            if before is not None and after is not None:
                n = len(gap)
                for k, item in enumerate(gap, start=1):
                    whole = before + (after - before) * Fraction(k, n + 1)
                    value = whole * item.unwatched_s / interval_s
                    wh = _bounded(value, item.unwatched_s, max_power_w)
                    result[item.start_ns] = Estimate(item.start_ns, wh, LINEAR)
        else:
            for item in gap:
                same = [
                    by_start.get(item.start_ns - w * WEEK_S * NS_PER_S) for w in range(1, weeks + 1)
                ]
                watched = [s.energy_wh for s in same if s is not None and s.unwatched_s == 0]
                if not watched:
                    continue
                value = Fraction(sum(watched), len(watched)) * item.unwatched_s / interval_s
                wh = _bounded(value, item.unwatched_s, max_power_w)
                result[item.start_ns] = Estimate(item.start_ns, wh, HISTORY)
        i = j
    return result


def period_estimate(
    estimates: Sequence[Estimate], bounds_wh: tuple[int, int] | None = None
) -> tuple[int, str] | None:
    """Return the estimate of a period's unwatched time (the sum of its intervals') and its
    method (``linear``, ``history`` or ``linear+history``); None when nothing was estimated.

    ``bounds_wh`` is what the read proves about the unwatched energy (at least the edges the
    pin levels prove missed, at most the meter's maximum power over the gap): the sum is
    kept inside it.
    """
    if not estimates:
        return None
    total = sum(e.estimated_wh for e in estimates)
    if bounds_wh is not None:
        low, high = bounds_wh
        total = min(max(total, low), high)
    methods = sorted({e.method for e in estimates})
    return total, "+".join(methods)
