"""Demand exactly as SPEC section 2 defines it, in one place for the meter and the gateway.

Sub-intervals of length S are aligned to multiples of S since the Unix epoch and half-open
``[start, end)``: energy stamped exactly on a boundary belongs to the later sub-interval.

- Instantaneous demand after sub-interval k closes: ``D5 = E_k / S``.
- Rolling demand of the window ending with sub-interval k: ``D15 = (E_k-2 + E_k-1 + E_k) / W``.
  Sub-intervals with no data (before counting started, or a gap) count as 0 and mark the window
  partial; so does a sub-interval that was only partly observed.
- Peak demand is the largest D15 since the last reset, with the end time of its window; a later
  window must be strictly larger to replace it.

Energy comes in any integer unit (nanojoules in the meter model, Wh in the gateway); the caller
says how many joules one unit is, and demands are exact fractions of a kW.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from meter_model.units import US_PER_S


@dataclass(frozen=True)
class DemandSettings:
    """Sub-interval length S and demand window W, in seconds; S must divide W."""

    sub_interval_s: int = 300
    window_s: int = 900

    def __post_init__(self) -> None:
        if self.sub_interval_s <= 0 or self.window_s <= 0:
            raise ValueError("sub-interval and window must be positive")
        if self.window_s % self.sub_interval_s:
            raise ValueError(
                f"sub-interval {self.sub_interval_s} s must divide window {self.window_s} s"
            )

    @property
    def sub_interval_us(self) -> int:
        return self.sub_interval_s * US_PER_S

    @property
    def sub_intervals_per_window(self) -> int:
        return self.window_s // self.sub_interval_s


@dataclass(frozen=True, slots=True)
class SubInterval:
    """A closed sub-interval: its bounds, its energy and whether it was wholly observed."""

    start_us: int
    end_us: int
    energy: int
    complete: bool


@dataclass(frozen=True, slots=True)
class Peak:
    """A peak demand and the end time of its window."""

    demand_kw: Fraction
    window_end_us: int
    partial: bool


class DemandMeter:
    """Accumulate energy into sub-intervals and track instantaneous, rolling and peak demand."""

    def __init__(self, settings: DemandSettings, joules_per_unit: Fraction, start_us: int) -> None:
        self.settings = settings
        self._joules_per_unit = Fraction(joules_per_unit)
        s_us = settings.sub_interval_us
        self._index = start_us // s_us
        self._energy = 0
        # A sub-interval that began before counting started was only partly observed.
        self._complete = start_us % s_us == 0
        self._window: deque[SubInterval | None] = deque(
            [None] * settings.sub_intervals_per_window, maxlen=settings.sub_intervals_per_window
        )
        self._window_energy = 0
        self._peak_energy: int | None = None
        self.last: SubInterval | None = None
        self.peak: Peak | None = None
        # When a list, every closed sub-interval is appended to it (the gateway persists them).
        self.closed_log: list[SubInterval] | None = None

    # -- state -------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Return the open sub-interval, the window and the peak as JSON-able data.

        Settings and the energy unit are not included, nor ``closed_log`` (its owner keeps it).
        """
        peak = self.peak
        return {
            "index": self._index,
            "energy": self._energy,
            "complete": self._complete,
            "window": [_sub_state(sub) for sub in self._window],
            "window_energy": self._window_energy,
            "peak_energy": self._peak_energy,
            "peak": None
            if peak is None
            else [
                peak.demand_kw.numerator,
                peak.demand_kw.denominator,
                peak.window_end_us,
                peak.partial,
            ],
            "last": _sub_state(self.last),
        }

    @classmethod
    def from_state(
        cls, settings: DemandSettings, joules_per_unit: Fraction, state: dict[str, Any]
    ) -> DemandMeter:
        """Return a demand meter as :meth:`to_state` left it."""
        meter = cls(settings, joules_per_unit, state["index"] * settings.sub_interval_us)
        meter._index = state["index"]
        meter._energy = state["energy"]
        meter._complete = bool(state["complete"])
        meter._window = deque(
            (_sub_from_state(sub) for sub in state["window"]), maxlen=meter._window.maxlen
        )
        meter._window_energy = state["window_energy"]
        meter._peak_energy = state["peak_energy"]
        peak = state["peak"]
        if peak is not None:
            meter.peak = Peak(Fraction(peak[0], peak[1]), peak[2], bool(peak[3]))
        meter.last = _sub_from_state(state["last"])
        return meter

    @property
    def current_start_us(self) -> int:
        return self._index * self.settings.sub_interval_us

    @property
    def current_energy(self) -> int:
        return self._energy

    def add(self, t_us: int, energy: int) -> list[SubInterval]:
        """Add energy stamped at ``t_us``; return the sub-intervals this closed, oldest first."""
        closed = self.close_through(t_us)
        self._energy += energy
        return closed

    def close_through(self, t_us: int, *, observed: bool = True) -> list[SubInterval]:
        """Close every sub-interval that ends at or before ``t_us``; return them, oldest first.

        Sub-intervals after the current one received no energy: with ``observed`` they were
        watched and empty (complete zeros), without it they are a gap (partial zeros). Once a
        whole window of them has closed nothing more can change but the window's end, so a
        longer stretch returns its first and last windows' worth only.
        """
        target = t_us // self.settings.sub_interval_us
        closed: list[SubInterval] = []
        if target <= self._index:
            return closed
        closed.append(self._close(complete=self._complete))
        n = self.settings.sub_intervals_per_window
        while self._index < target:
            if len(closed) > n and self._index < target - n:
                self._index = target - n  # the window holds only zeros by now
            closed.append(self._close(complete=observed))
        return closed

    def add_many(self, sub_index: npt.ArrayLike, energy: npt.ArrayLike) -> None:
        """Add energy to many sub-intervals at once, as ``add`` would one by one.

        ``sub_index`` holds sub-interval numbers (start // S), strictly increasing, none before
        the current one. Vectorised: the rolling windows and the peak come from cumulative sums.
        """
        index = np.asarray(sub_index, np.int64)
        values = np.asarray(energy, np.int64)
        if len(index) == 0:
            return
        # Energy stamped before the current sub-interval lands in it, as ``add`` would do.
        early = index <= self._index
        if early.any():
            self._energy += int(values[early].sum())
            index, values = index[~early], values[~early]
        if len(index) == 0:
            return
        span = int(index[-1]) - self._index  # sub-intervals to close
        if span > 1_000_000:  # a stretch of years: the one-by-one path skips the quiet part
            for i, e in zip(index.tolist(), values.tolist(), strict=True):
                self.add(i * self.settings.sub_interval_us, e)
            return
        n = self.settings.sub_intervals_per_window
        closed = np.zeros(span, np.int64)
        closed[0] = self._energy
        inner = index[:-1] - self._index
        closed[inner] += values[:-1]
        complete = np.ones(span, np.bool_)
        complete[0] = self._complete
        history = list(self._window)
        series = np.concatenate(
            [np.array([sub.energy if sub else 0 for sub in history], np.int64), closed]
        )
        ok = np.concatenate([np.array([bool(sub and sub.complete) for sub in history]), complete])
        sums = np.cumsum(np.concatenate([[0], series]))
        windows = sums[n:] - sums[:-n]  # windows[j] ends with series[j + n - 1]
        windows = windows[1:]  # the first ends with the last already-closed sub-interval
        best = int(windows.max())
        s_us = self.settings.sub_interval_us
        if self._peak_energy is None or best > self._peak_energy:
            j = int(np.argmax(windows))
            self._peak_energy = best
            end_us = (self._index + j + 1) * s_us
            partial = not bool(ok[j + 1 : j + 1 + n].all())
            self.peak = Peak(self._kw(best, self.settings.window_s), end_us, partial)
        first = self._index
        if self.closed_log is not None:
            self.closed_log.extend(
                SubInterval((first + k) * s_us, (first + k + 1) * s_us, int(e), bool(c))
                for k, (e, c) in enumerate(zip(closed.tolist(), complete.tolist(), strict=True))
            )
        for k in range(max(0, span - n), span):
            start = (first + k) * s_us
            self._window.append(SubInterval(start, start + s_us, int(closed[k]), bool(complete[k])))
        self._window_energy = int(windows[-1])
        self.last = self._window[-1]
        self._index = int(index[-1])
        self._energy = int(values[-1])
        self._complete = True

    def mark_gap(self) -> None:
        """Mark the current sub-interval as not wholly observed (an outage, a restart)."""
        self._complete = False

    def _close(self, *, complete: bool) -> SubInterval:
        s_us = self.settings.sub_interval_us
        start = self._index * s_us
        sub = SubInterval(start, start + s_us, self._energy, complete)
        if self.closed_log is not None:
            self.closed_log.append(sub)
        evicted = self._window[0]
        self._window.append(sub)
        self._window_energy += sub.energy - (evicted.energy if evicted is not None else 0)
        self.last = sub
        self._index += 1
        self._energy = 0
        self._complete = True
        # Every window has the same length, so comparing energies compares demands exactly.
        if self._peak_energy is None or self._window_energy > self._peak_energy:
            self._peak_energy = self._window_energy
            self.peak = Peak(self.window_demand_kw(), sub.end_us, self.window_partial())
        return sub

    def _kw(self, energy: int, seconds: int) -> Fraction:
        return energy * self._joules_per_unit / (seconds * 1000)

    def instantaneous_kw(self) -> Fraction:
        """Return D5 of the last closed sub-interval (0 before any has closed)."""
        if self.last is None:
            return Fraction(0)
        return self._kw(self.last.energy, self.settings.sub_interval_s)

    def window_demand_kw(self) -> Fraction:
        """Return D15 of the window ending with the last closed sub-interval."""
        return self._kw(self._window_energy, self.settings.window_s)

    def window_partial(self) -> bool:
        return any(sub is None or not sub.complete for sub in self._window)

    def reset_peak(self) -> Peak | None:
        """Clear the peak; return the one cleared."""
        cleared, self.peak = self.peak, None
        self._peak_energy = None
        return cleared


def _sub_state(sub: SubInterval | None) -> list[int] | None:
    if sub is None:
        return None
    return [sub.start_us, sub.end_us, sub.energy, int(sub.complete)]


def _sub_from_state(data: list[int] | None) -> SubInterval | None:
    if data is None:
        return None
    return SubInterval(data[0], data[1], data[2], bool(data[3]))
