"""``amr-gateway db upgrade``, ``status``, ``export`` and ``reconcile``: the database read back."""

from __future__ import annotations

import calendar
import csv
import datetime
import json
import os
import re
import shutil
import sys
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from gateway.config import (
    DATABASE_FILE,
    DEFAULT_CONFIG_PATH,
    check_database_url,
    default_database_url,
    load_config,
)
from gateway.core.estimate import Estimate
from gateway.core.meter import CoreSettings, MeterCore
from gateway.core.schedule import ReadSchedule, parse_period
from gateway.core.state import restore
from gateway.errors import ConfigError, SinkError
from gateway.sinks.integrity import DamagedDatabase
from gateway.sinks.readback import (
    Readback,
    StoredInterval,
    StoredLcdReading,
    StoredMeter,
    StoredRead,
)
from gateway.sinks.redact import redact
from gateway.sinks.salvage import salvage_intervals
from gateway.sinks.snapshot import copy_database, held_elsewhere, shm_in_use
from gateway.sources import is_live
from gateway.timefmt import NS_PER_S, NS_PER_US, format_iso, parse_time_ns
from meter_model.units import lcd_kwh, round_kw

if TYPE_CHECKING:
    from gateway.sinks.database import Database

# SQLAlchemy (gateway.sinks.database, gateway.sinks.store) is imported where a database is
# opened the full way: `status` on an SQLite file reads it without (issue 21).

RECENT_EVENTS_S = 24 * 3600
# Events that need someone to look (status counts and lists them): what the hygiene removed or
# inferred, the cross-check's disagreements, edges faster than the meter can make, the model
# disagreeing in simulation, storage and capture failures; and, from reconcile, LCD drift
# beyond what the LCD's truncation explains. Not: restarts, peak resets (scheduled or by
# command), gaps, link changes, clock steps, which status shows apart as notices.
NEEDS_A_LOOK = frozenset(
    {
        "glitch",
        "inferred",
        "mismatch",
        "count",
        "coincidence",
        "silent",
        "noise",
        "model",
        "storage",
        "capture",
    }
)
EXPORT_COLUMNS = ("meter", "start", "end", "energy_wh", "edges", "demand_kw", "quality")
DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)


def database_url(config: str | None, db: str | None) -> str:
    """Return the database a command reads: ``--db``, else the configuration's, else the
    default configuration's when it exists, else ``gateway.db`` in the working directory."""
    if db:
        return check_database_url(db, "--db")
    if config:
        return load_config(config).gateway.database
    if os.path.exists(DEFAULT_CONFIG_PATH):
        return load_config(DEFAULT_CONFIG_PATH).gateway.database
    return default_database_url()


def upgrade_url(config: str | None, db: str | None) -> str:
    """Return the database ``db upgrade`` migrates; never create one nobody named.

    With neither ``--db`` nor a configuration, an existing ``gateway.db`` here is upgraded, but
    none is created: a typo'd directory would otherwise hold a new, empty database.
    """
    url = database_url(config, db)
    if db or config or os.path.exists(DEFAULT_CONFIG_PATH):
        return url
    path = url.removeprefix("sqlite:///")
    if not os.path.exists(path):
        raise ConfigError(
            f"db upgrade: no database named (no --db, no --config, no {DEFAULT_CONFIG_PATH}) and"
            f" no {DATABASE_FILE} here; to create one on purpose:"
            f" amr-gateway db upgrade --db sqlite:///{DATABASE_FILE} (or --config FILE)"
        )
    return url


def open_database(url: str, *, writes: bool = False) -> Database:
    """Open an existing database at the current schema; a missing file is an error.

    An SQLite file a running gateway holds is read through a copy (:mod:`gateway.sinks.snapshot`);
    a command that ``writes`` is refused then.
    """
    from gateway.sinks.database import Database, holds_open

    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:" and not os.path.exists(path):
            raise ConfigError(f"database {path}: no such file (has the gateway run yet?)")
        # Within the process that holds the file (the daemon's web view), its own engine reads
        # it; probing would also close a descriptor of the file, dropping the process's locks.
        if path and path != ":memory:" and not holds_open(path):
            held = held_elsewhere(path)
            if held and writes:
                raise ConfigError(
                    f"database {path} is in use by a running amr-gateway, which holds it alone "
                    "(it spares the SD card that way): stop it first"
                )
            # Another program with the file open in SQLite's shared mode (a sqlite3 shell, a
            # script): opening it here would be refused (make_engine), so a reader reads a copy.
            if held or (not writes and shm_in_use(path)):
                copy = copy_database(path)
                try:
                    database = Database(f"sqlite:///{copy}", upgrade=False)
                except BaseException:
                    shutil.rmtree(os.path.dirname(copy), ignore_errors=True)
                    raise
                weakref.finalize(database, shutil.rmtree, os.path.dirname(copy), ignore_errors=True)
                return database
    return Database(url, upgrade=False)


