"""``replay --db``: import pulse logs into the database as live operation would, exactly once.

Each meter resumes from the state the database holds; edges at or before a channel's last
stored edge are skipped and counted, so importing the same log, or an overlapping one, again
adds nothing. Everything derived (counters, state, intervals, sub-intervals, events, the MQTT
outbox) goes through the same checkpoint path as the daemon's commits, in one transaction after
the logs were read whole: bad input imports nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from gateway.batch.replay import BatchResult, replay_logs
from gateway.checkpoint import Checkpoint
from gateway.core.events import Event, EventKind
from gateway.core.meter import CoreSettings, MeterCore
from gateway.core.reads import ReadingCore
from gateway.core.state import restore
from gateway.sinks.database import Database
from gateway.sinks.readback import Readback
from gateway.sinks.store import Store

IMPORT_MODEL = "unknown"


def default_settings() -> CoreSettings:
    """Return the settings of a meter no configuration names: defaults, read as ``[billing]``
    defaults say (the first of the month at the host's midnight)."""
    from gateway.config import BillingSettings, MeterSettings, read_schedule

    return CoreSettings(read_schedule=read_schedule(BillingSettings(), MeterSettings("meter")))


def import_logs(
    paths: Sequence[str],
    url: str,
    progress: Callable[[int, int, int], None] | None = None,
    settings: dict[str, CoreSettings] | None = None,
) -> BatchResult:
    """Import ``paths`` into the database at ``url``; return what the meters now hold."""
    database = Database(url, lock="replay --db")
    try:
        stored = {m.name: m for m in Readback(database).meters()}

        def make_core(name: str, first_ns: int) -> MeterCore:
            previous = stored.get(name)
            # --config's settings, else those the stored state was reconstructed with.
            chosen = (settings or {}).get(name)
            if chosen is None and previous is not None:
                chosen = CoreSettings.from_state((previous.core_state or {}).get("settings"))
            # Billing reads are taken at the instants the daemon would take them.
            core = ReadingCore(name, chosen or default_settings(), record_subintervals=True)
            if previous is not None and previous.core_state is not None:
                restore(core, previous.core_state)
            else:
                core.begin(first_ns)
            return core

        result = replay_logs(paths, make_core, progress, finish=False)
        now_ns = time.time_ns()
        batches = []
        for name, core in result.cores.items():
            previous = stored.get(name)
            checkpoint = Checkpoint.resuming(
                previous,
                name,
                previous.model if previous else IMPORT_MODEL,
                previous.source if previous else "replay",
            )
            checkpoint.add_intervals(result.intervals.get(name))
            checkpoint.collect(core)
            skipped = result.skipped.get(name, 0)
            detail = f"imported {', '.join(paths)}: {skipped} edges already counted were skipped"
            checkpoint.add_events([Event(core.last_ns or now_ns, EventKind.RESTART, None, detail)])
            batches.append(
                checkpoint.batch(
                    core,
                    source_state=previous.source_state if previous else None,
                    skipped=skipped,
                )
            )
        Store(database).commit(batches, now_ns)
        return result
    finally:
        database.close()
