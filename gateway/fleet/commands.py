"""``status``, ``bill`` and ``export`` on a fleet database, across gateways (``--gateway``).

The database given with ``--db`` is recognised by its schema (the fleet's version table), so
the commands people know work unchanged on it. The formats are the gateway's own, with a
``gateway`` column in front (CSV) or a level of gateways (JSON): the CSV row of a bill comes
from :func:`gateway.commands.bill.determinants_row`, an interval's from
:func:`gateway.commands.database.interval_csv_row`, the Green Button feed from
:func:`gateway.commands.espi.build_feed`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from gateway.commands.database import NEEDS_A_LOOK, RECENT_EVENTS_S
from gateway.config import check_database_url
from gateway.errors import ConfigError, GatewayError
from gateway.fleet.revision import VERSION_TABLE
from gateway.timefmt import NS_PER_S, format_iso, parse_time_ns

if TYPE_CHECKING:
    from gateway.fleet.database import FleetDatabase

# SQLAlchemy (the fleet's read-back and database) is imported once the database is known to be
# a fleet's: `status` on a gateway's SQLite file starts without it (issue 21).


def _is_fleet(url: str) -> bool:
    """Whether ``url`` is a fleet database; anything wrong with it is left to the gateway's own
    commands, which say what (a bare path, a missing file or PostgreSQL database)."""
    check_database_url(url, "--db")
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if not path or not os.path.exists(path):
            return False
        return _sqlite_has_table(path, VERSION_TABLE)
    from gateway.fleet.database import is_fleet_database
    from gateway.sinks.database import make_engine

    engine = make_engine(url, exclusive=False)
    try:
        return is_fleet_database(engine)
    except GatewayError:
        return False
    finally:
        engine.dispose()


def _sqlite_has_table(path: str, table: str) -> bool:
    """Look at an SQLite file's schema without opening it as the gateway does: a running daemon
    or collector holds its file alone (exclusive locking), and another program may have it open
    in shared mode; either way a read-only look is enough, through a copy where it is held."""
    import sqlite3
    import urllib.parse

    from gateway.sinks.snapshot import copy_database, held_elsewhere

    look, copy = path, None
    if held_elsewhere(path):
        copy = look = copy_database(path)
    try:
        uri = f"file:{urllib.parse.quote(os.path.abspath(look))}?mode=ro"
        if not os.path.exists(look + "-wal") or os.path.getsize(look + "-wal") == 0:
            # No log to read: all is in the file, and SQLite need not leave a -wal and a -shm
            # beside it on the card for every `status` (issue 21).
            uri += "&immutable=1"
        connection = sqlite3.connect(uri, uri=True)
        try:
            query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
            return connection.execute(query, (table,)).fetchone() is not None
        except sqlite3.DatabaseError:
            return False  # not a database: the gateway's own command says what is wrong
        finally:
            connection.close()
    finally:
        if copy is not None:
            import shutil

            shutil.rmtree(os.path.dirname(copy), ignore_errors=True)


def run_fleet_command(args: argparse.Namespace, out: TextIO = sys.stdout) -> int | None:
    """Run ``args`` on a fleet database; None when ``--db`` is not one (a gateway's)."""
    url = getattr(args, "db", None)
    gateway = getattr(args, "gateway", None)
    if url is None or not _is_fleet(url):
        if gateway is not None:
            raise ConfigError("--gateway: only on a fleet database (--db of the collector's)")
        return None
    from gateway.fleet.database import FleetDatabase

    database = FleetDatabase(url, upgrade=False)
    try:
        if args.command == "status":
            fleet_status(database, gateway, args.json, out)
        elif args.command == "bill":
            fleet_bill(database, gateway, args.meter, args.period, args.format, out)
        else:
            fleet_export(database, gateway, args.meter, args.start, args.end, args.format, out)
    finally:
        database.close()
    return 0


# -- status ----------------------------------------------------------------------------------

ANOMALY_KEYS = ("time", "kind", "channel", "detail", "missed_wh")  # as the gateway's status


def status_json(database: FleetDatabase, gateway: str | None, now_ns: int) -> dict[str, Any]:
    """Return the fleet's status: each gateway's last will and its meters, silent ones marked."""
    from gateway.fleet import readback

    engine = database.engine
    wills = readback.gateways(engine)
    gaps = readback.open_gaps(engine)
    # As the gateway's status: the events that need a look, of the last day.
    events = readback.recent_events(
        engine, gateway, now_ns - RECENT_EVENTS_S * NS_PER_S, NEEDS_A_LOOK
    )
    last_reads: dict[tuple[str, str], dict[str, Any]] = {}
    for g, m, payload in readback.reads(engine, gateway):
        last_reads[(g, m)] = payload
    result: dict[str, Any] = {}
    for g, (state, since_ns) in sorted(wills.items()):
        if gateway is None or g == gateway:
            result[g] = {"status": state, "since": format_iso(since_ns, 0), "meters": {}}
    for meter in readback.meters(engine, gateway):
        entry = result.setdefault(meter.gateway, {"status": None, "since": None, "meters": {}})
        end_ns = meter.last_interval_end_ns
        # Silent: no interval has closed for more than an interval's length (plus the same
        # again for the gateway to commit and publish it).
        length_ns = (meter.interval_s or 900) * NS_PER_S
        silent = end_ns is None or now_ns - end_ns > 2 * length_ns
        held = meter.state or {}
        entry["meters"][meter.meter] = {
            "model": meter.model,
            "energy_wh": meter.energy_wh,
            "state_time": held.get("time"),
            "last_interval_end": None if end_ns is None else format_iso(end_ns, 0),
            "last_heard": format_iso(meter.last_ns, 0),
            "silent_since": (format_iso(end_ns or meter.first_ns, 0) if silent else None),
            "open_gaps": [
                {
                    "messages": gap.kind,
                    "first_seq": gap.first_seq,
                    "last_seq": gap.last_seq,
                    "since": format_iso(gap.opened_ns, 0),
                }
                for gap in gaps.get(meter.id, [])
            ],
            "last_read": last_reads.get((meter.gateway, meter.meter)),
            "anomalies": len(events.get(meter.id, [])),
            "open_anomalies": [
                {k: e.get(k) for k in ANOMALY_KEYS} for e in events.get(meter.id, [])[-20:]
            ],
        }
    if gateway is not None and gateway not in result:
        raise ConfigError(f"--gateway {gateway}: no such gateway in the fleet database")
    return {"gateways": result}


def fleet_status(database: FleetDatabase, gateway: str | None, as_json: bool, out: TextIO) -> None:
    report = status_json(database, gateway, time.time_ns())
    if as_json:
        json.dump(report, out, indent=2)
        out.write("\n")
        return
    if not report["gateways"]:
        out.write(f"no gateway in {database.name} yet\n")
    for name, g in report["gateways"].items():
        will = f"{g['status']} since {g['since']}" if g["status"] else "status unknown"
        out.write(f"{name}: {will}; {len(g['meters'])} meters\n")
        for meter, m in g["meters"].items():
            energy = "-" if m["energy_wh"] is None else f"{m['energy_wh']} Wh"
            line = f"  {meter} ({m['model'] or 'model unknown'}): {energy}"
            line += f", last interval to {m['last_interval_end'] or '-'}"
            if m["silent_since"]:
                line += f"; SILENT since {m['silent_since']}"
            if m["anomalies"]:
                line += f"; {m['anomalies']} anomalies in the last day"
            out.write(line + "\n")
            for gap in m["open_gaps"]:
                out.write(
                    f"    gap: {gap['messages']} seq {gap['first_seq']}..{gap['last_seq']}"
                    f" missing since {gap['since']}\n"
                )


# -- bill ------------------------------------------------------------------------------------


def fleet_bill(
    database: FleetDatabase,
    gateway: str | None,
    meter: str | None,
    period: str | None,
    fmt: str,
    out: TextIO,
) -> None:
    """Print one row per meter of every gateway for ``period``; a meter with no read says so."""
    from gateway.commands.bill import CSV_COLUMNS, NO_READ, csv_row
    from gateway.core.schedule import parse_period
    from gateway.fleet import readback

    engine = database.engine
    if period is not None:
        try:
            parse_period(period)
        except ValueError as exc:
            raise ConfigError(f"--period: {exc}") from None
    else:
        known = readback.periods(engine)
        if not known:
            raise ConfigError("no meter read in the fleet database yet")
        period = known[-1]
    everyone = readback.meters(engine, gateway, meter)
    if not everyone:
        raise ConfigError(
            "no such meter in the fleet database"
            + (f" (--gateway {gateway})" if gateway else "")
            + (f" (--meter {meter})" if meter else "")
        )
    found = {(g, m): p for g, m, p in readback.reads(engine, gateway, meter, period)}
    rows: list[tuple[str, str, dict[str, Any] | None]] = []
    for item in everyone:
        payload = found.get((item.gateway, item.meter))
        if payload is not None:
            payload = {k: v for k, v in payload.items() if k != "seq"}
        rows.append((item.gateway, item.meter, payload))
    if fmt == "json":
        gateways: dict[str, Any] = {}
        for g, m, d in rows:
            gateways.setdefault(g, {})[m] = d if d is not None else {"quality": NO_READ}
        json.dump({"period": period, "gateways": gateways}, out, indent=2)
        out.write("\n")
        return
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("gateway", *CSV_COLUMNS))
    for g, m, d in rows:
        # The bill's columns a published read does not carry (the local times and zone of the
        # gateway's schedule, the peak's start, estimates, the last LCD reading) stay empty.
        row = dict.fromkeys(BILL_KEYS) | (d or {"meter": m, "period": period, "quality": NO_READ})
        writer.writerow([g, *csv_row(row)])