def db_upgrade(url: str, out: TextIO = sys.stdout) -> None:
    from gateway.sinks.database import Database
    from gateway.sinks.migrate import current_revision, head_revision

    database = Database(url, upgrade=True, lock="db upgrade")
    try:
        out.write(
            f"{database.name} is at revision {current_revision(database.engine)}"
            f" (head {head_revision()})\n"
        )
    finally:
        database.close()


def _core(stored: StoredMeter) -> MeterCore | None:
    if stored.core_state is None:
        return None
    # The settings the state was reconstructed with are in it (defaults for older states).
    core = MeterCore(stored.name, CoreSettings.from_state(stored.core_state.get("settings")))
    restore(core, stored.core_state)
    return core


def meter_status(readback: Readback, stored: StoredMeter, now_ns: int) -> dict[str, Any]:
    """Return one meter's status as ``status --json`` prints it."""
    core = _core(stored)
    energy_wh = stored.register_wh
    status: dict[str, Any] = {
        "model": stored.model,
        "source": stored.source,
        "energy_wh": energy_wh,
        "lcd_kwh": lcd_kwh(energy_wh),
        "edges": {ch: row.edges for ch, row in sorted(stored.counters.items())},
        "last_edge": {
            ch: format_iso(row.last_edge_ns) if row.last_edge_ns is not None else None
            for ch, row in sorted(stored.counters.items())
        },
        "saved": format_iso(stored.saved_ns) if stored.saved_ns else None,
        "power_kw": 0.0,
        "demand_kw": 0.0,
        "peak_demand_kw": None,
        "peak_demand_end": None,
        "peak_demand_since": None,
    }
    if core is not None:
        # "now" for a live meter is the wall clock; a replayed or simulated one stops at its
        # own clock: where its log ended (a finished replay or import), else its last edge.
        last = max(core.last_ns or 0, core.ended_ns or 0) or now_ns
        reference = now_ns if is_live(stored.source) else last
        status["power_kw"] = round(core.power_kw(reference), 3)
        demand = core.demand
        if demand is not None:
            status["demand_kw"] = float(round_kw(demand.instantaneous_kw()))
            if demand.peak is not None:
                status["peak_demand_kw"] = float(round_kw(demand.peak.demand_kw))
                status["peak_demand_end"] = format_iso(demand.peak.window_end_us * NS_PER_US)
        if core.peak_since_ns is not None:
            status["peak_demand_since"] = format_iso(core.peak_since_ns)
        status["glitches"] = core.glitches
        status["inferred_edges"] = core.inferred_edges
        status["duplicates"] = core.duplicates
        status["crosscheck"] = core.crosscheck.summary()
    since = now_ns - RECENT_EVENTS_S * NS_PER_S
    recent = [
        {
            "time": format_iso(e.t_ns),
            "kind": e.kind,
            "channel": e.channel,
            "detail": e.detail,
            "missed_wh": e.missed_wh,
        }
        for e in readback.events(stored.id)
        if e.kind not in ("restart",) and (e.t_ns >= since or not is_live(stored.source))
    ]
    anomalies = [e for e in recent if e["kind"] in NEEDS_A_LOOK]
    if stored.source == "serial":
        # Lines the pulse-counter board sent with a bad checksum or shape, skipped (SPEC 6).
        status["serial_bad_lines"] = int((stored.source_state or {}).get("bad_lines", 0))
    readings = readback.lcd_readings(stored.id)
    status["last_reconciliation"] = reconciliation(readings) if readings else None
    last = status["last_reconciliation"]
    if last is not None and not last["consistent"]:
        anomalies.append(
            {
                "time": last["time"],
                "kind": "lcd_drift",
                "channel": None,
                "detail": last["summary"],
                "missed_wh": 0,
            }
        )
        anomalies.sort(key=lambda e: str(e["time"]))
    status["anomalies"] = len(anomalies)
    status["open_anomalies"] = anomalies[-20:]
    status["notices"] = [e for e in recent if e["kind"] not in NEEDS_A_LOOK][-20:]
    reads = readback.reads(stored.name)
    status["last_read"] = reads[-1].payload() if reads else None  # the last billing read
    return status


