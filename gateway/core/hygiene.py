"""Edge hygiene for one channel (SPEC section 3): duplicates, glitches, missed edges.

In this order, on edges sorted by (time, level):

1. An exact duplicate of the previous edge is dropped and counted.
2. A level held for less than the glitch width is a glitch: the edge that set it and the edge that
   ended it are both dropped, and it counts as one glitch. Scanning in order, an accepted edge is
   popped by the next edge when that one comes within the glitch width, and the next edge is then
   compared with the edge before the popped one, which is always at least the glitch width older.
   So only the newest accepted edge is ever at risk, and it is *pending* until an edge comes at
   least the glitch width after it, time passes beyond it, or the input ends.
3. A confirmed edge whose level equals the previous confirmed level means one edge was missed in
   between: it is counted back as an inferred edge, stamped midway between the two (but not before
   the period holding the edge that revealed it, see ``period_ns``), and flagged.
   The very first edge after start has no previous level unless one was read from the line (a GPIO
   pin's level at start), so a line already high at start is not double counted.

:class:`ChannelHygiene` does this edge by edge (live) and on whole sorted arrays (replay), with the
same state in between, and both give identical results: a property test holds them to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]
DEFAULT_GLITCH_NS = 2_000_000  # 2 ms


@dataclass
class Cleaned:
    """What one step of hygiene yields: counted edges and the anomalies found."""

    t_ns: I64 = field(default_factory=lambda: np.empty(0, np.int64))  # counted edges, in order
    inferred: npt.NDArray[np.bool_] = field(default_factory=lambda: np.empty(0, np.bool_))
    real_t_ns: I64 = field(default_factory=lambda: np.empty(0, np.int64))  # confirmed real edges
    glitch_t_ns: I64 = field(default_factory=lambda: np.empty(0, np.int64))  # popped edge times
    duplicates: int = 0


def _concat(parts: list[Cleaned]) -> Cleaned:
    if not parts:
        return Cleaned()
    if len(parts) == 1:
        return parts[0]
    return Cleaned(
        np.concatenate([p.t_ns for p in parts]),
        np.concatenate([p.inferred for p in parts]),
        np.concatenate([p.real_t_ns for p in parts]),
        np.concatenate([p.glitch_t_ns for p in parts]),
        sum(p.duplicates for p in parts),
    )


@dataclass
class ChannelHygiene:
    """The hygiene state of one channel, carried between edges and between blocks."""

    glitch_ns: int = DEFAULT_GLITCH_NS
    # The shortest period results are kept in (the demand sub-interval; 0: none). Live, the
    # periods before the one holding the revealing edge may be closed and published by the
    # time a repeated level shows an edge was missed: its inferred edge is stamped no earlier
    # than that period's start, so every path (live or replay, however the input is chunked)
    # puts it in the same period.
    period_ns: int = 0
    level: int | None = None  # level after the last confirmed edge (or read at start)
    last_t_ns: int | None = None  # time of the last confirmed edge
    pending_t_ns: int | None = None
    pending_level: int = 0
    last_raw: tuple[int, int] | None = None  # (t_ns, level) of the last edge seen, for duplicates
    duplicates: int = 0
    glitches: int = 0
    inferred: int = 0
    confirmed: int = 0

    # -- state -------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Return the channel's hygiene state as JSON-able data (the glitch width is a setting)."""
        return {
            "level": self.level,
            "last_t_ns": self.last_t_ns,
            "pending_t_ns": self.pending_t_ns,
            "pending_level": self.pending_level,
            "last_raw": None if self.last_raw is None else list(self.last_raw),
            "duplicates": self.duplicates,
            "glitches": self.glitches,
            "inferred": self.inferred,
            "confirmed": self.confirmed,
        }

    @classmethod
    def from_state(
        cls, state: dict[str, Any], glitch_ns: int, period_ns: int = 0
    ) -> ChannelHygiene:
        """Return a channel's hygiene as :meth:`to_state` left it."""
        last_raw = state["last_raw"]
        return cls(
            glitch_ns,
            period_ns,
            level=state["level"],
            last_t_ns=state["last_t_ns"],
            pending_t_ns=state["pending_t_ns"],
            pending_level=state["pending_level"],
            last_raw=None if last_raw is None else (int(last_raw[0]), int(last_raw[1])),
            duplicates=state["duplicates"],
            glitches=state["glitches"],
            inferred=state["inferred"],
            confirmed=state["confirmed"],
        )

    @property
    def last_level(self) -> int | None:
        """Return the level the line was last seen at, its pending edge included."""
        return self.pending_level if self.pending_t_ns is not None else self.level

    # -- shared ------------------------------------------------------------------------------

    def _confirm(self, t_ns: I64, levels: npt.NDArray[np.int8]) -> Cleaned:
        """Count confirmed edges, inferring one missed edge before each repeated level."""
        if len(t_ns) == 0:
            return Cleaned()
        if (self.level is None or int(levels[0]) != self.level) and not np.any(
            levels[1:] == levels[:-1]
        ):
            # Levels alternate (the usual case): nothing to infer, no full-length temporaries.
            self.level = int(levels[-1])
            self.last_t_ns = int(t_ns[-1])
            self.confirmed += len(t_ns)
            return Cleaned(t_ns, np.zeros(len(t_ns), np.bool_), t_ns)
        prev_level = np.empty(len(levels), np.int16)
        prev_level[1:] = levels[:-1]
        prev_level[0] = -1 if self.level is None else self.level
        prev_t = np.empty(len(t_ns), np.int64)
        prev_t[1:] = t_ns[:-1]
        prev_t[0] = t_ns[0] if self.last_t_ns is None else self.last_t_ns
        missed = levels == prev_level
        revealed_at = t_ns[missed]
        midpoints = prev_t[missed] + (revealed_at - prev_t[missed]) // 2
        if self.period_ns:
            midpoints = np.maximum(midpoints, revealed_at // self.period_ns * self.period_ns)
        # Inferred edges go just before the edge that revealed them.
        repeats = 1 + missed.astype(np.int64)
        out_t = np.repeat(t_ns, repeats)
        out_inferred = np.zeros(len(out_t), np.bool_)
        slots = (np.cumsum(repeats) - repeats)[missed]
        out_t[slots] = midpoints
        out_inferred[slots] = True
        self.level = int(levels[-1])
        self.last_t_ns = int(t_ns[-1])
        self.inferred += int(missed.sum())
        self.confirmed += len(t_ns)
        return Cleaned(out_t, out_inferred, t_ns.copy())

    # -- streaming ---------------------------------------------------------------------------

    def push(self, t_ns: int, level: int) -> Cleaned:
        """Take one edge (in (time, level) order); return what it confirmed."""
        raw = (t_ns, level)
        if raw == self.last_raw:
            self.duplicates += 1
            return Cleaned(duplicates=1)
        self.last_raw = raw
        if self.pending_t_ns is not None and t_ns - self.pending_t_ns < self.glitch_ns:
            popped = self.pending_t_ns
            self.pending_t_ns = None
            self.glitches += 1
            return Cleaned(glitch_t_ns=np.array([popped], np.int64))
        out = self._flush_pending()
        self.pending_t_ns, self.pending_level = t_ns, level
        return out

    def _flush_pending(self) -> Cleaned:
        if self.pending_t_ns is None:
            return Cleaned()
        t, lv = self.pending_t_ns, self.pending_level
        self.pending_t_ns = None
        return self._confirm(np.array([t], np.int64), np.array([lv], np.int8))

    def advance(self, now_ns: int) -> Cleaned:
        """Confirm the pending edge once no edge can come within the glitch width of it."""
        if self.pending_t_ns is not None and now_ns - self.pending_t_ns >= self.glitch_ns:
            return self._flush_pending()
        return Cleaned()

    def finish(self) -> Cleaned:
        """The input has ended: confirm the pending edge."""
        return self._flush_pending()

    # -- vectorised --------------------------------------------------------------------------

    def push_block(self, t_ns: I64, levels: npt.NDArray[np.int8]) -> Cleaned:
        """Take a block of edges sorted by (time, level), all after the edges seen so far."""
        if len(t_ns) == 0:
            return Cleaned()
        t = np.asarray(t_ns, np.int64)
        lv = np.asarray(levels, np.int8)
        clean = self._push_clean(t, lv)
        if clean is not None:
            return clean
        # 1. duplicates, against the previous edge (carried from the last block too)
        dup = np.zeros(len(t), np.bool_)
        dup[1:] = (t[1:] == t[:-1]) & (lv[1:] == lv[:-1])
        if self.last_raw is not None:
            dup[0] = (int(t[0]), int(lv[0])) == self.last_raw
        n_dup = int(dup.sum())
        if n_dup:
            t, lv = t[~dup], lv[~dup]
        self.duplicates += n_dup
        if len(t) == 0:
            return Cleaned(duplicates=n_dup)
        self.last_raw = (int(t[-1]), int(lv[-1]))
        # 2. glitches: the pending edge (if any) leads the sequence as an accepted edge.
        has_pending = self.pending_t_ns is not None
        if has_pending:
            t = np.concatenate([np.array([self.pending_t_ns], np.int64), t])
            lv = np.concatenate([np.array([self.pending_level], np.int8), lv])
        n = len(t)
        short = np.zeros(n, np.bool_)
        short[1:] = (t[1:] - t[:-1]) < self.glitch_ns
        # In a run of consecutive short gaps, the 1st, 3rd, 5th... edge pops its predecessor.
        index = np.arange(n)
        run_start = short & ~np.concatenate([[False], short[:-1]])
        start_index = np.maximum.accumulate(np.where(run_start, index, 0))
        popper = short & ((index - start_index) % 2 == 0)
        popped = np.zeros(n, np.bool_)
        popped[:-1] = popper[1:]
        kept = ~popper & ~popped
        glitch_t = t[popped]
        self.glitches += int(popper.sum())
        kept_t, kept_lv = t[kept], lv[kept]
        self.pending_t_ns = None
        if len(kept_t) and kept[-1]:
            # The newest kept edge stays pending: the next block may still pop it.
            self.pending_t_ns, self.pending_level = int(kept_t[-1]), int(kept_lv[-1])
            kept_t, kept_lv = kept_t[:-1], kept_lv[:-1]
        out = self._confirm(kept_t, kept_lv)
        out.glitch_t_ns = glitch_t
        out.duplicates = n_dup
        return out

    def _push_clean(self, t: I64, lv: npt.NDArray[np.int8]) -> Cleaned | None:
        """Take a block with no duplicate and no glitch, as push_block would; else None.

        A clean block (every gap, from the pending edge on, at least the glitch width and not
        zero) keeps every edge: the pending one and all but the newest are confirmed, the newest
        becomes pending. Checking that costs one subtraction; the general path builds a dozen
        full-length temporaries.
        """
        first = (int(t[0]), int(lv[0]))
        if first == self.last_raw:
            return None
        if self.pending_t_ns is not None and first[0] - self.pending_t_ns < self.glitch_ns:
            return None
        if len(t) > 1 and int((t[1:] - t[:-1]).min()) < max(self.glitch_ns, 1):
            return None
        self.last_raw = (int(t[-1]), int(lv[-1]))
        if self.pending_t_ns is not None:
            confirm_t = np.concatenate([np.array([self.pending_t_ns], np.int64), t[:-1]])
            confirm_lv = np.concatenate([np.array([self.pending_level], np.int8), lv[:-1]])
        else:
            confirm_t, confirm_lv = t[:-1], lv[:-1]
        self.pending_t_ns, self.pending_level = self.last_raw
        return self._confirm(confirm_t, confirm_lv)


def skip_seen(last: tuple[int, int] | None, t_ns: I64, levels: I8) -> tuple[I64, I8, int]:
    """Drop a channel's edges at or before ``last``, the (time, level) of the last edge seen.

    A resumed source or a re-imported log holds edges already counted: those before the last
    edge seen, and at its very time those of a level not above it. ``t_ns`` and ``levels`` are
    sorted by (time, level). Return the edges kept and how many were skipped.
    """
    if last is None or len(t_ns) == 0:
        return t_ns, levels, 0
    if (int(t_ns[0]), int(levels[0])) > last:
        return t_ns, levels, 0  # all after it (the usual case): kept without a copy
    seen = (t_ns < last[0]) | ((t_ns == last[0]) & (levels <= last[1]))
    n_seen = int(seen.sum())
    if n_seen == 0:
        return t_ns, levels, 0
    return t_ns[~seen], levels[~seen], n_seen


def merge(parts: list[Cleaned]) -> Cleaned:
    """Join the results of several steps, in order."""
    return _concat([p for p in parts if len(p.t_ns) or len(p.glitch_t_ns) or p.duplicates])
