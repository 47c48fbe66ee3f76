"""Billing reads end to end: ``replay --db`` and the live daemon read at the same instants,
``bill`` prints hand-computed determinants, reads go out on ``amr/<gw>/<meter>/read``, and the
Green Button export reads back through an independent parser as the CSV export says."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from mqtt_helpers import Broker, Gateway, Subscriber, gateway_config, wait_for

# A New York tenant: 0.6 kW from 03:00Z on 1 November 2026 (23:00 EDT the day before), 3 kW
# from 12:00Z to 13:00Z on 15 November, 0.6 kW again until 06:00Z on 1 December. Period 2026-11
# runs from midnight EDT (04:00Z) to midnight EST (05:00Z): 721 hours, DST ends inside it.
PROFILE = """time,kw
2026-11-01T03:00:00Z,0.6
2026-11-15T12:00:00Z,3.0
2026-11-15T13:00:00Z,0.6
2026-12-01T06:00:00Z,0
"""
BILLING = """
[billing]
timezone = "America/New_York"
"""
METER = """
[[meters]]
name = "unit-101"
model = "2O208-4W"
source = "{source}"
{extra}
"""

# By hand. At 0.6 kW an edge (5 Wh) every 30 s from 03:00:30Z; at 3 kW every 6 s.
# Register at 04:00Z: 1 h x 600 W = 600 Wh, but the edge at exactly 04:00:00 belongs to the
# next period: 595 Wh (119 edges). Register at 05:00Z on 1 December: 722 h x 600 W + 1 h x
# 2,400 W = 435,600 Wh, less the edge exactly at the read: 435,595 Wh.
# Period 2026-11: 435,595 - 595 = 435,000 Wh (721 h x 0.6 kW + 2.4 kWh); 30 x 24 h would
# have said 434,400 Wh.
# Peak: the first window wholly at 3 kW is [12:00, 12:15): 150 edges (the 0.6 kW edge at
# 12:00:00 and 149 at 3 kW), 750 Wh / 0.25 h = 3.00 kW, window end 12:15Z.
# Period 2026-10 (from 04:00Z on 1 October): 595 Wh, partial, not watched for 31 days - 1 h
# (44,580 minutes); its peak is 0.60 kW, first reached by the window [03:05, 03:20).
NOVEMBER = {
    "meter": "unit-101",
    "period": "2026-11",
    "start": "2026-11-01T04:00:00Z",
    "end": "2026-12-01T05:00:00Z",
    "register_wh": 435595,
    "lcd_kwh": 435,
    "energy_wh": 435000,
    "energy_kwh": 435.0,
    "edges": 87000,
    "register": "10",
    "peak_demand_kw": 3.0,
    "peak_demand_end": "2026-11-15T12:15:00Z",
    "peak_partial": False,
    "peak_reset": True,
    "quality": "complete",
    "gap_minutes": 0.0,
    "glitches": 0,
    "inferred_edges": 0,
    "mismatches": 0,
    "estimated_energy_wh": None,
    "last_reconciliation": None,
}
# bill adds the period in the meter's own zone, since when the peak was measured (the
# October read at 04:00Z reset it) and the estimate of unwatched time (none: all watched).
BILLED = {
    **NOVEMBER,
    "start_local": "2026-11-01T00:00:00-04:00",
    "end_local": "2026-12-01T00:00:00-05:00",
    "timezone": "America/New_York",
    "peak_demand_since": "2026-11-01T04:00:00Z",
    "estimated_wh": None,
    "estimate_method": None,
}


def _imported(cli, tmp_path: Path) -> str:
    profile = tmp_path / "profile.csv"
    profile.write_text(PROFILE)
    log = tmp_path / "unit-101.csv"
    result = cli("simulate", "--profile", str(profile), "--out", str(log), "--meter", "unit-101")
    assert result.returncode == 0, result.stderr
    config = tmp_path / "import.toml"
    config.write_text(BILLING + METER.format(source="replay", extra=f'file = "{log}"'))
    url = f"sqlite:///{tmp_path / 'import.db'}"
    result = cli("replay", str(log), "--db", url, "--config", str(config))
    assert result.returncode == 0, result.stderr
    return url


def _bill(cli, url: str, *args: str) -> dict:
    result = cli("bill", "--db", url, "--format", "json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def imported(cli, tmp_path: Path) -> str:
    return _imported(cli, tmp_path)


def test_bill_after_replay_by_hand_over_a_dst_change(cli, imported: str) -> None:
    assert _bill(cli, imported, "--period", "2026-11") == {
        "period": "2026-11",
        "meters": {"unit-101": BILLED},
    }
    october = _bill(cli, imported, "--period", "2026-10")["meters"]["unit-101"]
    assert (october["energy_wh"], october["register_wh"], october["quality"]) == (
        595,
        595,
        "partial",
    )
    assert (october["gap_minutes"], october["peak_demand_kw"]) == (44580.0, 0.6)
    assert october["peak_demand_end"] == "2026-11-01T03:20:00Z"
    # Measured since counting began (03:00Z), not since the period's start a month before.
    assert october["peak_demand_since"] == "2026-11-01T03:00:00Z"
    assert october["start_local"] == "2026-10-01T00:00:00-04:00"
    # The latest period read is the default; CSV carries the same figures.
    result = cli("bill", "--db", imported)
    assert result.returncode == 0, result.stderr
    (row,) = csv.DictReader(io.StringIO(result.stdout))
    assert (row["period"], row["energy_wh"], row["energy_kwh"]) == ("2026-11", "435000", "435.000")
    assert (row["peak_demand_kw"], row["peak_demand_end"]) == ("3.00", "2026-11-15T12:15:00Z")
    assert (row["quality"], row["register_wh"], row["lcd_kwh"]) == ("complete", "435595", "435")


def test_bill_refuses_a_period_nobody_read(cli, imported: str) -> None:
    result = cli("bill", "--db", imported, "--period", "2027-01")
    assert result.returncode == 2 and "2027-01" in result.stderr and "2026-11" in result.stderr
    result = cli("bill", "--db", imported, "--period", "2026-13")
    assert result.returncode == 2 and "YYYY-MM" in result.stderr


def test_importing_again_reads_nothing_twice(cli, tmp_path: Path, imported: str) -> None:
    log = tmp_path / "unit-101.csv"
    result = cli("replay", str(log), "--db", imported, "--config", str(tmp_path / "import.toml"))
    assert result.returncode == 0, result.stderr
    assert _bill(cli, imported, "--period", "2026-11")["meters"]["unit-101"] == BILLED
    status = json.loads(cli("status", "--db", imported, "--json").stdout)
    assert status["meters"]["unit-101"]["last_read"]["seq"] == 2


def test_the_live_daemon_reads_at_the_same_instants_and_publishes_them(cli, tmp_path: Path) -> None:
    profile = tmp_path / "profile.csv"
    profile.write_text(PROFILE)
    broker = Broker(tmp_path)
    broker.start()
    sub = Subscriber(broker, ["amr/gwt/unit-101/read"])
    meters = BILLING + METER.format(source="simulate", extra=f'speed = 1e6\nprofile = "{profile}"')
    gw = Gateway(gateway_config(tmp_path, broker, meters=meters)).start()
    try:
        reads = wait_for(
            lambda: len(sub.on("amr/gwt/unit-101/read")) >= 2 and sub.on("amr/gwt/unit-101/read"),
            120,
            "two reads",
        )
    finally:
        assert gw.stop() == 0, gw.stderr.decode()
        sub.close()
        broker.stop()
    october, november = (m.json() for m in reads[:2])
    assert reads[0].qos == 1
    assert (october["period"], october["energy_wh"], october["seq"]) == ("2026-10", 595, 1)
    assert november == {**NOVEMBER, "seq": 2}
    daemon = _bill(cli, f"sqlite:///{tmp_path / 'gateway.db'}", "--period", "2026-11")
    assert daemon["meters"]["unit-101"] == BILLED


# -- Green Button --------------------------------------------------------------------------------

ESPI = "{http://naesb.org/espi}"
# Child order of the ESPI types written, as espi.xsd's sequences give it.
XSD_ORDER = {
    "ReadingType": [
        "accumulationBehaviour",
        "commodity",
        "consumptionTier",
        "currency",
        "dataQualifier",
        "defaultQuality",
        "flowDirection",
        "intervalLength",
        "kind",
        "phase",
        "powerOfTenMultiplier",
        "timeAttribute",
        "tou",
        "uom",
    ],
    "IntervalBlock": ["interval", "IntervalReading"],
    "IntervalReading": ["cost", "ReadingQuality", "timePeriod", "value"],
    "interval": ["duration", "start"],
    "timePeriod": ["duration", "start"],
    "billingPeriod": ["duration", "start"],
    "UsageSummary": [
        "billingPeriod",
        "overallConsumptionLastPeriod",
        "peakDemand",
        "qualityOfReading",
        "statusTimeStamp",
        "commodity",
    ],
    "overallConsumptionLastPeriod": ["powerOfTenMultiplier", "timeStamp", "uom", "value"],
    "peakDemand": ["powerOfTenMultiplier", "timeStamp", "uom", "value"],
    "UsagePoint": ["ServiceCategory"],
}


def _check_order(root: ET.Element) -> int:
    checked = 0
    for element in root.iter():
        name = element.tag.removeprefix(ESPI)
        if name not in XSD_ORDER or not element.tag.startswith(ESPI):
            continue
        order = XSD_ORDER[name]
        positions = [order.index(child.tag.removeprefix(ESPI)) for child in element]
        assert positions == sorted(positions), f"{name}: children out of the xsd's order"
        checked += 1
    return checked


def test_green_button_reads_back_as_the_csv_export(cli, tmp_path: Path, imported: str) -> None:
    from greenbutton_objects.parse import parse_feed

    window = ("--from", "2026-11-15T11:00:00Z", "--to", "2026-12-01T06:00:00Z")
    result = cli("export", "--db", imported, "--format", "espi", *window)
    assert result.returncode == 0, result.stderr
    feed = tmp_path / "feed.xml"
    feed.write_text(result.stdout)
    (point,) = parse_feed(str(feed))
    assert point.title == "unit-101" and point.serviceCategory.name == "electricity"
    (reading,) = point.meterReadings
    kind = reading.readingType
    assert (kind.uom.value, kind.kind.value, kind.accumulationBehaviour.value) == (72, 12, 4)
    assert (kind.intervalLength, kind.powerOfTenMultiplier) == (900, 0)
    got = [
        (
            ir.timePeriod.start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            int(ir.timePeriod.duration.total_seconds()),
            ir.value,
            sorted(q.quality.value for q in ir.readingQualities),
        )
        for ir in reading.intervalReadings
    ]
    result = cli("export", "--db", imported, "--format", "csv", *window)
    expected = [
        (row["start"], 900, int(row["energy_wh"]), [] if row["quality"] == "complete" else [10])
        for row in csv.DictReader(io.StringIO(result.stdout))
    ]
    assert got == expected and len(got) > 1000
    # 12:00-12:15Z on 15 November, at 3 kW: 150 edges, 750 Wh.
    assert ("2026-11-15T12:00:00Z", 900, 750, []) in got
    # The billing read of the window, as a UsageSummary (epoch seconds, Wh and W).
    root = ET.parse(feed).getroot()
    (summary,) = root.iter(f"{ESPI}UsageSummary")
    values = {
        child.tag.removeprefix(ESPI): child.findtext(f"{ESPI}value") or child.text
        for child in summary
    }
    assert values["overallConsumptionLastPeriod"] == "435000"
    assert values["peakDemand"] == "3000"
    assert values["statusTimeStamp"] == "1796101200"  # 2026-12-01T05:00:00Z
    assert summary.findtext(f"{ESPI}billingPeriod/{ESPI}start") == "1793505600"  # 04:00Z
    assert summary.findtext(f"{ESPI}billingPeriod/{ESPI}duration") == str(721 * 3600)
    assert _check_order(root) > 10


def test_the_kept_green_button_example_has_the_xsd_structure() -> None:
    """The copy in the repository (README's example) keeps the standard's namespaces and order."""
    path = Path(__file__).parent / "data" / "espi-example.xml"
    root = ET.parse(path).getroot()
    assert root.tag == "{http://www.w3.org/2005/Atom}feed"
    contents = [
        next(iter(content)).tag for content in root.iter("{http://www.w3.org/2005/Atom}content")
    ]
    assert set(contents) == {
        f"{ESPI}{name}"
        for name in ("UsagePoint", "MeterReading", "ReadingType", "IntervalBlock", "UsageSummary")
    }
    assert _check_order(root) > 5


def test_the_whole_feed_validates_and_a_partial_read_is_not_valid(
    cli, tmp_path: Path, imported: str
) -> None:
    from espi_schema import validate_feed

    result = cli("export", "--db", imported, "--format", "espi")
    assert result.returncode == 0, result.stderr
    feed = tmp_path / "feed.xml"
    feed.write_text(result.stdout)
    validate_feed(feed, tmp_path)
    # October was watched from 03:00Z on 1 November only: partial, so its summary's
    # qualityOfReading is questionable (10), not valid (0); November's is valid.
    quality = {
        summary.findtext(f"{ESPI}billingPeriod/{ESPI}start"): summary.findtext(
            f"{ESPI}qualityOfReading"
        )
        for summary in ET.parse(feed).getroot().iter(f"{ESPI}UsageSummary")
    }
    assert quality == {"1790827200": "10", "1793505600": "0"}  # 1 October 04:00Z, 1 November