def status_of(readback: Readback, now_ns: int) -> dict[str, dict[str, Any]]:
    """Return every meter's status, by name, as ``status --json`` prints it."""
    return {m.name: meter_status(readback, m, now_ns) for m in readback.meters()}


def read_status(url: str, now_ns: int) -> dict[str, dict[str, Any]]:
    """Return every meter's status: on an SQLite file through ``sqlite3`` read-only when the
    file is in order (gateway.sinks.quickread, without SQLAlchemy), else the full way, which
    also says what is wrong with it."""
    from gateway.sinks.quickread import open_quick, sqlite_path

    path = sqlite_path(url)
    quick = None if path is None else open_quick(path, f"database {redact(url)}")
    if quick is not None:
        try:
            meters = status_of(Readback(quick), now_ns)
        except SinkError:  # the file moved under the read, or SQLite failed: the full way
            meters = None
        if quick.close() and meters is not None:
            return meters
    database = open_database(url)
    try:
        return status_of(Readback(database), now_ns)
    finally:
        database.close()


def write_status(
    meters: dict[str, dict[str, Any]], url: str, as_json: bool, out: TextIO = sys.stdout
) -> None:
    """Print what :func:`read_status` found, as JSON or as lines."""
    if as_json:
        json.dump({"meters": meters}, out, indent=2)
        out.write("\n")
        return
    if not meters:
        out.write(f"no meters in {redact(url)}\n")
    for name, m in meters.items():
        peak = (
            f"{m['peak_demand_kw']:.2f} kW since {m['peak_demand_since']} "
            f"(window ending {m['peak_demand_end']})"
            if m["peak_demand_kw"] is not None
            else "-"
        )
        out.write(
            f"{name} ({m['model']}, {m['source']}): {m['energy_wh']} Wh, LCD {m['lcd_kwh']} kWh; "
            f"edges {' '.join(f'{ch}={n}' for ch, n in m['edges'].items())}; "
            f"power {m['power_kw']:.2f} kW, demand {m['demand_kw']:.2f} kW, peak {peak}; "
            f"{_anomalies(m['anomalies'])}\n"
        )
        for anomaly in m["open_anomalies"]:
            channel = f" {anomaly['channel']}" if anomaly["channel"] else ""
            out.write(
                f"  anomaly: {anomaly['time']} {anomaly['kind']}{channel}: {anomaly['detail']}\n"
            )
        if "serial_bad_lines" in m:
            out.write(f"  serial board: {m['serial_bad_lines']} bad lines skipped\n")
        if m["last_reconciliation"]:
            out.write(f"  last LCD reading: {m['last_reconciliation']['summary']}\n")
        if m["last_read"]:
            read = m["last_read"]
            peak = read["peak_demand_kw"]
            out.write(
                f"  last billing read: {read['end']} ({read['period']}): {read['energy_wh']} Wh, "
                f"register {read['register_wh']} Wh, peak "
                f"{'-' if peak is None else f'{peak:.2f} kW'} reset, {read['quality']}\n"
            )


def status(url: str, as_json: bool, out: TextIO = sys.stdout) -> None:
    write_status(read_status(url, time.time_ns()), url, as_json, out)


def _anomalies(count: int) -> str:
    return "no anomalies" if count == 0 else f"{count} anomal{'y' if count == 1 else 'ies'}"


@dataclass(frozen=True)
class ExportWindow:
    """What an export holds: intervals in ``[start_ns, end_ns]``, or a billing period's."""

    start_ns: int | None = None
    end_ns: int | None = None
    period: str | None = None  # YYYY-MM: each meter's own period, by its read schedule

    def holds_read(self, read: StoredRead) -> bool:
        """Return whether a billing read belongs in the export: the period's own read, or one
        taken (its end) inside the window."""
        if self.period is not None:
            return bool(read.columns["period"] == self.period)
        t_ns = int(read.columns["t_ns"])
        return (self.start_ns is None or t_ns >= self.start_ns) and (
            self.end_ns is None or t_ns <= self.end_ns
        )


def export_window(start: str | None, end: str | None, period: str | None) -> ExportWindow:
    """Check ``--from``/``--to``/``--period`` and return the window they ask for.

    A date (``2026-11-01``) is in UTC, like every time the export writes: ``--from`` its start,
    ``--to`` its end (the day is included). A period in the meter's own zone is ``--period``.
    """
    if period is not None:
        for option, value in (("--from", start), ("--to", end)):
            if value is not None:
                raise ConfigError(f"--period {period}: give it or {option}, not both")
        try:
            parse_period(period)
        except ValueError as exc:
            raise ConfigError(f"--period: {exc}") from None
        return ExportWindow(period=period)
    start_ns, end_ns = _export_time("--from", start), _export_time("--to", end, days=1)
    if start_ns is not None and end_ns is not None and start_ns >= end_ns:
        raise ConfigError(f"--from {start} is not before --to {end}: nothing could be exported")
    return ExportWindow(start_ns, end_ns)


