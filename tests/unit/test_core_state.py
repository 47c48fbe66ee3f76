"""The stored core state: version 1 states already in databases load unchanged.

The state below was written by the core before each part serialised itself (a `10` glitch, a gap
still open in its interval, and a pending edge on each channel): it must restore, give the same
state back, and carry on counting.
"""

from __future__ import annotations

import json
from fractions import Fraction
from typing import Any

import pytest

from gateway.core.edge import CHANNEL_1K, CHANNEL_10
from gateway.core.meter import CoreSettings, MeterCore
from gateway.core.state import restore, snapshot

SETTINGS = CoreSettings(wh_per_edge={CHANNEL_10: 5, CHANNEL_1K: 20})

V1_STATE = json.loads(
    """{"version": 1, "name": "m1", "start_ns": 1764057950000000000,
    "first_ns": 1764057950000000000, "last_ns": 1764059200000000000,
    "hygiene": {
     "10": {"level": 0, "last_t_ns": 1764058850000000000, "pending_t_ns": 1764059200000000000,
      "pending_level": 1, "last_raw": [1764059200000000000, 1], "duplicates": 0, "glitches": 1,
      "inferred": 0, "confirmed": 10},
     "1K": {"level": 0, "last_t_ns": 1764058650000000000, "pending_t_ns": 1764059200000000000,
      "pending_level": 1, "last_raw": [1764059200000000000, 1], "duplicates": 0, "glitches": 0,
      "inferred": 0, "confirmed": 2}},
    "totals": {
     "10": {"edges": 10, "noise": 0, "last_ns": 1764058850000000000,
      "previous_ns": 1764058750000000000, "last_real_ns": 1764058850000000000},
     "1K": {"edges": 2, "noise": 0, "last_ns": 1764058650000000000,
      "previous_ns": 1764058250000000000, "last_real_ns": 1764058650000000000}},
    "demand": {
     "10": {"index": 5880197, "energy": 0, "complete": false,
      "window": [[1764058200000000, 1764058500000000, 15, 1],
       [1764058500000000, 1764058800000000, 15, 1], [1764058800000000, 1764059100000000, 5, 0]],
      "window_energy": 35, "peak_energy": 45, "peak": [9, 50, 1764058800000000, true],
      "last": [1764058800000000, 1764059100000000, 5, 0]},
     "1K": {"index": 5880197, "energy": 0, "complete": false,
      "window": [[1764058200000000, 1764058500000000, 20, 1],
       [1764058500000000, 1764058800000000, 20, 1], [1764058800000000, 1764059100000000, 0, 0]],
      "window_energy": 40, "peak_energy": 40, "peak": [4, 25, 1764058800000000, true],
      "last": [1764058800000000, 1764059100000000, 0, 0]}},
    "intervals": {"next_index": 1960065, "edges": {"10": [[1960065, 4]], "1K": [[1960065, 1]]},
     "flags": [[1960065, {"glitch": 1}]],
     "gaps": [[1764059000000000000, 1764059100000000000]]},
    "crosscheck": {"n10": 10, "n1k": 2, "mismatches": 0, "kind_counts": {},
     "missed_wh": {"10": 0, "1K": 0}, "offset_wh": 10, "recent10": [1764058850000000000],
     "base10": 9, "pending1k": [], "pending_inferred": [], "last_c": null}}"""
)


# Keys added to version 1 later (all optional when read): the settings, where the input ended,
# the interval a finished log left open, the first `10` edge, since when the peak is measured.
LATER_KEYS = {"settings", "ended_ns", "tail_ns", "peak_since_ns"}


def _as_v1(state: dict[str, Any]) -> dict[str, Any]:
    state = {k: v for k, v in state.items() if k not in LATER_KEYS}
    state["crosscheck"] = {k: v for k, v in state["crosscheck"].items() if k != "first10_ns"}
    return state


def test_a_version_1_state_restores_to_itself_and_carries_on() -> None:
    core = MeterCore("m1", SETTINGS)
    restore(core, json.loads(json.dumps(V1_STATE)))
    assert _as_v1(snapshot(core)) == V1_STATE
    assert core.energy_wh == 50
    assert core.hygiene[CHANNEL_10].pending_t_ns == 1_764_059_200 * 10**9
    assert core.demand is not None and core.demand.peak is not None
    assert core.demand.peak.demand_kw == Fraction(9, 50)  # 45 Wh over 15 minutes
    batch = core.finish()
    assert core.energy_wh == 55  # the pending `10` edge is counted
    assert batch is not None
    # The interval holding the glitch and the gap: 4 edges before, 1 after the restart.
    [interval] = list(batch)
    assert (interval.edges, interval.quality, interval.flags) == (5, "gap", ("glitch",))


def test_a_state_without_the_event_counts_restores() -> None:
    state = json.loads(json.dumps(V1_STATE))
    del state["crosscheck"]["kind_counts"]
    core = MeterCore("m1", SETTINGS)
    restore(core, state)
    assert core.crosscheck.kind_counts == {}
    assert _as_v1(snapshot(core))["crosscheck"] == V1_STATE["crosscheck"]


def test_an_unknown_version_is_refused() -> None:
    with pytest.raises(ValueError, match="version"):
        restore(MeterCore("m1", SETTINGS), {**V1_STATE, "version": 2})
