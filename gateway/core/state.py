"""A meter core's complete state as plain JSON-able data, to resume exactly after a restart.

Everything the core will still use is kept: the hygiene of each channel (including the pending
edge and the last edge seen, so a resumed source skips exactly what was counted), the counters,
the open demand sub-interval and window, the peak, the open intervals and the cross-check. Events
and sub-intervals not yet taken are not: take them (and store them) with the snapshot.

Each part serialises itself (``to_state``/``from_state``); this module names the format's
version. Databases hold version 1 states, so its keys stay as they are; a key added later must
be optional when read.
"""

from __future__ import annotations

from typing import Any

from gateway.core.meter import MeterCore

VERSION = 1


def snapshot(core: MeterCore) -> dict[str, Any]:
    """Return the core's state as JSON-able data."""
    return {"version": VERSION, **core.to_state()}


def restore(core: MeterCore, state: dict[str, Any]) -> None:
    """Put a fresh core (same name and settings) back into a snapshot's state."""
    if state.get("version") != VERSION:
        raise ValueError(f"unknown meter state version {state.get('version')!r}")
    core.load_state(state)


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
