"""``amr-gateway export --format espi``: a Green Button (NAESB REQ.21 ESPI) Atom feed.

Per meter: a UsagePoint (electricity), one MeterReading with its ReadingType (energy, Wh,
delta data, the interval length, power of ten 0), IntervalBlocks of one UTC day each holding
the closed intervals (start, duration, value in Wh; a ReadingQuality ``questionable`` (10) on
every interval not ``complete``), and a UsageSummary per billing read (the period, its energy,
its peak demand in W, the read instant as ``statusTimeStamp``; ``qualityOfReading`` valid (0)
for a complete read, questionable (10) for a partial one). The estimates of unwatched time
(gateway/core/estimate.py) go in a second MeterReading of the same ReadingType, never into the
measured values: one IntervalReading per estimated interval, with ESPI's own reading-quality
codes, 9 (linear interpolation) or 8 (from historical data). Times are UTC epoch seconds, as
the standard's TimeType says. Elements come in the order espi.xsd's sequences give them.

Resources are linked as Green Button readers expect: an entry's ``self`` and ``up`` links, and
``related`` links from a UsagePoint to its MeterReading and UsageSummary collections and from a
MeterReading to its ReadingType and IntervalBlock collection.
"""

from __future__ import annotations

import sys
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from itertools import groupby
from typing import Any, TextIO

from gateway.commands.database import (
    export_estimates,
    export_window,
    meter_intervals,
    open_database,
)
from gateway.core.estimate import HISTORY, LINEAR, Estimate
from gateway.sinks.payloads import peak_kw
from gateway.sinks.readback import Readback, StoredRead
from gateway.timefmt import NS_PER_S, format_iso

ATOM = "http://www.w3.org/2005/Atom"
ESPI = "http://naesb.org/espi"
ET.register_namespace("", ATOM)
ET.register_namespace("espi", ESPI)
BASE = "https://amr-gateway.invalid/espi/1_1/resource"
NAMESPACE = uuid.UUID("6f1d7c4e-2b8e-5d57-9a57-6f1bd3a0c1e1")  # this exporter's ids

# ESPI codes (espi.xsd enumerations)
SERVICE_ELECTRICITY = 0
ACCUMULATION_DELTA = 4
COMMODITY_SECONDARY_METERED = 1
FLOW_FORWARD = 1
KIND_ENERGY = 12
UOM_WH = 72
UOM_W = 38
QUALITY_VALID = 0
QUALITY_QUESTIONABLE = 10
QUALITY_ESTIMATED = {LINEAR: 9, HISTORY: 8}  # linear interpolation; from historical data
DAY_S = 86_400


def _sub(parent: ET.Element, tag: str, text: object = None) -> ET.Element:
    element = ET.SubElement(parent, f"{{{ESPI}}}{tag}")
    if text is not None:
        element.text = str(text)
    return element


def _entry(
    feed: ET.Element, key: str, title: str, self_href: str, up_href: str, related: Sequence[str]
) -> ET.Element:
    """Add an Atom entry; return its ``content`` element."""
    entry = ET.SubElement(feed, f"{{{ATOM}}}entry")
    ET.SubElement(entry, f"{{{ATOM}}}id").text = f"urn:uuid:{uuid.uuid5(NAMESPACE, key)}"
    ET.SubElement(entry, f"{{{ATOM}}}link", rel="self", href=f"{BASE}/{self_href}")
    ET.SubElement(entry, f"{{{ATOM}}}link", rel="up", href=f"{BASE}/{up_href}")
    for href in related:
        ET.SubElement(entry, f"{{{ATOM}}}link", rel="related", href=f"{BASE}/{href}")
    ET.SubElement(entry, f"{{{ATOM}}}title").text = title
    return ET.SubElement(entry, f"{{{ATOM}}}content")