BILL_KEYS = (
    "meter",
    "period",
    "start",
    "end",
    "start_local",
    "end_local",
    "register_wh",
    "lcd_kwh",
    "energy_wh",
    "peak_demand_kw",
    "peak_demand_end",
    "quality",
    "gap_minutes",
    "glitches",
    "inferred_edges",
    "mismatches",
    "estimated_energy_wh",
    "last_reconciliation",
    "timezone",
    "peak_demand_since",
    "estimated_wh",
    "estimate_method",
)


# -- export ----------------------------------------------------------------------------------


def fleet_export(
    database: FleetDatabase,
    gateway: str | None,
    meter: str | None,
    start: str | None,
    end: str | None,
    fmt: str,
    out: TextIO,
) -> None:
    from gateway.commands.database import EXPORT_COLUMNS, export_window, interval_csv_row
    from gateway.fleet import readback

    # The gateway's own rules: a date is that UTC day (``--to`` includes it), a time as given.
    window = export_window(start, end, None)
    start_ns, end_ns = window.start_ns, window.end_ns
    engine = database.engine
    if (gateway or meter) and not readback.meters(engine, gateway, meter):
        raise ConfigError(
            "--gateway/--meter: no such meter in the fleet database"
            f" ({gateway or '*'}/{meter or '*'})"
        )
    rows = readback.intervals(engine, gateway, meter, start_ns, end_ns)
    if fmt == "espi":
        _export_espi(engine, rows, gateway, meter, start_ns, end_ns, out)
        return
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("gateway", *EXPORT_COLUMNS))
    for g, m, row in rows:
        writer.writerow([g, *interval_csv_row(m, row)])


