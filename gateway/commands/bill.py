"""``amr-gateway bill``: the billing determinants of each meter for a period, from its reads.

A period's determinants are the read that ended it (gateway/core/reads.py): the energy between
that read and the one before, in integer Wh, the peak demand of the period with its window end
(the peak the read reset), and the quality with what made it partial. Energy is never more
than was counted; an estimate, where one can be bounded, is printed beside it, and the estimate of
the unwatched time (gateway/core/estimate.py) in its own fields, never added to the energy.

Every meter of the bill gets a row, so no tenant is left out: the configured meters (``--config``),
else every meter the database knows. A meter with no read ending the period gets a row whose
quality is ``no read``. Period bounds are given in UTC and in the meter's own zone, and the peak
says since when it was measured (the last peak reset, or when counting began).
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from gateway.commands.database import open_database
from gateway.core.estimate import period_estimate
from gateway.core.schedule import ReadSchedule, parse_period
from gateway.errors import ConfigError, NotFoundError
from gateway.sinks.readback import Readback, StoredMeter, StoredRead
from gateway.timefmt import NS_PER_S, format_iso

NO_READ = "no read"

CSV_COLUMNS = (
    "meter",
    "period",
    "start",
    "end",
    "start_local",
    "end_local",
    "register_wh",
    "lcd_kwh",
    "energy_wh",
    "energy_kwh",
    "peak_demand_kw",
    "peak_demand_end",
    "quality",
    "gap_minutes",
    "glitches",
    "inferred_edges",
    "mismatches",
    "estimated_low_wh",
    "estimated_high_wh",
    "estimated_from",
    "last_lcd_kwh",
    "last_lcd_time",
    "timezone",
    "peak_demand_since",
    "estimated_wh",
    "estimate_method",
)


@dataclass(frozen=True)
class BilledMeter:
    """A meter the bill must list, with the schedule its periods follow."""

    name: str
    schedule: ReadSchedule


def configured_meters(config: str | None, db: str | None) -> list[BilledMeter] | None:
    """Return the meters a configuration lists (the one ``--config`` names, else the default
    one when ``--db`` is not given and it exists); None when no configuration is read."""
    import os

    from gateway.config import DEFAULT_CONFIG_PATH, load_config, read_schedule

    if config is None and (db or not os.path.exists(DEFAULT_CONFIG_PATH)):
        return None
    path = config or DEFAULT_CONFIG_PATH
    loaded = load_config(path)
    return [
        BilledMeter(m.name, read_schedule(loaded.billing, m, f"{path}: meters[{i}]"))
        for i, m in enumerate(loaded.meters)
    ]


def local_iso(t_ns: int, schedule: ReadSchedule) -> str:
    """Return an instant in the meter's own zone, with its offset."""
    moment = datetime.fromtimestamp(t_ns // NS_PER_S, UTC).astimezone(schedule.zone)
    return moment.isoformat()


def stored_schedule(stored: StoredMeter) -> ReadSchedule:
    """Return the schedule a stored meter was read on (UTC when its state has none)."""
    settings = (stored.core_state or {}).get("settings") or {}
    data = settings.get("read_schedule")
    return ReadSchedule(**data) if data else ReadSchedule()


def determinants(read: StoredRead) -> dict[str, Any]:
    """Return one read's fields as the MQTT read message carries them."""
    payload = read.payload()
    del payload["seq"]
    return payload


def _peak_since(read: StoredRead, readback: Readback, stored: StoredMeter | None) -> int | None:
    """Return since when the read's peak was measured: the last reset before it (a read
    resets the peak, so at least the period's start), else when counting began."""
    if read.columns["peak_window_end_ns"] is None:
        return None
    start_ns, t_ns = read.columns["start_ns"], read.columns["t_ns"]
    since: list[int] = [start_ns]
    if stored is not None:
        counting = (stored.core_state or {}).get("start_ns")
        if counting is not None:
            since.append(int(counting))
        since += [
            e.t_ns
            for e in readback.events(stored.id, start_ns)
            if e.kind == "peak_reset" and e.t_ns < t_ns
        ]
    return int(max(since))


def _row(
    read: StoredRead, readback: Readback, stored: StoredMeter | None, schedule: ReadSchedule
) -> dict[str, Any]:
    d = determinants(read)
    start_ns, t_ns = read.columns["start_ns"], read.columns["t_ns"]
    d["start_local"] = local_iso(start_ns, schedule)
    d["end_local"] = local_iso(t_ns, schedule)
    d["timezone"] = schedule.timezone
    since = _peak_since(read, readback, stored)
    d["peak_demand_since"] = None if since is None else format_iso(since)
    bounds = None
    if read.columns["estimate_from"] == "gap":
        energy = read.columns["energy_wh"]
        bounds = (
            read.columns["estimate_low_wh"] - energy,
            read.columns["estimate_high_wh"] - energy,
        )
    found = readback.estimates(read.meter, start_ns, t_ns).get(read.meter, {})
    estimate = period_estimate(sorted(found.values(), key=lambda e: e.start_ns), bounds)
    d["estimated_wh"] = None if estimate is None else estimate[0]
    d["estimate_method"] = None if estimate is None else estimate[1]
    return d


def _missing(name: str, period: str, schedule: ReadSchedule) -> dict[str, Any]:
    """Return the row of a meter that no read ended ``period`` for."""
    start_ns, end_ns = schedule.bounds(*parse_period(period))
    row: dict[str, Any] = dict.fromkeys(
        ("register_wh", "lcd_kwh", "energy_wh", "energy_kwh", "edges", "register"), None
    )
    row.update(
        {
            "meter": name,
            "period": period,
            "start": format_iso(start_ns),
            "end": format_iso(end_ns),
            "peak_demand_kw": None,
            "peak_demand_end": None,
            "peak_partial": None,
            "peak_reset": False,
            "quality": NO_READ,
            "gap_minutes": None,
            "glitches": None,
            "inferred_edges": None,
            "mismatches": None,
            "estimated_energy_wh": None,
            "last_reconciliation": None,
            "start_local": local_iso(start_ns, schedule),
            "end_local": local_iso(end_ns, schedule),
            "timezone": schedule.timezone,
            "peak_demand_since": None,
            "estimated_wh": None,
            "estimate_method": None,
        }
    )
    return row


def csv_row(d: dict[str, Any]) -> list[Any]:
    estimate = d["estimated_energy_wh"] or {}
    lcd = d["last_reconciliation"] or {}

    def blank(value: Any) -> Any:
        return "" if value is None else value

    return [
        d["meter"],
        d["period"],
        d["start"],
        d["end"],
        d["start_local"],
        d["end_local"],
        blank(d["register_wh"]),
        blank(d["lcd_kwh"]),
        blank(d["energy_wh"]),
        "" if d["energy_wh"] is None else f"{d['energy_wh'] / 1000:.3f}",
        "" if d["peak_demand_kw"] is None else f"{d['peak_demand_kw']:.2f}",
        d["peak_demand_end"] or "",
        d["quality"],
        blank(d["gap_minutes"]),
        blank(d["glitches"]),
        blank(d["inferred_edges"]),
        blank(d["mismatches"]),
        estimate.get("low", ""),
        estimate.get("high", ""),
        estimate.get("from", ""),
        lcd.get("lcd_kwh", ""),
        lcd.get("time", ""),
        d["timezone"],
        d["peak_demand_since"] or "",
        blank(d["estimated_wh"]),
        d["estimate_method"] or "",
    ]


def bill(
    url: str,
    period: str | None,
    meter: str | None,
    fmt: str = "csv",
    out: TextIO = sys.stdout,
    configured: Sequence[BilledMeter] | None = None,
) -> list[dict[str, Any]]:
    """Print the determinants of ``period`` (default: the latest period read) per meter: the
    ``configured`` meters, else every meter in the database; return the rows printed."""
    if period is not None:
        try:
            parse_period(period)
        except ValueError as exc:
            raise ConfigError(f"--period: {exc}") from None
    database = open_database(url)
    try:
        readback = Readback(database)
        reads = readback.reads()
        stored = {m.name: m for m in readback.meters()}
        if not reads:
            raise NotFoundError(
                "no meter read in the database yet (a read ends each billing period)"
            )
        if period is None:  # the latest period read (of the meter asked for, if it has one)
            own = [r for r in reads if r.meter == meter]
            period = max(r.columns["period"] for r in own or reads)
        chosen = {r.meter: r for r in reads if r.columns["period"] == period}
        if not chosen:
            known = ", ".join(sorted({r.columns["period"] for r in reads}))
            raise NotFoundError(
                f"--period {period}: no meter read ends this period (read: {known})"
            )
        if configured is None:
            listed = [BilledMeter(m.name, stored_schedule(m)) for m in stored.values()]
        else:
            listed = list(configured)
        names = {m.name for m in listed}
        # A meter read but no longer configured is still billed for what it was read.
        listed += [
            BilledMeter(name, stored_schedule(stored[name]))
            for name in chosen
            if name not in names and name in stored
        ]
        if meter is not None:
            known = ", ".join(sorted(m.name for m in listed)) or "none"
            listed = [m for m in listed if m.name == meter]
            if not listed:
                raise ConfigError(f"--meter {meter}: no such meter to bill (meters: {known})")
        rows = []
        for billed in sorted(listed, key=lambda m: m.name):
            read = chosen.get(billed.name)
            if read is None:
                rows.append(_missing(billed.name, period, billed.schedule))
            else:
                rows.append(_row(read, readback, stored.get(billed.name), billed.schedule))
    finally:
        database.close()
    if fmt == "json":
        json.dump({"period": period, "meters": {r["meter"]: r for r in rows}}, out, indent=2)
        out.write("\n")
    else:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerows(csv_row(r) for r in rows)
    return rows
