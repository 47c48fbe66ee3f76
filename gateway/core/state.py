"""A meter core's complete state as plain JSON-able data, to resume exactly after a restart.

Everything the core will still use is kept: the hygiene of each channel (including the pending
edge and the last edge seen, so a resumed source skips exactly what was counted), the counters,
the open demand sub-interval and window, the peak, the open intervals and the cross-check. Events
already reported are not: the store keeps those.
"""

from __future__ import annotations

from collections import deque
from fractions import Fraction
from typing import Any

import numpy as np

from gateway.core.meter import MeterCore
from meter_model.demand import DemandMeter, Peak, SubInterval

VERSION = 1


def _sub(sub: SubInterval | None) -> list[int] | None:
    if sub is None:
        return None
    return [sub.start_us, sub.end_us, sub.energy, int(sub.complete)]


def _unsub(data: list[int] | None) -> SubInterval | None:
    if data is None:
        return None
    return SubInterval(data[0], data[1], data[2], bool(data[3]))


def _demand(meter: DemandMeter) -> dict[str, Any]:
    peak = meter.peak
    return {
        "index": meter._index,
        "energy": meter._energy,
        "complete": meter._complete,
        "window": [_sub(s) for s in meter._window],
        "window_energy": meter._window_energy,
        "peak_energy": meter._peak_energy,
        "peak": None
        if peak is None
        else [
            peak.demand_kw.numerator,
            peak.demand_kw.denominator,
            peak.window_end_us,
            peak.partial,
        ],
        "last": _sub(meter.last),
    }


def _undemand(meter: DemandMeter, data: dict[str, Any]) -> None:
    meter._index = data["index"]
    meter._energy = data["energy"]
    meter._complete = data["complete"]
    meter._window = deque((_unsub(s) for s in data["window"]), maxlen=meter._window.maxlen)
    meter._window_energy = data["window_energy"]
    meter._peak_energy = data["peak_energy"]
    peak = data["peak"]
    meter.peak = None if peak is None else Peak(Fraction(peak[0], peak[1]), peak[2], peak[3])
    meter.last = _unsub(data["last"])


def snapshot(core: MeterCore) -> dict[str, Any]:
    """Return the core's state as JSON-able data."""
    cc = core.crosscheck
    intervals = core._intervals
    return {
        "version": VERSION,
        "name": core.name,
        "start_ns": core.start_ns,
        "first_ns": core.first_ns,
        "last_ns": core.last_ns,
        "hygiene": {
            ch: {
                "level": h.level,
                "last_t_ns": h.last_t_ns,
                "pending_t_ns": h.pending_t_ns,
                "pending_level": h.pending_level,
                "last_raw": list(h.last_raw) if h.last_raw is not None else None,
                "duplicates": h.duplicates,
                "glitches": h.glitches,
                "inferred": h.inferred,
                "confirmed": h.confirmed,
            }
            for ch, h in core.hygiene.items()
        },
        "totals": {
            ch: {
                "edges": t.edges,
                "noise": t.noise,
                "last_ns": t.last_ns,
                "previous_ns": t.previous_ns,
                "last_real_ns": t.last_real_ns,
            }
            for ch, t in core.totals.items()
        },
        "demand": {ch: _demand(d) for ch, d in core._demand.items()},
        "intervals": None
        if intervals is None
        else {
            "next_index": intervals._next_index,
            "edges": {ch: [[k, v] for k, v in c.items()] for ch, c in intervals._edges.items()},
            "flags": [[k, v] for k, v in intervals._flags.items()],
            "gaps": [list(g) for g in intervals._gaps],
        },
        "crosscheck": {
            "n10": cc.n10,
            "n1k": cc.n1k,
            "mismatches": cc.mismatches,
            "kind_counts": dict(cc.kind_counts),
            "missed_wh": dict(cc.missed_wh),
            "offset_wh": cc.offset_wh,
            "recent10": cc._recent10.tolist(),
            "base10": cc._base10,
            "pending1k": list(cc._pending1k),
            "pending_inferred": list(cc._pending_inferred),
            "last_c": cc._last_c,
        },
    }


def restore(core: MeterCore, state: dict[str, Any]) -> None:
    """Put a fresh core (same name and settings) back into a snapshot's state."""
    if state.get("version") != VERSION:
        raise ValueError(f"unknown meter state version {state.get('version')!r}")
    if state["start_ns"] is not None:
        core._begin(state["start_ns"])
    core.first_ns = state["first_ns"]
    core.last_ns = state["last_ns"]
    for ch, data in state["hygiene"].items():
        h = core.hygiene[ch]
        h.level = data["level"]
        h.last_t_ns = data["last_t_ns"]
        h.pending_t_ns = data["pending_t_ns"]
        h.pending_level = data["pending_level"]
        h.last_raw = tuple(data["last_raw"]) if data["last_raw"] is not None else None
        h.duplicates = data["duplicates"]
        h.glitches = data["glitches"]
        h.inferred = data["inferred"]
        h.confirmed = data["confirmed"]
    for ch, data in state["totals"].items():
        t = core.totals[ch]
        t.edges, t.noise = data["edges"], data["noise"]
        t.last_ns, t.previous_ns, t.last_real_ns = (
            data["last_ns"],
            data["previous_ns"],
            data["last_real_ns"],
        )
    for ch, data in state["demand"].items():
        _undemand(core._demand[ch], data)
    if state["intervals"] is not None and core._intervals is not None:
        acc = core._intervals
        acc._next_index = state["intervals"]["next_index"]
        acc._edges = {
            ch: {k: v for k, v in items} for ch, items in state["intervals"]["edges"].items()
        }
        acc._flags = {k: dict(v) for k, v in state["intervals"]["flags"]}
        acc._gaps = [(a, b) for a, b in state["intervals"]["gaps"]]
    cc, data = core.crosscheck, state["crosscheck"]
    cc.n10, cc.n1k, cc.mismatches = data["n10"], data["n1k"], data["mismatches"]
    cc.missed_wh = dict(data["missed_wh"])
    cc.kind_counts = dict(data.get("kind_counts", {}))
    cc.offset_wh = data["offset_wh"]
    cc._recent10 = np.array(data["recent10"], np.int64)
    cc._base10 = data["base10"]
    cc._pending1k = deque(data["pending1k"])
    cc._pending_inferred = deque(bool(x) for x in data["pending_inferred"])
    cc._last_c = data["last_c"]


def counter_values(core: MeterCore, skipped: int = 0) -> dict[str, dict[str, int | None]]:
    """Return each channel's counter as the store keeps it (``skipped`` goes to the register).

    ``skipped`` counts edges a resumed source or an import left out as already counted.
    """
    return {
        ch: {
            "edges": totals.edges,
            "wh_per_edge": totals.wh_per_edge,
            "level": core.hygiene[ch].level,
            "last_edge_ns": totals.last_ns,
            "glitches": core.hygiene[ch].glitches,
            "inferred": core.hygiene[ch].inferred,
            "duplicates": core.hygiene[ch].duplicates,
            "skipped": skipped if ch == core.register_channel else 0,
        }
        for ch, totals in core.totals.items()
    }
