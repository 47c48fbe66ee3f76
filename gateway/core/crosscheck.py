"""Cross-check of the `10` channel against the `1K` channel of one meter.

Both outputs toggle from one register, so with perfect counting from any starting point the
counted difference ``E10 - E1K`` stays within -495..+495 Wh. Each `1K` edge is judged once the
`10` edges up to the coincidence tolerance after it are known:

- a `10` edge must lie within the tolerance of it (they toggle together);
- exactly 100 `10` edges (the weight ratio) must lie between it and the previous `1K` edge: none
  means `10` went silent, two ratios or more means `1K` missed an edge (it went silent);
- a running difference of 500 Wh or more is a mismatch, reported with the energy it implies was
  missed (a lower bound) and on which channel; the difference is then re-based so one fault is
  reported once.

A `1K` edge inferred by hygiene is stamped midway between its neighbours, a guess that may lie
far before `10` edges already seen: it is counted but not judged itself; the real `1K` edge that
revealed it is judged for both (expecting twice the ratio of `10` edges since the previous one).

When the input ends, 200 or more `10` edges after the last `1K` edge mean `1K` went silent.
A channel that counted nothing at all (not wired) leaves the meter unchecked, with no events.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.core.edge import CHANNEL_1K, CHANNEL_10
from gateway.core.events import Event, EventKind

I64 = npt.NDArray[np.int64]
DEFAULT_TOLERANCE_NS = 20_000_000  # 20 ms between the two outputs' edges of one toggle


@dataclass
class CrossCheck:
    """State of the `10`/`1K` comparison, fed counted edges in time order per channel."""

    wh_10: int = 5
    wh_1k: int = 500
    tolerance_ns: int = DEFAULT_TOLERANCE_NS
    margin_ns: int = 2_000_000  # how late a `1K` edge may arrive after later `10` edges
    n10: int = 0
    n1k: int = 0
    events: list[Event] = field(default_factory=list)
    kind_counts: dict[str, int] = field(default_factory=dict)
    mismatches: int = 0
    missed_wh: dict[str, int] = field(default_factory=lambda: {CHANNEL_10: 0, CHANNEL_1K: 0})
    offset_wh: int = 0
    _recent10: I64 = field(default_factory=lambda: np.empty(0, np.int64))
    _base10: int = 0  # `10` edges before _recent10
    _pending1k: deque[int] = field(default_factory=deque)
    _pending_inferred: deque[bool] = field(default_factory=deque)
    _last_c: int | None = None  # `10` count at the last judged `1K` edge
    first10_ns: int | None = None  # the first `10` edge ever counted

    def to_state(self) -> dict[str, Any]:
        """Return the comparison's state as JSON-able data.

        Settings are not included, nor ``events``: they are handed on as they come.
        """
        return {
            "n10": self.n10,
            "n1k": self.n1k,
            "mismatches": self.mismatches,
            "kind_counts": dict(self.kind_counts),
            "missed_wh": dict(self.missed_wh),
            "offset_wh": self.offset_wh,
            "recent10": self._recent10.tolist(),
            "base10": self._base10,
            "pending1k": list(self._pending1k),
            "pending_inferred": list(self._pending_inferred),
            "last_c": self._last_c,
            "first10_ns": self.first10_ns,
        }

    @classmethod
    def from_state(
        cls, state: dict[str, Any], wh_10: int, wh_1k: int, tolerance_ns: int, margin_ns: int
    ) -> CrossCheck:
        """Return a comparison as :meth:`to_state` left it."""
        return cls(
            wh_10,
            wh_1k,
            tolerance_ns,
            margin_ns,
            n10=state["n10"],
            n1k=state["n1k"],
            kind_counts=dict(state.get("kind_counts", {})),  # older states lack it
            mismatches=state["mismatches"],
            missed_wh=dict(state["missed_wh"]),
            offset_wh=state["offset_wh"],
            _recent10=np.array(state["recent10"], np.int64),
            _base10=state["base10"],
            _pending1k=deque(int(t) for t in state["pending1k"]),
            _pending_inferred=deque(bool(x) for x in state["pending_inferred"]),
            _last_c=state["last_c"],
            # Older states lack it: a `10` edge counted then is long past.
            first10_ns=state.get("first10_ns", -(2**62) if state["n10"] else None),
        )

    @property
    def ratio(self) -> int:
        return self.wh_1k // self.wh_10

    @property
    def difference_wh(self) -> int:
        return self.n10 * self.wh_10 - self.n1k * self.wh_1k - self.offset_wh

    def add_10(self, t_ns: I64, inferred: npt.NDArray[np.bool_] | None = None) -> None:
        """Take counted `10` edges; an inferred one is placed at the edge that revealed it.

        Its true time is unknown (hygiene stamps it midway, which may lie far in the past);
        placed where it was revealed it can never land beside a `1K` edge already judged.
        """
        if len(t_ns) == 0:
            return
        if inferred is not None and inferred.any():
            t_ns = t_ns.copy()
            slots = np.flatnonzero(inferred)
            t_ns[slots] = t_ns[slots + 1]  # the revealing edge comes right after it
        if self.first10_ns is None:
            self.first10_ns = int(t_ns[0])
        self._recent10 = np.concatenate([self._recent10, t_ns])
        self.n10 += len(t_ns)
        self._judge(final=False)

    def add_1k(self, t_ns: I64, inferred: npt.NDArray[np.bool_] | None = None) -> None:
        self._pending1k.extend(int(t) for t in t_ns)
        if inferred is None:
            self._pending_inferred.extend([False] * len(t_ns))
        else:
            self._pending_inferred.extend(bool(x) for x in inferred)
        self._judge(final=False)

    def advance(self, now_ns: int) -> None:
        """Judge the `1K` edges whose `10` neighbours are all known once time is ``now_ns``.

        Hygiene hands a `10` edge over at most the margin (the glitch width) after it happened,
        and the comparison places an inferred `10` edge at the edge that revealed it (see
        :meth:`add_10`), never earlier. So by ``now_ns`` every `10` edge up to
        ``now_ns - margin`` is known, and a `1K` edge at ``t <= now_ns - margin - tolerance``
        can be judged whether or not a later `10` edge came: a meter with only `1K` wired, or a
        `10` line gone silent, keeps nothing waiting. The judgement is the same whenever it is
        made, so every path gives identical results.
        """
        if not self._pending1k:
            return
        limit = now_ns - self.tolerance_ns - self.margin_ns
        if self._pending1k[0] > limit:
            return
        self._judge_first(
            int(np.searchsorted(np.fromiter(self._pending1k, np.int64), limit, "right"))
        )
        self._judge(final=False)  # trims the `10` edges no `1K` edge can need any more

    @property
    def waiting_since_ns(self) -> int | None:
        """Return the time of the oldest `1K` edge not judged yet (its interval must stay open:
        its judgement may flag it)."""
        return self._pending1k[0] if self._pending1k else None

    def rebase(self) -> None:
        """Start the comparison afresh after a stretch nothing was watched.

        Edges of either channel may have been missed meanwhile, so the phase between the two
        outputs is unknown again: `1K` edges waiting for judgement are counted unjudged, and the
        difference and the count since the last `1K` edge start from here, as at a first start.
        """
        self.n1k += len(self._pending1k)
        self._pending1k.clear()
        self._pending_inferred.clear()
        self._last_c = None
        self.offset_wh = self.n10 * self.wh_10 - self.n1k * self.wh_1k

    def finish(self, end_ns: int | None = None) -> None:
        """The input has ended (at ``end_ns``): judge what waits; report a silent `1K` line and
        the difference, stamped just before the end (the last interval holds them)."""
        if self.n10 == 0 or (self.n1k == 0 and not self._pending1k):
            # One channel counted nothing: nothing to check against (summary: "not checked").
            self.n1k += len(self._pending1k)
            self._pending1k.clear()
            self._pending_inferred.clear()
            return
        self._judge(final=True)
        last10 = int(self._recent10[-1]) if len(self._recent10) else 0
        stamp = last10 if end_ns is None else max(last10, end_ns - 1)
        if self.n1k and self._last_c is not None:
            after = self.n10 - self._last_c
            if after >= 2 * self.ratio:
                t = stamp
                self._event(
                    t, EventKind.SILENT, CHANNEL_1K, f"{after} `10` edges after the last `1K` edge"
                )
        self._check_difference(stamp, self.n10 * self.wh_10 - self.n1k * self.wh_1k)

    def _event(
        self, t_ns: int, kind: EventKind, channel: str | None, detail: str, missed: int = 0
    ) -> None:
        self.events.append(Event(t_ns, kind, channel, detail, missed))
        self.kind_counts[kind.value] = self.kind_counts.get(kind.value, 0) + 1

    def _judge(self, *, final: bool) -> None:
        last10 = int(self._recent10[-1]) if len(self._recent10) else None
        if final:
            self._judge_first(len(self._pending1k), wait_for_real=False)
        else:
            # A `1K` edge is judged once a `10` edge later than its tolerance has been seen.
            limit = -1 if last10 is None else last10 - self.tolerance_ns
            self._judge_first(
                int(np.searchsorted(np.fromiter(self._pending1k, np.int64), limit, "left"))
            )
        # Keep only the `10` edges a pending or future `1K` edge can still need: hygiene hands
        # over a `1K` edge at most the glitch width (the margin) after later `10` edges.
        if self._pending1k:
            horizon = self._pending1k[0]
        elif last10 is not None:
            horizon = last10 - self.margin_ns
        else:
            return
        keep_from = int(np.searchsorted(self._recent10, horizon - self.tolerance_ns, "left"))
        if keep_from:
            self._base10 += keep_from
            self._recent10 = self._recent10[keep_from:]

    def _judge_first(self, ready: int, *, wait_for_real: bool = True) -> None:
        """Judge the first ``ready`` pending `1K` edges.

        An inferred edge waits for the real edge after it, which is judged for both (unless
        the input has ended: ``wait_for_real`` False).
        """
        while wait_for_real and ready and self._pending_inferred[ready - 1]:
            ready -= 1
        if ready:
            judged = np.array([self._pending1k.popleft() for _ in range(ready)], np.int64)
            inferred = np.array([self._pending_inferred.popleft() for _ in range(ready)], np.bool_)
            self._judge_many(judged, inferred)

    def _judge_many(self, all_t: I64, inferred: npt.NDArray[np.bool_]) -> None:
        """Judge `1K` edges whose `10` neighbours are all known; loop only over anomalies."""
        # `1K` edges before any `10` edge was counted (up to their tolerance) have nothing to be
        # judged against (`10` not wired, or not counting yet): counted only, and the
        # comparison starts from the first `10` edge, as after a gap.
        unjudged = int(np.searchsorted(all_t, self._first10_ns() - self.tolerance_ns, "left"))
        if unjudged:
            self.n1k += unjudged
            self.offset_wh = -self.n1k * self.wh_1k
            all_t, inferred = all_t[unjudged:], inferred[unjudged:]
            if len(all_t) == 0:
                return
        real = np.flatnonzero(~inferred)
        if len(real) == 0:  # inferred edges with no real edge after them: counted only
            self.n1k += len(all_t)
            return
        t = all_t[real]
        # Each real edge stands for itself and the inferred edges just before it.
        weight = np.diff(np.concatenate([[-1], real]))
        tol = self.tolerance_ns
        lo = np.searchsorted(self._recent10, t - tol, "left")
        hi = np.searchsorted(self._recent10, t + tol, "right")
        c = self._base10 + hi
        k = self.n1k + np.cumsum(weight)
        previous = np.concatenate([[-1 if self._last_c is None else self._last_c], c[:-1]])
        between = c - previous
        has_previous = np.ones(len(t), np.bool_)
        has_previous[0] = self._last_c is not None
        raw_difference = c * self.wh_10 - k * self.wh_1k
        limit = self.wh_1k - self.wh_10
        structural = (hi == lo) | (has_previous & (between != self.ratio * weight))
        position = 0
        while position < len(t):
            difference = raw_difference[position:] - self.offset_wh
            bad = structural[position:] | (difference > limit) | (difference < -limit)
            hits = np.flatnonzero(bad)
            if len(hits) == 0:
                break
            j = position + int(hits[0])
            when = int(t[j])
            if hi[j] == lo[j]:
                self._event(
                    when, EventKind.COINCIDENCE, None, "`1K` edge with no `10` edge beside it"
                )
            if has_previous[j]:
                self._judge_between(when, int(between[j]), int(weight[j]))
            self._check_difference(when, int(raw_difference[j]))
            position = j + 1
        self.n1k += len(all_t)
        self._last_c = int(c[-1])

    def _first10_ns(self) -> int:
        """Return the time of the first `10` edge ever counted (far future while none was)."""
        return self.first10_ns if self.first10_ns is not None else 2**62

    def _judge_between(self, when: int, between: int, weight: int = 1) -> None:
        expected = self.ratio * weight
        if between == 0:
            self._event(
                when,
                EventKind.SILENT,
                CHANNEL_10,
                "no `10` edge between two `1K` edges",
                expected * self.wh_10,
            )
        elif between >= expected + self.ratio:
            self._event(
                when, EventKind.SILENT, CHANNEL_1K, f"{between} `10` edges between two `1K` edges"
            )
        elif between != expected:
            self._event(
                when,
                EventKind.COUNT,
                None,
                f"{between} `10` edges between two `1K` edges (expected {expected})",
            )

    def _check_difference(self, t: int, raw_difference_wh: int) -> None:
        limit = self.wh_1k - self.wh_10  # 495 Wh: the most perfect counting can differ by
        difference = raw_difference_wh - self.offset_wh
        if difference > limit:
            missed_1k = self.wh_1k * -(-(difference - limit) // self.wh_1k)
            self.mismatches += 1
            self.missed_wh[CHANNEL_1K] += missed_1k
            self.offset_wh += missed_1k
            self._event(
                t,
                EventKind.MISMATCH,
                CHANNEL_1K,
                f"`10` counted {difference} Wh more than `1K`",
                missed_1k,
            )
        elif difference < -limit:
            missed_10 = -difference - limit
            self.mismatches += 1
            self.missed_wh[CHANNEL_10] += missed_10
            self.offset_wh -= missed_10
            self._event(
                t,
                EventKind.MISMATCH,
                CHANNEL_10,
                f"`1K` counted {-difference} Wh more than `10`",
                missed_10,
            )

    def summary(self) -> dict[str, object]:
        kinds = dict(self.kind_counts)  # the events themselves may have been handed on
        status = "ok" if not kinds else "mismatch" if self.mismatches else "warning"
        if self.n1k == 0 or self.n10 == 0:
            status = "not checked"
        return {
            "status": status,
            "difference_wh": self.n10 * self.wh_10 - self.n1k * self.wh_1k,
            "mismatches": self.mismatches,
            "missed_wh": dict(self.missed_wh),
            "events": kinds,
        }