def _interval(parent: ET.Element, tag: str, start_ns: int, end_ns: int) -> None:
    period = _sub(parent, tag)
    _sub(period, "duration", (end_ns - start_ns) // NS_PER_S)  # duration before start (xsd)
    _sub(period, "start", start_ns // NS_PER_S)


def _measurement(parent: ET.Element, tag: str, uom: int, value: int, t_ns: int) -> None:
    measurement = _sub(parent, tag)
    _sub(measurement, "powerOfTenMultiplier", 0)
    _sub(measurement, "timeStamp", t_ns // NS_PER_S)
    _sub(measurement, "uom", uom)
    _sub(measurement, "value", value)


def build_feed(
    gateway: str,
    intervals: dict[str, list[Any]],
    reads: dict[str, list[StoredRead]],
    updated_ns: int,
    estimates: dict[str, dict[int, Estimate]] | None = None,
) -> ET.Element:
    """Return the feed for ``intervals`` (rows with start_ns, end_ns, energy_wh, quality),
    ``reads`` and the ``estimates`` of unwatched time (by interval start) per meter."""
    feed = ET.Element(f"{{{ATOM}}}feed")
    ET.SubElement(feed, f"{{{ATOM}}}id").text = f"urn:uuid:{uuid.uuid5(NAMESPACE, gateway)}"
    ET.SubElement(feed, f"{{{ATOM}}}title").text = f"{gateway}: Green Button data"
    ET.SubElement(feed, f"{{{ATOM}}}updated").text = format_iso(updated_ns, 0)
    for number, meter in enumerate(sorted(set(intervals) | set(reads)), start=1):
        point = f"Subscription/1/UsagePoint/{number}"
        rows = intervals.get(meter, [])
        meter_reads = reads.get(meter, [])
        content = _entry(
            feed,
            f"{gateway}/{meter}",
            meter,
            point,
            "Subscription/1/UsagePoint",
            [f"{point}/MeterReading", f"{point}/UsageSummary"],
        )
        usage_point = _sub(content, "UsagePoint")
        _sub(_sub(usage_point, "ServiceCategory"), "kind", SERVICE_ELECTRICITY)
        reading = f"{point}/MeterReading/1"
        reading_type = f"ReadingType/{number}"
        content = _entry(
            feed,
            f"{gateway}/{meter}/MeterReading",
            f"{meter} interval energy",
            reading,
            f"{point}/MeterReading",
            [reading_type, f"{reading}/IntervalBlock"],
        )
        _sub(content, "MeterReading")
        length_s = (rows[0].end_ns - rows[0].start_ns) // NS_PER_S if rows else 900
        content = _entry(
            feed,
            f"{gateway}/{meter}/ReadingType",
            "Energy delivered (Wh)",
            reading_type,
            "ReadingType",
            [],
        )
        kind = _sub(content, "ReadingType")
        _sub(kind, "accumulationBehaviour", ACCUMULATION_DELTA)
        _sub(kind, "commodity", COMMODITY_SECONDARY_METERED)
        _sub(kind, "dataQualifier", 12)  # normal
        _sub(kind, "flowDirection", FLOW_FORWARD)
        _sub(kind, "intervalLength", length_s)
        _sub(kind, "kind", KIND_ENERGY)
        _sub(kind, "phase", 769)  # all phases (the meter's register sums them)
        _sub(kind, "powerOfTenMultiplier", 0)
        _sub(kind, "timeAttribute", 0)
        _sub(kind, "uom", UOM_WH)
        measured = [(r.start_ns, r.end_ns, r.energy_wh, _measured_quality(r.quality)) for r in rows]
        _interval_blocks(feed, f"{gateway}/{meter}", meter, reading, measured)
        found = (estimates or {}).get(meter, {})
        if found:
            length_ns = length_s * NS_PER_S
            estimated = f"{point}/MeterReading/2"
            content = _entry(
                feed,
                f"{gateway}/{meter}/MeterReading/estimated",
                f"{meter} estimated energy of unwatched time",
                estimated,
                f"{point}/MeterReading",
                [reading_type, f"{estimated}/IntervalBlock"],
            )
            _sub(content, "MeterReading")
            values = [
                (t, t + length_ns, e.estimated_wh, QUALITY_ESTIMATED[e.method])
                for t, e in sorted(found.items())
            ]
            _interval_blocks(feed, f"{gateway}/{meter}/estimated", meter, estimated, values)
        for index, read in enumerate(meter_reads, start=1):
            columns = read.columns
            content = _entry(
                feed,
                f"{gateway}/{meter}/UsageSummary/{columns['t_ns']}",
                f"{meter} billing period {columns['period']}",
                f"{point}/UsageSummary/{index}",
                f"{point}/UsageSummary",
                [],
            )
            summary = _sub(content, "UsageSummary")
            _interval(summary, "billingPeriod", columns["start_ns"], columns["t_ns"])
            _measurement(
                summary, "overallConsumptionLastPeriod", UOM_WH, columns["energy_wh"], read_ns(read)
            )
            demand = peak_kw(columns["peak_window_energy_wh"], columns["peak_window_s"])
            if demand is not None:
                _measurement(
                    summary,
                    "peakDemand",
                    UOM_W,
                    round(demand * 1000),
                    columns["peak_window_end_ns"],
                )
            quality = QUALITY_VALID if columns["quality"] == "complete" else QUALITY_QUESTIONABLE
            _sub(summary, "qualityOfReading", quality)
            _sub(summary, "statusTimeStamp", read_ns(read) // NS_PER_S)
            _sub(summary, "commodity", COMMODITY_SECONDARY_METERED)
    return feed


def _measured_quality(quality: str) -> int | None:
    return None if quality == "complete" else QUALITY_QUESTIONABLE


def _interval_blocks(
    feed: ET.Element,
    key: str,
    meter: str,
    reading: str,
    values: Sequence[tuple[int, int, int, int | None]],
) -> None:
    """Add a MeterReading's IntervalBlocks, one per UTC day, of (start_ns, end_ns, Wh,
    reading quality or None) readings."""
    for block, (day, day_values) in enumerate(
        groupby(values, key=lambda v: v[0] // (DAY_S * NS_PER_S)), start=1
    ):
        day_list = list(day_values)
        content = _entry(
            feed,
            f"{key}/IntervalBlock/{day}",
            f"{meter} {format_iso(day * DAY_S * NS_PER_S)[:10]}",
            f"{reading}/IntervalBlock/{block}",
            f"{reading}/IntervalBlock",
            [],
        )
        interval_block = _sub(content, "IntervalBlock")
        _interval(interval_block, "interval", day_list[0][0], day_list[-1][1])
        for start_ns, end_ns, value_wh, quality in day_list:
            item = _sub(interval_block, "IntervalReading")
            if quality is not None:
                _sub(_sub(item, "ReadingQuality"), "quality", quality)
            _interval(item, "timePeriod", start_ns, end_ns)
            _sub(item, "value", value_wh)


def read_ns(read: StoredRead) -> int:
    return int(read.columns["t_ns"])


def export_espi(
    url: str,
    meter: str | None,
    start: str | None,
    end: str | None,
    out: TextIO = sys.stdout,
    *,
    gateway: str = "amr-gateway",
    now_ns: int | None = None,
    period: str | None = None,
) -> int:
    """Write the feed of the stored intervals in ``[start, end]`` and of the billing reads
    taken in it; return how many intervals it holds."""
    import time

    window = export_window(start, end, period)
    database = open_database(url)
    try:
        readback = Readback(database)
        rows = meter_intervals(readback, meter, window)
        estimates = export_estimates(readback, meter, window, rows)
        # a billing period belongs to the window its read (its end) falls in
        reads = [r for r in readback.reads(meter) if window.holds_read(r)]
    finally:
        database.close()
    intervals: dict[str, list[Any]] = {}
    for name, row in rows:
        intervals.setdefault(name, []).append(row)
    by_meter: dict[str, list[StoredRead]] = {}
    for read in reads:
        by_meter.setdefault(read.meter, []).append(read)
    feed = build_feed(gateway, intervals, by_meter, now_ns or time.time_ns(), estimates)
    ET.indent(feed)
    out.write('<?xml version="1.0" encoding="UTF-8"?>\n')
    out.write(ET.tostring(feed, encoding="unicode"))
    out.write("\n")
    return len(rows)
