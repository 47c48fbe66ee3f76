"""``amr-gateway bill``: the billing determinants of each meter for a period, from its reads.

A period's determinants are the read that ended it (gateway/core/reads.py): the energy between
that read and the one before, in integer Wh, the peak demand of the period with its window end
(the peak the read reset), and the quality with what made it partial. Energy is never more
than was counted; an estimate, where one can be bounded, is printed beside it.
"""

from __future__ import annotations

import csv
import json
import sys
from typing import Any, TextIO

from gateway.commands.database import open_database
from gateway.core.schedule import parse_period
from gateway.errors import ConfigError
from gateway.sinks.reads import StoredRead, stored_reads

CSV_COLUMNS = (
    "meter",
    "period",
    "start",
    "end",
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
)


def determinants(read: StoredRead) -> dict[str, Any]:
    """Return one meter's determinants as ``bill --format json`` prints them."""
    payload = read.payload()
    del payload["seq"]
    return payload


def csv_row(read: StoredRead) -> list[Any]:
    return determinants_row(determinants(read))


def determinants_row(d: dict[str, Any]) -> list[Any]:
    """Return determinants (a read's payload, as ``bill --format json`` prints) as a CSV row."""
    estimate = d["estimated_energy_wh"] or {}
    lcd = d["last_reconciliation"] or {}
    return [
        d["meter"],
        d["period"],
        d["start"],
        d["end"],
        d["register_wh"],
        d["lcd_kwh"],
        d["energy_wh"],
        f"{d['energy_wh'] / 1000:.3f}",
        "" if d["peak_demand_kw"] is None else f"{d['peak_demand_kw']:.2f}",
        d["peak_demand_end"] or "",
        d["quality"],
        d["gap_minutes"],
        d["glitches"],
        d["inferred_edges"],
        d["mismatches"],
        estimate.get("low", ""),
        estimate.get("high", ""),
        estimate.get("from", ""),
        lcd.get("lcd_kwh", ""),
        lcd.get("time", ""),
    ]


def bill(
    url: str,
    period: str | None,
    meter: str | None,
    fmt: str = "csv",
    out: TextIO = sys.stdout,
) -> list[StoredRead]:
    """Print the determinants of ``period`` (default: the latest period read) per meter."""
    if period is not None:
        try:
            parse_period(period)
        except ValueError as exc:
            raise ConfigError(f"--period: {exc}") from None
    database = open_database(url)
    try:
        reads = stored_reads(database, meter)
    finally:
        database.close()
    if meter is not None and not reads:
        raise ConfigError(f"--meter {meter}: no meter read of this meter in the database")
    if not reads:
        raise ConfigError("no meter read in the database yet (a read ends each billing period)")
    if period is None:
        period = max(r.columns["period"] for r in reads)
    chosen = [r for r in reads if r.columns["period"] == period]
    if not chosen:
        known = ", ".join(sorted({r.columns["period"] for r in reads}))
        raise ConfigError(f"--period {period}: no meter read ends this period (read: {known})")
    if fmt == "json":
        json.dump(
            {"period": period, "meters": {r.meter: determinants(r) for r in chosen}},
            out,
            indent=2,
        )
        out.write("\n")
    else:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerows(csv_row(r) for r in chosen)
    return chosen