def _time_option(option: str, text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return parse_time_ns(text)
    except ValueError as exc:
        raise ConfigError(f"{option}: {exc}") from None


def _export_time(option: str, text: str | None, days: int = 0) -> int | None:
    """Return an export bound; a date is that day's 00:00 UTC, or with ``days=1`` the next
    day's (a ``--to`` date includes its day, as in the web view)."""
    if text is not None and DATE_RE.fullmatch(text):
        try:
            day = datetime.date.fromisoformat(text) + datetime.timedelta(days=days)
        except (ValueError, OverflowError):
            raise ConfigError(f"{option} {text}: not a date (YYYY-MM-DD)") from None
        return calendar.timegm(day.timetuple()) * NS_PER_S
    return _time_option(option, text)


def meter_intervals(
    readback: Readback, meter: str | None, window: ExportWindow
) -> list[tuple[str, StoredInterval]]:
    """Return the stored intervals an export asks for; an unknown ``--meter`` is an error."""
    if meter is not None and readback.find_meter(meter) is None:
        raise ConfigError(f"--meter {meter}: no such meter in the database")
    if window.period is None:
        return readback.intervals(meter, window.start_ns, window.end_ns)
    year, month = parse_period(window.period)
    rows: list[tuple[str, StoredInterval]] = []
    for stored in readback.meters():
        core = _core(stored)
        if core is None or meter not in (None, stored.name):
            continue
        settings = core.settings
        schedule = settings.read_schedule or ReadSchedule(align_s=settings.demand.sub_interval_s)
        rows += readback.intervals(stored.name, *schedule.bounds(year, month))
    return sorted(rows, key=lambda pair: (pair[0], pair[1].start_ns))


def export_estimates(
    readback: Readback,
    meter: str | None,
    window: ExportWindow,
    rows: list[tuple[str, StoredInterval]],
) -> dict[str, dict[int, Estimate]]:
    """Return the estimates of unwatched time for the intervals an export holds."""
    start_ns, end_ns = window.start_ns, window.end_ns
    if window.period is not None and rows:  # each meter's own period: the rows' span
        start_ns = min(row.start_ns for _, row in rows)
        end_ns = max(row.start_ns for _, row in rows)
    return readback.estimates(meter, start_ns, end_ns)


def export(
    url: str,
    fmt: str,
    meter: str | None,
    start: str | None,
    end: str | None,
    out: TextIO = sys.stdout,
    *,
    period: str | None = None,
) -> int:
    if fmt != "csv":
        raise ConfigError(f"--format {fmt}: only csv is supported")
    window = export_window(start, end, period)
    damaged: DamagedDatabase | None = None
    estimates: dict[str, dict[int, Estimate]] = {}
    try:
        database = open_database(url)
    except DamagedDatabase as exc:  # get out what can be read, then say what could not
        damaged, salvage = (
            exc,
            salvage_intervals(
                url.removeprefix("sqlite:///"), meter, window.start_ns, window.end_ns
            ),
        )
        rows = salvage.rows
    else:
        try:
            readback = Readback(database)
            rows = meter_intervals(readback, meter, window)
            estimates = export_estimates(readback, meter, window, rows)
        finally:
            database.close()
    writer = csv.writer(out, lineterminator="\n")
    # The SPEC's columns, then the estimate of the interval's unwatched time (empty when it
    # was watched or cannot be estimated), never added to energy_wh.
    writer.writerow([*EXPORT_COLUMNS, "estimated_wh", "estimate_method"])
    for name, row in rows:
        estimate = estimates.get(name, {}).get(row.start_ns)
        writer.writerow(
            [
                *interval_csv_row(name, row),
                "" if estimate is None else estimate.estimated_wh,
                "" if estimate is None else estimate.method,
            ]
        )
    if damaged is not None:
        out.flush()
        raise SinkError(
            f"{damaged.what} is damaged ({damaged.why}): exported the {len(rows)} interval(s) "
            "that could be read"
            + (f"; {salvage.unreadable} damaged part(s) could not be" if salvage.unreadable else "")
            + (f", {salvage.rejected} row(s) held impossible values" if salvage.rejected else "")
            + "; see 'A damaged database' in docs/persistence.md"
        )
    return len(rows)


def interval_csv_row(name: str, row: Any) -> list[Any]:
    """Return an interval (start_ns, end_ns, energy_wh, edges, quality) as the SPEC's export
    columns (EXPORT_COLUMNS)."""
    from fractions import Fraction

    demand = Fraction(row.energy_wh * 3600 * NS_PER_S, (row.end_ns - row.start_ns) * 1000)
    return [
        name,
        format_iso(row.start_ns),
        format_iso(row.end_ns),
        row.energy_wh,
        row.edges,
        round_kw(demand),
        row.quality,
    ]


def reconciliation(readings: list[StoredLcdReading]) -> dict[str, Any]:
    """Compare LCD readings with the counted register.

    The LCD truncates, so a reading of N kWh means the meter's register held N000..N999 Wh. The
    first reading fixes the offset between the meter's lifetime total and what the gateway
    counted (within that 999 Wh); each later reading's drift is how far the offset has moved.
    """
    first, last = readings[0], readings[-1]
    first_lo = first.lcd_kwh * 1000 - first.register_wh
    last_lo = last.lcd_kwh * 1000 - last.register_wh
    drift_lo, drift_hi = last_lo - (first_lo + 999), (last_lo + 999) - first_lo
    consistent = drift_lo <= 0 <= drift_hi
    summary = (
        f"{last.lcd_kwh} kWh on the LCD at {format_iso(last.t_ns, 0)} "
        f"against {last.register_wh} Wh counted; "
    )
    if len(readings) == 1:
        summary += f"offset {first_lo}..{first_lo + 999} Wh (the baseline)"
    else:
        summary += f"drift {drift_lo}..{drift_hi} Wh since {format_iso(first.t_ns, 0)}: "
        if consistent:
            summary += "consistent"
        elif drift_lo > 0:  # the LCD moved further than the register: edges were missed
            summary += f"the gateway counted {drift_lo}..{drift_hi} Wh less than the LCD"
        else:
            summary += f"the gateway counted {-drift_hi}..{-drift_lo} Wh more than the LCD"
    return {
        "time": format_iso(last.t_ns),
        "lcd_kwh": last.lcd_kwh,
        "register_wh": last.register_wh,
        "offset_wh": [last_lo, last_lo + 999],
        "drift_wh": [drift_lo, drift_hi] if len(readings) > 1 else None,
        "consistent": consistent,
        "summary": summary,
    }


def register_at(readback: Readback, stored: StoredMeter, t_ns: int) -> int:
    """Return the register as it stood at ``t_ns``, from what the database keeps.

    Exact at or after the last counted edge (the register then) and on demand sub-interval
    boundaries; otherwise the register at the start of the sub-interval holding ``t_ns`` (the
    database keeps energy per sub-interval, 5 minutes by default): at most that sub-interval's
    energy low.
    """
    core = _core(stored)
    if core is None or core.last_ns is None or t_ns >= core.last_ns:
        return stored.register_wh
    s_ns = core.settings.demand.sub_interval_s * NS_PER_S
    from_ns = t_ns // s_ns * s_ns
    later_wh = readback.subinterval_wh_from(stored.id, from_ns)
    demand = core.demand
    if demand is not None:
        state = demand.to_state()  # the open sub-interval: its energy is not stored as a row
        if state["index"] * s_ns >= from_ns:
            later_wh += int(state["energy"])
    return max(0, stored.register_wh - later_wh)


def reconcile(url: str, meter: str, lcd: int, when: str | None, out: TextIO = sys.stdout) -> None:
    if lcd < 0:
        raise ConfigError("--lcd-kwh: must not be negative")
    now_ns = time.time_ns()
    t_ns = _time_option("--time", when) or now_ns
    if t_ns > now_ns:
        # A reading from the future would sort after, and shadow, every real one (issue #11).
        raise ConfigError(f"--time {when}: is in the future")
    from gateway.sinks.store import Store

    database = open_database(url, writes=True)
    try:
        readback = Readback(database)
        stored = readback.find_meter(meter)
        if stored is None:
            names = ", ".join(m.name for m in readback.meters()) or "none"
            raise ConfigError(f"--meter {meter}: no such meter in the database (meters: {names})")
        # Paired with the register as it stood when the LCD was read, not as it stands now.
        register_wh = register_at(readback, stored, t_ns)
        Store(database).add_lcd_reading(stored.id, t_ns, lcd, register_wh)
        result = reconciliation(readback.lcd_readings(stored.id))
    finally:
        database.close()
    out.write(f"{meter}: {result['summary']}\n")