def read_columns(payload: dict[str, Any]) -> dict[str, Any]:
    """Return what the Green Button feed needs of a read, from its published payload.

    The payload carries the peak rounded to 0.01 kW, not its window's energy: it is given to
    the feed as that many W over an hour, so the feed shows the peak as published.
    """
    kw = payload.get("peak_demand_kw")
    end = payload.get("peak_demand_end")
    return {
        "period": payload["period"],
        "start_ns": parse_time_ns(payload["start"]),
        "t_ns": parse_time_ns(payload["end"]),
        "energy_wh": payload["energy_wh"],
        "peak_window_energy_wh": None if kw is None else round(kw * 1000),
        "peak_window_s": 3600,
        "peak_window_end_ns": None if end is None else parse_time_ns(end),
        "quality": payload["quality"],
    }


def _export_espi(
    engine: Any,
    rows: list[tuple[str, str, Any]],
    gateway: str | None,
    meter: str | None,
    start_ns: int | None,
    end_ns: int | None,
    out: TextIO,
) -> None:
    import xml.etree.ElementTree as ET

    from gateway.commands.espi import build_feed
    from gateway.fleet import readback
    from gateway.sinks.readback import StoredRead

    intervals: dict[str, list[Any]] = {}
    for g, m, row in rows:
        intervals.setdefault(f"{g}/{m}", []).append(row)
    reads: dict[str, list[StoredRead]] = {}
    for g, m, payload in readback.reads(engine, gateway, meter):
        columns = read_columns(payload)
        if (start_ns is None or columns["t_ns"] >= start_ns) and (
            end_ns is None or columns["t_ns"] <= end_ns
        ):
            name = f"{g}/{m}"
            reads.setdefault(name, []).append(StoredRead(name, columns, payload["seq"], None))
    feed = build_feed(gateway or "fleet", intervals, reads, time.time_ns())
    ET.indent(feed)
    out.write('<?xml version="1.0" encoding="UTF-8"?>\n')
    out.write(ET.tostring(feed, encoding="unicode"))
    out.write("\n")
