"""``replay --db``: import pulse logs into the database as live operation would, exactly once.

Each meter resumes from the state the database holds; edges at or before a channel's last
stored edge are skipped and counted, so importing the same log, or an overlapping one, again
adds nothing. Everything derived (counters, state, intervals, sub-intervals, events, the MQTT
outbox) goes through the same checkpoint path as the daemon's commits, in one transaction after
the logs were read whole: bad input imports nothing.

A log whose edges lie where the database already holds a meter, but were never counted there
(before the time it holds, or in a stretch nobody watched), cannot be added to what was derived
after them: it is refused (exit status 2, naming the log, the meter and the stored range) before
anything is written, never skipped silently (SPEC 3).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from gateway.batch.replay import BatchResult, CoreFactory, replay_logs
from gateway.config import MeterSettings
from gateway.core.events import EventKind
from gateway.core.meter import CoreSettings, MeterCore
from gateway.errors import ConfigError
from gateway.pipeline import MeterPipeline
from gateway.pulselog.scan import LogSpan, check_logs
from gateway.sinks.database import Database, sqlite_path
from gateway.sinks.readback import Readback, StoredMeter
from gateway.sinks.store import Store
from gateway.timefmt import format_iso

IMPORT_MODEL = "unknown"


def default_settings() -> CoreSettings:
    """Return the settings of a meter no configuration names: defaults, read as ``[billing]``
    defaults say (the first of the month at the host's midnight)."""
    from gateway.config import BillingSettings, MeterSettings, read_schedule

    return CoreSettings(read_schedule=read_schedule(BillingSettings(), MeterSettings("meter")))


@dataclass(frozen=True)
class Imported:
    """What an import did to one meter."""

    meter: str
    edges_added: int  # edges counted on every channel
    edges_stored: int  # edges the database held already (skipped)
    added: tuple[int, int] | None  # the time newly watched, if any
    gaps: list[tuple[int, int]]  # stretches inside it that no log covered

    def line(self) -> str:
        """Return one line saying it."""
        if self.added is None:
            window = "no time added"
        else:
            window = f"added {format_iso(self.added[0])} to {format_iso(self.added[1])}"
        if self.gaps:
            minutes = sum(b - a for a, b in self.gaps) / 60e9
            window += f", {len(self.gaps)} gap(s) no log covers ({minutes:.1f} min)"
        return (
            f"{self.meter}: {self.edges_added} edges added, {self.edges_stored} already stored; "
            f"{window}"
        )


def _stored_range(previous: StoredMeter) -> tuple[int, int] | None:
    """Return the time the database holds a meter from and to (its state's), if any."""
    state = previous.core_state or {}
    start = state.get("start_ns")
    until = state.get("ended_ns") if state.get("ended_ns") is not None else state.get("last_ns")
    return None if start is None or until is None else (int(start), int(until))


def _refuse_dropped(
    readback: Readback,
    stored: Mapping[str, StoredMeter],
    spans: Mapping[str, Mapping[str, LogSpan]],
) -> None:
    """Raise ConfigError for a log with edges where the database holds a meter but never
    counted them: an older log imported after a newer one would be skipped, not added."""
    for path, meters in spans.items():
        for name, span in sorted(meters.items()):
            previous = stored.get(name)
            held = None if previous is None else _stored_range(previous)
            if previous is None or held is None or span.first_ns > held[1]:
                continue  # a new meter, or rows all after what is held: added
            where = (
                f"{path}: meter {name}: this log ({format_iso(span.start_ns)} to "
                f"{format_iso(span.end_ns)})"
            )
            stored_range = f"{format_iso(held[0])} to {format_iso(held[1])}"
            if span.first_ns < held[0]:
                raise ConfigError(
                    f"{where} begins before what the database holds for the meter "
                    f"({stored_range}); its edges would be dropped: import logs in time order "
                    "(the older first, into a new database)"
                )
            hole = readback.first_unwatched(previous.id, span.first_ns, min(span.last_ns, held[1]))
            if hole is not None:
                raise ConfigError(
                    f"{where} has edges where the database holds the meter ({stored_range}) "
                    f"but nobody watched (from {format_iso(hole)}); they would be dropped: "
                    "import logs in time order (into a new database)"
                )


def _make_core(
    stored: Mapping[str, StoredMeter],
    settings: Mapping[str, CoreSettings] | None,
    pipelines: dict[str, MeterPipeline],
) -> CoreFactory:
    """Return the cores' factory for :func:`replay_logs`: each meter resumes from its stored
    state (if any) in a :class:`MeterPipeline`, kept in ``pipelines``."""

    def make_core(name: str, first_ns: int) -> MeterCore:
        previous = stored.get(name)
        # --config's settings, else those the stored state was reconstructed with.
        chosen = (settings or {}).get(name)
        if chosen is None and previous is not None:
            chosen = CoreSettings.from_state((previous.core_state or {}).get("settings"))
        meter = MeterSettings(
            name,
            model=previous.model if previous else IMPORT_MODEL,
            source=previous.source if previous else "replay",
        )
        # Billing reads are taken at the instants the daemon would take them.
        pipeline = MeterPipeline(meter, chosen or default_settings(), previous)
        if not pipeline.resumed:
            pipeline.core.begin(first_ns)
        pipelines[name] = pipeline
        return pipeline.core

    return make_core


def _opened_at_head(url: str) -> Database | None:
    """Return the database at ``url``, locked, when it is already at the current schema, having
    changed nothing; None when it must first be created or migrated, or cannot be used (the
    caller then reads the logs whole before opening it, so bad input leaves it as it was)."""
    path = sqlite_path(url)
    if path is not None and (not os.path.isfile(path) or os.path.getsize(path) == 0):
        return None  # to create (opening an empty file would write SQLite's header)
    try:
        return Database(url, upgrade=False, lock="replay --db")
    except Exception:
        # To create or migrate, or held, damaged, foreign, newer: the ordinary way (the logs
        # read first) meets it again and says so, as it always did.
        return None


def _new_sqlite_file(url: str) -> bool:
    path = sqlite_path(url)
    return path is not None and not os.path.lexists(path)


def import_logs(
    paths: Sequence[str],
    url: str,
    progress: Callable[[int, int, int], None] | None = None,
    settings: dict[str, CoreSettings] | None = None,
) -> tuple[BatchResult, list[Imported]]:
    """Import ``paths`` into the database at ``url``; return what the meters now hold, and what
    the import did to each. A log it would drop is refused, with nothing written.

    Each log is read once: a database already at the current schema is opened (and locked)
    first, and its meters resume while the logs are read; into a new SQLite file the logs are
    read first, and the file is created after. Only a database to migrate (or one that cannot
    be used) has the logs read whole before it is opened, then read again (issue #12: bad
    input leaves it byte for byte as it was).
    """
    database = _opened_at_head(url)
    early: tuple[BatchResult, dict[str, MeterPipeline]] | None = None
    if database is None:
        if _new_sqlite_file(url):
            fresh: dict[str, MeterPipeline] = {}
            early = (
                replay_logs(paths, _make_core({}, settings, fresh), progress, finish=False),
                fresh,
            )
        else:
            check_logs(paths)  # bad input: refused before the database is touched
        database = Database(url, lock="replay --db")
    try:
        readback = Readback(database)
        stored = {m.name: m for m in readback.meters()}
        if early is not None and not stored.keys() & early[0].cores.keys():
            # Read before the file existed; none of its meters was stored since: they start
            # anew, as they were read.
            result, pipelines = early
        else:
            pipelines = {}
            result = replay_logs(
                paths, _make_core(stored, settings, pipelines), progress, finish=False
            )
        _refuse_dropped(readback, stored, result.spans)
        now_ns = time.time_ns()
        batches = []
        report = []
        for name, core in sorted(result.cores.items()):
            previous = stored.get(name)
            held = None if previous is None else _stored_range(previous)
            before = sum(row.edges for row in previous.counters.values()) if previous else 0
            windows = result.windows.get(name, [])
            added = None
            if windows:
                lo = windows[0][0] if held is None else max(windows[0][0], held[1])
                hi = max(windows[-1][1], core.last_ns or 0)
                added = (lo, hi) if hi > lo else None
            report.append(
                Imported(
                    name,
                    sum(t.edges for t in core.totals.values()) - before,
                    result.skipped.get(name, 0),
                    added,
                    result.holes.get(name, []),
                )
            )
            pipeline = pipelines[name]
            pipeline.gather(result.intervals.get(name))
            skipped = result.skipped.get(name, 0)
            detail = f"imported {', '.join(paths)}: {skipped} edges already counted were skipped"
            pipeline.note(EventKind.RESTART, detail, core.last_ns or now_ns)
            # Nothing is published here: 0 leaves the stored floor as it is.
            batches.append(pipeline.batch(skipped=skipped))
        Store(database).commit(batches, now_ns)
        return result, report
    finally:
        database.close()
