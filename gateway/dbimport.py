"""``replay --db``: import pulse logs into the database as live operation would, exactly once.

Each meter resumes from the state the database holds; edges at or before a channel's last
stored edge are skipped and counted, so importing the same log, or an overlapping one, again
adds nothing. Everything derived (counters, state, intervals, sub-intervals, events, the MQTT
outbox) is written in one transaction after the logs were read whole: bad input imports nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from gateway.batch import BatchResult, replay_logs
from gateway.core.events import Event, EventKind
from gateway.core.meter import CoreSettings, MeterCore
from gateway.core.state import counter_values, restore, snapshot
from gateway.sinks.store import MeterBatch, Store

IMPORT_MODEL = "unknown"


def import_logs(
    paths: Sequence[str],
    url: str,
    progress: Callable[[int, int, int], None] | None = None,
    settings: dict[str, CoreSettings] | None = None,
) -> BatchResult:
    """Import ``paths`` into the database at ``url``; return what the meters now hold."""
    store = Store(url)
    try:
        stored = {m.name: m for m in store.meters()}

        def make_core(name: str, first_ns: int) -> MeterCore:
            core = MeterCore(
                name, (settings or {}).get(name) or CoreSettings(), record_subintervals=True
            )
            previous = stored.get(name)
            if previous is not None and previous.core_state is not None:
                restore(core, previous.core_state)
            else:
                core._begin(first_ns)
            return core

        result = replay_logs(paths, make_core, progress, finish=False)
        now_ns = time.time_ns()
        batches = []
        for name, core in result.cores.items():
            previous = stored.get(name)
            demand = core.demand
            events = list(core.events)
            skipped = result.skipped.get(name, 0)
            events.append(
                Event(
                    core.last_ns or now_ns,
                    EventKind.RESTART,
                    None,
                    f"imported {', '.join(paths)}: {skipped} edges already counted were skipped",
                )
            )
            batches.append(
                MeterBatch(
                    name=name,
                    model=previous.model if previous else IMPORT_MODEL,
                    source=previous.source if previous else "replay",
                    core_state=snapshot(core),
                    source_state=previous.source_state if previous else None,
                    counters=counter_values(
                        core,
                        skipped
                        + (sum(c.skipped for c in previous.counters.values()) if previous else 0),
                    ),
                    register_wh=core.energy_wh,
                    intervals=list(result.intervals.get(name, ())),
                    subintervals=list(demand.closed_log or []) if demand else [],
                    events=events,
                    peak=demand.peak if demand else None,
                    peak_window_s=core.settings.demand.window_s,
                )
            )
        store.commit(batches, now_ns)
        return result
    finally:
        store.close()
