"""Interval data: energy per UTC-aligned interval of length I, with a quality mark.

Quality: ``gap`` where nobody watched the whole interval (the gateway was down, no log covered
it: SPEC 2, never ``complete`` with 0 Wh), or where edges were inferred, glitches removed, noise
seen or a cross-check failed in it; else ``partial`` where the interval was not wholly observed
(counting started or stopped inside it, or the gateway was down for part of it); else
``complete``. Gap wins over partial: it says more about whether to trust the figure. Each interval
also carries how many of its seconds nobody watched (``unwatched_s``), for an estimate.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from gateway.core.arrays import runs
from meter_model.units import NS_PER_S, round_kw

I64 = npt.NDArray[np.int64]
J_PER_WH = 3600
DAY_NS = 86_400 * NS_PER_S


class Quality:
    COMPLETE = "complete"
    PARTIAL = "partial"
    GAP = "gap"


# An IntervalBatch keeps each quality as one byte (a code into this tuple), not a Python string:
# a log that says it observed until 2199 has millions of empty intervals.
QUALITIES = (Quality.COMPLETE, Quality.PARTIAL, Quality.GAP)
_QUALITY_TEXT = np.array(QUALITIES)


@dataclass(frozen=True, slots=True)
class Interval:
    """One closed interval of one meter."""

    meter: str
    start_ns: int
    end_ns: int
    energy_wh: int
    edges: int
    quality: str
    flags: tuple[str, ...] = ()
    unwatched_s: int = 0  # seconds of the interval nobody watched (rounded up)

    @property
    def demand_kw(self) -> Fraction:
        return Fraction(self.energy_wh * J_PER_WH * NS_PER_S, (self.end_ns - self.start_ns) * 1000)

    @property
    def demand_kw_lcd(self) -> float:
        return float(round_kw(self.demand_kw))


class IntervalBatch(Sequence[Interval]):
    """Intervals closed together, kept as columns; an :class:`Interval` is made when asked."""

    def __init__(
        self,
        meter: str,
        length_ns: int,
        start_ns: I64,
        edges: I64,
        wh_per_edge: int,
        quality: npt.NDArray[np.uint8],
        flags: dict[int, dict[str, int]],
        first_index: int,
        unwatched_ns: I64 | None = None,
    ) -> None:
        self.meter = meter
        self.length_ns = length_ns
        self.start_ns = start_ns
        self.edges = edges
        self.wh_per_edge = wh_per_edge
        self.quality = quality
        self._flags = flags
        self._first_index = first_index
        if unwatched_ns is None:
            unwatched_ns = np.zeros(len(start_ns), np.int64)
        self.unwatched_ns = unwatched_ns

    @property
    def energy_wh(self) -> I64:
        return self.edges * self.wh_per_edge

    def __len__(self) -> int:
        return len(self.start_ns)

    @overload
    def __getitem__(self, i: int) -> Interval: ...

    @overload
    def __getitem__(self, i: slice) -> list[Interval]: ...

    def __getitem__(self, i: int | slice) -> Interval | list[Interval]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        start = int(self.start_ns[i])
        n = int(self.edges[i])
        return Interval(
            self.meter,
            start,
            start + self.length_ns,
            n * self.wh_per_edge,
            n,
            QUALITIES[self.quality[i]],
            tuple(sorted(self._flags.get(self._first_index + i, ()))),
            -(-int(self.unwatched_ns[i]) // NS_PER_S),
        )

    def extend(self, later: IntervalBatch) -> IntervalBatch:
        """Return this batch followed by ``later`` (the intervals that closed after it)."""
        if len(later) == 0:
            return self
        if len(self) == 0:
            return later
        return IntervalBatch(
            self.meter,
            self.length_ns,
            np.concatenate([self.start_ns, later.start_ns]),
            np.concatenate([self.edges, later.edges]),
            self.wh_per_edge,
            np.concatenate([self.quality, later.quality]),
            {**self._flags, **later._flags},
            self._first_index,
            np.concatenate([self.unwatched_ns, later.unwatched_ns]),
        )

    def csv_lines(self, lo: int = 0, hi: int | None = None) -> list[str]:
        """Return ``meter,start,end,energy_wh,edges,demand_kw,quality`` lines, vectorised.

        Intervals ``lo`` to ``hi`` (all by default): a caller writing many asks in slices, to
        keep memory flat. Times as ISO 8601 UTC; demand rounded exactly as :func:`round_kw`
        rounds (halves up).
        """
        hi = len(self) if hi is None else min(hi, len(self))
        if hi <= lo:
            return []
        starts = self.start_ns[lo:hi]
        whole_seconds = not np.any(starts % NS_PER_S) and not self.length_ns % NS_PER_S

        def iso(t_ns: I64) -> list[str]:
            moments = t_ns.astype("datetime64[ns]")
            if whole_seconds:
                text = np.datetime_as_string(moments, unit="s")
            else:
                text = np.datetime_as_string(moments, unit="us")
            return [f"{t}Z" for t in text.tolist()]

        energy = self.edges[lo:hi] * self.wh_per_edge
        length_s2 = 2 * self.length_ns  # kW x 100 = E * 360 / L_s, rounded half up
        centi = (2 * energy * 360 * NS_PER_S + self.length_ns) // length_s2
        return [
            f"{self.meter},{start},{end},{wh},{n},{c // 100}.{c % 100:02d},{q}\n"
            for start, end, wh, n, c, q in zip(
                iso(starts),
                iso(starts + self.length_ns),
                energy.tolist(),
                self.edges[lo:hi].tolist(),
                centi.tolist(),
                _QUALITY_TEXT[self.quality[lo:hi]].tolist(),
                strict=True,
            )
        ]

    def compact(self) -> Iterator[Interval]:
        """Yield the intervals, each run of at least a day of empty ones (no edge, no flag, and
        all watched or all not) as one :class:`Interval` spanning the run.

        Empty time is held as ranges, not as rows (issue 17): a log that says it watched from
        1970 to 2025 would otherwise make two million intervals, each a Python object, a
        database row and an MQTT message.
        """
        n = len(self)
        if n == 0:
            return
        length = self.length_ns
        min_run = max(2, -(-DAY_NS // length))
        flagged = np.zeros(n, bool)
        for index in self._flags:
            if 0 <= index - self._first_index < n:
                flagged[index - self._first_index] = True
        uniform = (self.unwatched_ns == 0) | (self.unwatched_ns >= length)
        quiet = (self.edges == 0) & ~flagged & uniform
        # Runs of equal (quiet, quality): a new run where either changes.
        key = np.where(quiet, self.quality.astype(np.int64), -1)
        cuts = np.flatnonzero(np.diff(key)) + 1
        bounds = np.concatenate([[0], cuts, [n]]).tolist()
        for lo, hi in itertools.pairwise(bounds):
            if key[lo] >= 0 and hi - lo >= min_run:
                start = int(self.start_ns[lo])
                end = int(self.start_ns[hi - 1]) + length
                unwatched = int(self.unwatched_ns[lo:hi].sum())
                yield Interval(
                    self.meter,
                    start,
                    end,
                    0,
                    0,
                    QUALITIES[int(self.quality[lo])],
                    (),
                    -(-unwatched // NS_PER_S),
                )
            else:
                yield from (self[i] for i in range(lo, hi))

    def flag_counts(self) -> list[tuple[int, dict[str, int]]]:
        """Return (interval start, {flag: count}) for every flagged interval, in order."""
        length = self.length_ns
        return [(index * length, counts) for index, counts in sorted(self._flags.items())]


@dataclass
class IntervalAccumulator:
    """Collect each channel's edges and the meter's flags into intervals; close them as time
    passes (live) or at the end (replay). The register channel is named when they close."""

    meter: str
    length_s: int
    wh_per_edge: dict[str, int]
    start_ns: int  # observation start
    _edges: dict[str, dict[int, int]] = field(default_factory=dict)
    _flags: dict[int, dict[str, int]] = field(default_factory=dict)  # index -> flag -> count
    _next_index: int = 0  # first interval not yet closed
    _gaps: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._next_index = self.start_ns // self.length_ns
        self._edges = {channel: {} for channel in self.wh_per_edge}

    def to_state(self) -> dict[str, Any]:
        """Return the open intervals as JSON-able data (settings and start are not included)."""
        return {
            "next_index": self._next_index,
            "edges": {ch: [[k, v] for k, v in c.items()] for ch, c in self._edges.items()},
            "flags": [[k, dict(v)] for k, v in self._flags.items()],
            "gaps": [[a, b] for a, b in self._gaps],
        }

    @classmethod
    def from_state(
        cls,
        state: dict[str, Any],
        meter: str,
        length_s: int,
        wh_per_edge: dict[str, int],
        start_ns: int,
    ) -> IntervalAccumulator:
        """Return an accumulator as :meth:`to_state` left it."""
        acc = cls(meter, length_s, wh_per_edge, start_ns)
        acc._next_index = state["next_index"]
        acc._edges = {ch: {} for ch in wh_per_edge}
        acc._edges.update({ch: {k: v for k, v in items} for ch, items in state["edges"].items()})
        acc._flags = {k: dict(v) for k, v in state["flags"]}
        acc._gaps = [(a, b) for a, b in state["gaps"]]
        return acc

    @property
    def length_ns(self) -> int:
        return self.length_s * NS_PER_S

    def add(self, channel: str, t_ns: I64) -> None:
        """Count a channel's edges at these times (sorted)."""
        if len(t_ns) == 0:
            return
        counts = self._edges[channel]
        # An edge stamped in an interval already closed (the clock stepped back) counts in the
        # first open one: energy is never dropped.
        index, n = runs(np.maximum(t_ns // self.length_ns, self._next_index))
        for i, c in zip(index.tolist(), n.tolist(), strict=True):
            counts[i] = counts.get(i, 0) + c

    def flag(self, t_ns: I64 | list[int], flag: str) -> None:
        index = np.maximum(np.asarray(t_ns, np.int64) // self.length_ns, self._next_index)
        values, counts = np.unique(index, return_counts=True)
        for i, n in zip(values.tolist(), counts.tolist(), strict=True):
            per_flag = self._flags.setdefault(i, {})
            per_flag[flag] = per_flag.get(flag, 0) + n

    def mark_unobserved(self, from_ns: int, to_ns: int) -> None:
        """Record a stretch when nothing was watched: intervals it covers whole become gap,
        those it covers in part partial."""
        if to_ns > from_ns:
            self._gaps = _merged([*self._gaps, (from_ns, to_ns)])

    def open_quality(self, now_ns: int) -> str:
        """Return the quality the interval now open would have if it closed now."""
        index = now_ns // self.length_ns
        start = index * self.length_ns
        if self._flags.get(index):
            return Quality.GAP
        unobserved = self.start_ns > start or any(a < now_ns and b > start for a, b in self._gaps)
        return Quality.PARTIAL if unobserved else Quality.COMPLETE

    def close_through(self, now_ns: int, register: str) -> IntervalBatch:
        """Close every interval that ended at or before ``now_ns``."""
        return self._close(now_ns // self.length_ns, None, register)

    def finish(self, end_ns: int, register: str) -> IntervalBatch:
        """Close every remaining interval; observation ended at ``end_ns``."""
        keys = [k for counts in self._edges.values() for k in counts] + list(self._flags)
        last = max([(end_ns - 1) // self.length_ns, self._next_index - 1, *keys])
        return self._close(last + 1, end_ns, register)

    def _close(self, stop: int, end_ns: int | None, register: str) -> IntervalBatch:
        first = self._next_index
        stop = max(stop, first)
        self._next_index = stop
        length = self.length_ns
        index = np.arange(first, stop, dtype=np.int64)
        edges = np.zeros(len(index), np.int64)
        for counts in self._edges.values():
            done = [k for k in counts if k < stop]
            for k in done:
                c = counts.pop(k)
                if counts is self._edges[register]:
                    edges[k - first] = c
        flags: dict[int, dict[str, int]] = {}
        for k in [k for k in self._flags if k < stop]:
            flags[k] = self._flags.pop(k)
        starts = index * length
        ends = starts + length
        # Nobody watched before the observation began, after it ended, nor in a gap (the gaps
        # are merged, so no second is counted twice).
        unwatched = np.clip(self.start_ns - starts, 0, length)
        if end_ns is not None:
            unwatched += np.clip(ends - np.maximum(end_ns, starts), 0, length)
        for gap_from, gap_to in self._gaps:
            lo = np.maximum(starts, max(gap_from, self.start_ns))
            hi = np.minimum(ends, gap_to if end_ns is None else min(gap_to, end_ns))
            unwatched += np.clip(hi - lo, 0, length)
        self._gaps = [(a, b) for a, b in self._gaps if b > stop * length]
        # QUALITIES codes: complete 0, partial 1, gap 2.
        # An edge on the instant watching ended makes its interval partial, not a gap.
        unseen = (unwatched >= length) & (edges == 0)
        quality = np.where(unwatched == 0, 0, np.where(unseen, 2, 1)).astype(np.uint8)
        for i in flags:
            quality[i - first] = 2
        return IntervalBatch(
            self.meter,
            length,
            starts,
            edges,
            self.wh_per_edge[register],
            quality,
            flags,
            first,
            unwatched,
        )


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Return ``[from, to)`` spans sorted, overlapping and touching ones joined."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out
