"""Reads and bills people can use (issue 16): estimates for unwatched time, every meter on the
bill, one meaning of peak, anomalies that need a look; all through the command line."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from db_helpers import sqlite_file

NS = 1_000_000_000
T0 = 1_793_491_200  # 2026-11-01T00:00:00Z, a Sunday
DAY = 86_400


def iso(t: float) -> str:
    from gateway.timefmt import format_iso

    return format_iso(int(t * NS), 0)


def write_log(
    path: Path,
    meter: str,
    start: int,
    end: int,
    every_s: float,
    *,
    level: int = 1,
    glitch_at: float | None = None,
):
    """A `10`-only log from ``start`` to ``end`` with an edge every ``every_s`` seconds, half a
    period after each mark (so none falls on an interval boundary), and a 1 ms glitch at
    ``glitch_at``; return the next level."""
    lines = [f"# start={iso(start)} end={iso(end)}\n", "time,meter,channel,level\n"]
    t = start + every_s / 2
    while t < end:
        if glitch_at is not None and t > glitch_at:
            lines += [f"{glitch_at:.6f},{meter},10,{level}\n"]
            lines += [f"{glitch_at + 0.001:.6f},{meter},10,{level ^ 1}\n"]
            glitch_at = None
        lines.append(f"{t:.6f},{meter},10,{level}\n")
        level ^= 1
        t += every_s
    path.write_text("".join(lines))
    return level


# By hand. u1 at 400 W: a 5 Wh edge every 45 s, 20 edges (100 Wh) per 15-minute interval, from
# Sunday 1 November 00:00Z. Three logs on Monday 23 November: a (to 10:00Z), b (10:30Z-12:00Z,
# at 800 W: 200 Wh per interval), c (from 14:00Z to 1 December 00:30Z, 400 W again). So:
# - 10:00-10:30Z is a short gap (two intervals, 30 minutes): interpolated linearly between
#   100 Wh before and 200 Wh after: 100 + 100 x 1/3 = 133.33 -> 133 Wh, 100 + 100 x 2/3 =
#   166.67 -> 167 Wh (ESPI quality 9);
# - 12:00-14:00Z is a long gap (eight intervals): each the average of the same time on the
#   Mondays 16, 9 and 2 November, all watched at 100 Wh: 100 Wh each, 800 Wh (quality 8).
# The period 2026-11 (UTC, read on the 1st at 00:00) then holds 1,100 Wh of estimate.
SHORT_GAP = (T0 + 22 * DAY + 10 * 3600, T0 + 22 * DAY + 10 * 3600 + 1800)
LONG_GAP = (T0 + 22 * DAY + 12 * 3600, T0 + 22 * DAY + 14 * 3600)
END = T0 + 30 * DAY + 1800


def three_logs(tmp_path: Path, glitch_at: float | None = None) -> list[str]:
    a, b, c = (tmp_path / f"{n}.csv" for n in "abc")
    level = write_log(a, "u1", T0, SHORT_GAP[0], 45)
    level = write_log(b, "u1", SHORT_GAP[1], LONG_GAP[0], 22.5, level=level)
    write_log(c, "u1", LONG_GAP[1], END, 45, level=level, glitch_at=glitch_at)
    return [str(a), str(b), str(c)]


CONFIG = """
[gateway]
database = "{url}"

[billing]
timezone = "UTC"

[[meters]]
name = "u1"
model = "2O208-4W"
source = "replay"
file = "{log}"
{more}
"""


def imported(
    cli, tmp_path: Path, more: str = "", glitch_at: float | None = None
) -> tuple[str, Path]:
    logs = three_logs(tmp_path, glitch_at)
    config = tmp_path / "config.toml"
    url = f"sqlite:///{tmp_path / 'g.db'}"
    config.write_text(CONFIG.format(url=url, log=logs[0], more=more))
    result = cli("replay", *logs, "--db", url, "--config", str(config))
    assert result.returncode == 0, result.stderr
    return url, config


def mark_gaps_as_stored(url: str) -> None:
    """Store the two gaps' intervals as gap marking stores them: quality gap, 0 Wh, 0 edges,
    unwatched whole (what replay --db writes once the gap-marking work lands; it writes
    complete 0 Wh intervals today)."""
    with sqlite_file(url.removeprefix("sqlite:///")) as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(intervals)")}
        unwatched = ", unwatched_s = 900" if "unwatched_s" in columns else ""
        for a, b in (SHORT_GAP, LONG_GAP):
            changed = db.execute(
                f"UPDATE intervals SET quality = 'gap'{unwatched}"
                " WHERE start_ns >= ? AND end_ns <= ? AND edges = 0",
                (a * NS, b * NS),
            ).rowcount
            assert changed == (b - a) // 900


def exported(cli, url: str, *args: str) -> list[dict[str, str]]:
    result = cli("export", "--db", url, "--format", "csv", *args)
    assert result.returncode == 0, result.stderr
    return list(csv.DictReader(io.StringIO(result.stdout)))


EXPECTED_ESTIMATES = [
    ("2026-11-23T10:00:00Z", "133", "linear"),
    ("2026-11-23T10:15:00Z", "167", "linear"),
    *[(iso(LONG_GAP[0] + 900 * k), "100", "history") for k in range(8)],
]


def check_export_estimates(rows: list[dict[str, str]]) -> None:
    header = list(rows[0])
    # The SPEC's columns first, in their order; the estimate appended.
    assert header == [
        "meter",
        "start",
        "end",
        "energy_wh",
        "edges",
        "demand_kw",
        "quality",
        "estimated_wh",
        "estimate_method",
    ]
    estimated = [
        (r["start"], r["estimated_wh"], r["estimate_method"]) for r in rows if r["estimate_method"]
    ]
    assert estimated == EXPECTED_ESTIMATES
    # Never mixed into the measured energy: the gap intervals still measure 0 Wh.
    by_start = {r["start"]: r for r in rows}
    assert all(by_start[s]["energy_wh"] == "0" for s, _, _ in EXPECTED_ESTIMATES)
    assert all(by_start[s]["quality"] == "gap" for s, _, _ in EXPECTED_ESTIMATES)
    # Watched intervals carry no estimate.
    assert by_start["2026-11-23T09:45:00Z"]["energy_wh"] == "100"
    assert by_start["2026-11-23T09:45:00Z"]["estimated_wh"] == ""


def test_export_marks_estimates_of_stored_gaps_in_appended_columns(cli, tmp_path: Path) -> None:
    url, _ = imported(cli, tmp_path)
    mark_gaps_as_stored(url)
    check_export_estimates(exported(cli, url))
    # A window sees the history before it: the long gap alone still takes the previous weeks.
    rows = exported(cli, url, "--from", "2026-11-23T12:00:00Z", "--to", "2026-11-23T14:00:00Z")
    assert [(r["estimated_wh"], r["estimate_method"]) for r in rows] == [("100", "history")] * 8


def test_export_estimates_the_time_between_imported_logs(cli, tmp_path: Path) -> None:
    url, _ = imported(cli, tmp_path)
    check_export_estimates(exported(cli, url))


def bill_json(cli, *args: str) -> dict:
    result = cli("bill", "--format", "json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_bill_shows_the_estimate_apart_from_the_measured_energy(cli, tmp_path: Path) -> None:
    url, _ = imported(cli, tmp_path)
    mark_gaps_as_stored(url)
    november = bill_json(cli, "--db", url, "--period", "2026-11")["meters"]["u1"]
    # Measured: 30 days at 400 W (288 kWh) less the 2.5 h of gaps (1,000 Wh) plus 1.5 h at
    # 800 W instead of 400 W (+600 Wh): 287,600 Wh, as counted.
    assert november["energy_wh"] == 287_600
    assert (november["estimated_wh"], november["estimate_method"]) == (1100, "history+linear")
    result = cli("bill", "--db", url, "--period", "2026-11")
    (row,) = csv.DictReader(io.StringIO(result.stdout))
    assert (row["energy_wh"], row["estimated_wh"], row["estimate_method"]) == (
        "287600",
        "1100",
        "history+linear",
    )


def test_bill_estimates_the_time_between_imported_logs(cli, tmp_path: Path) -> None:
    url, _ = imported(cli, tmp_path)
    november = bill_json(cli, "--db", url, "--period", "2026-11")["meters"]["u1"]
    assert november["quality"] == "partial" and november["gap_minutes"] == 150.0
    assert (november["estimated_wh"], november["estimate_method"]) == (1100, "history+linear")


TWO_METERS = """
[[meters]]
name = "u2"
model = "2O208-4W"
source = "replay"
file = "{log}"

[[meters]]
name = "u3"
model = "2O208-4W"
source = "gpio"
pin_10 = 17
"""


def test_bill_lists_every_meter_a_read_is_missing_for(cli, tmp_path: Path) -> None:
    # u2 was counted 1-10 November only: the database knows it, no read ends its November.
    # u3 is configured but never ran. Each still gets a row that says so.
    u2 = tmp_path / "u2.csv"
    write_log(u2, "u2", T0, T0 + 9 * DAY, 45)
    url, config = imported(cli, tmp_path, TWO_METERS.format(log=u2))
    result = cli("replay", str(u2), "--db", url, "--config", str(config))
    assert result.returncode == 0, result.stderr

    by_db = bill_json(cli, "--db", url, "--period", "2026-11")["meters"]
    assert sorted(by_db) == ["u1", "u2"]
    assert by_db["u2"]["quality"] == "no read" and by_db["u2"]["energy_wh"] is None
    assert (by_db["u2"]["start"], by_db["u2"]["end"]) == (
        "2026-11-01T00:00:00Z",
        "2026-12-01T00:00:00Z",
    )
    assert by_db["u1"]["energy_wh"] == 288_000 - 1000 + 600

    by_config = bill_json(cli, "--config", str(config), "--period", "2026-11")["meters"]
    assert sorted(by_config) == ["u1", "u2", "u3"]
    assert by_config["u3"]["quality"] == "no read"
    assert by_config["u3"]["start_local"] == "2026-11-01T00:00:00+00:00"

    result = cli("bill", "--config", str(config), "--period", "2026-11")
    assert result.returncode == 0, result.stderr
    rows = {r["meter"]: r for r in csv.DictReader(io.StringIO(result.stdout))}
    assert sorted(rows) == ["u1", "u2", "u3"]
    assert (rows["u3"]["quality"], rows["u3"]["energy_wh"], rows["u3"]["end_local"]) == (
        "no read",
        "",
        "2026-12-01T00:00:00+00:00",
    )
    assert rows["u1"]["energy_wh"] == "287600"
    # One tenant asked for by name gets the row too; a name nobody knows is an error.
    one = bill_json(cli, "--config", str(config), "--period", "2026-11", "--meter", "u3")
    assert list(one["meters"]) == ["u3"] and one["meters"]["u3"]["quality"] == "no read"
    result = cli("bill", "--config", str(config), "--period", "2026-11", "--meter", "u9")
    assert result.returncode == 2 and "--meter u9" in result.stderr and "u3" in result.stderr


ATOM = "{http://www.w3.org/2005/Atom}"
ESPI = "{http://naesb.org/espi}"


def espi_feed(cli, url: str, tmp_path: Path, *args: str) -> Path:
    result = cli("export", "--db", url, "--format", "espi", *args)
    assert result.returncode == 0, result.stderr
    feed = tmp_path / "feed.xml"
    feed.write_text(result.stdout)
    return feed


def readings_by_meter_reading(feed: Path) -> dict[str, dict[int, tuple[int, list[str]]]]:
    """Return, per MeterReading (its self link), start -> (value, reading qualities)."""
    import xml.etree.ElementTree as ET

    root = ET.parse(feed).getroot()
    result: dict[str, dict[int, tuple[int, list[str]]]] = {}
    for entry in root.iter(f"{ATOM}entry"):
        block = entry.find(f"{ATOM}content/{ESPI}IntervalBlock")
        if block is None:
            continue
        up = next(link.get("href") for link in entry if link.get("rel") == "up")
        reading = up.rsplit("/IntervalBlock", 1)[0].rsplit("/", 1)[-1]
        for item in block.iter(f"{ESPI}IntervalReading"):
            start = int(item.findtext(f"{ESPI}timePeriod/{ESPI}start"))
            qualities = [q.text for q in item.iter(f"{ESPI}quality")]
            result.setdefault(reading, {})[start] = (int(item.findtext(f"{ESPI}value")), qualities)
    return result


def check_green_button(feed: Path, tmp_path: Path) -> None:
    from espi_schema import validate_feed

    validate_feed(feed, tmp_path)
    readings = readings_by_meter_reading(feed)
    measured, estimated = readings["1"], readings["2"]
    gap_starts = [t for a, b in (SHORT_GAP, LONG_GAP) for t in range(a, b, 900)]
    # Gap intervals: 0 Wh measured, questionable (10).
    assert all(measured[t] == (0, ["10"]) for t in gap_starts)
    assert measured[SHORT_GAP[0] - 900] == (100, [])
    # Estimated ones, in their own MeterReading: 9 linear interpolation, 8 from history.
    assert estimated == {
        SHORT_GAP[0]: (133, ["9"]),
        SHORT_GAP[0] + 900: (167, ["9"]),
        **{t: (100, ["8"]) for t in range(*LONG_GAP, 900)},
    }


def test_green_button_marks_gaps_questionable_and_estimates_estimated(cli, tmp_path: Path) -> None:
    url, _ = imported(cli, tmp_path)
    mark_gaps_as_stored(url)
    check_green_button(espi_feed(cli, url, tmp_path), tmp_path)


def test_green_button_of_the_time_between_imported_logs(cli, tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    url, _ = imported(cli, tmp_path)
    feed = espi_feed(cli, url, tmp_path)
    check_green_button(feed, tmp_path)
    # November held 150 unwatched minutes: partial, so not valid (0) but questionable (10).
    quality = {
        s.findtext(f"{ESPI}billingPeriod/{ESPI}start"): s.findtext(f"{ESPI}qualityOfReading")
        for s in ET.parse(feed).getroot().iter(f"{ESPI}UsageSummary")
    }
    assert quality[str(T0)] == "10"


# -- one meaning of peak ------------------------------------------------------------------------

# By hand: the NY tenant of test_billing (0.6 kW from 03:00Z on 1 November, one hour at 3 kW on
# 15 November, until 06:00Z on 1 December). Over the whole log the peak is 3.00 kW (window ending
# 15 November 12:15Z), measured since the log's start; but the read at 05:00Z on 1 December
# reset it, so the stored meter's peak is 0.60 kW since then: both outputs now say since when.
NY_PROFILE = """time,kw
2026-11-01T03:00:00Z,0.6
2026-11-15T12:00:00Z,3.0
2026-11-15T13:00:00Z,0.6
2026-12-01T06:00:00Z,0
"""
NY_CONFIG = """
[billing]
timezone = "America/New_York"

[[meters]]
name = "unit-101"
model = "2O208-4W"
source = "replay"
file = "{log}"
"""


def test_every_peak_says_since_when(cli, tmp_path: Path) -> None:
    profile = tmp_path / "profile.csv"
    profile.write_text(NY_PROFILE)
    log = tmp_path / "unit-101.csv"
    result = cli("simulate", "--profile", str(profile), "--out", str(log), "--meter", "unit-101")
    assert result.returncode == 0, result.stderr
    config = tmp_path / "c.toml"
    config.write_text(NY_CONFIG.format(log=log))

    result = cli("replay", str(log), "--json", "--config", str(config))
    assert result.returncode == 0, result.stderr
    whole = json.loads(result.stdout)["meters"]["unit-101"]
    assert (whole["peak_demand_kw"], whole["peak_demand_end"]) == (3.0, "2026-11-15T12:15:00Z")
    assert whole["peak_demand_since"] == "2026-11-01T03:00:00Z"
    text = cli("replay", str(log), "--config", str(config)).stdout
    assert "peak demand 3.00 kW since 2026-11-01T03:00:00Z (window ending" in text

    url = f"sqlite:///{tmp_path / 'g.db'}"
    result = cli("replay", str(log), "--db", url, "--config", str(config))
    assert result.returncode == 0, result.stderr
    status = json.loads(cli("status", "--db", url, "--json").stdout)["meters"]["unit-101"]
    assert status["peak_demand_kw"] == 0.6
    assert status["peak_demand_since"] == "2026-12-01T05:00:00Z"
    text = cli("status", "--db", url).stdout
    assert "peak 0.60 kW since 2026-12-01T05:00:00Z (window ending " in text


# -- anomalies: only what needs a look --------------------------------------------------------


def test_status_counts_only_what_needs_a_look_and_reconcile_says_which_way(
    cli, tmp_path: Path
) -> None:
    # One glitch at 00:20Z on 1 December, after the November read; the read itself reset the
    # peak (a peak_reset event): not an anomaly.
    url, _ = imported(cli, tmp_path, glitch_at=END - 600 + 0.25)
    text = cli("status", "--db", url).stdout
    assert "; 1 anomaly\n" in text
    assert "  anomaly: 2026-12-01T00:15:00Z glitch: " in text  # stamped with its interval
    status = json.loads(cli("status", "--db", url, "--json").stdout)["meters"]["u1"]
    assert [a["kind"] for a in status["open_anomalies"]] == ["glitch"]
    assert status["anomalies"] == 1
    assert "peak_reset" in [n["kind"] for n in status["notices"]]

    # The LCD: 1086 kWh at 10 November 00:00Z, when the gateway had counted 9 days x 9,600 Wh
    # = 86,400 Wh: the meter's lifetime total is 999,600..1,000,599 Wh ahead. On 30 November
    # 00:00Z (278,000 Wh counted: 29 x 9,600 less the gaps' 1,000 plus b's 600) it says
    # 1281 kWh: 1,003,000..1,003,999 Wh ahead, so the gateway counted 2,401..4,399 Wh less.
    result = cli(
        "reconcile",
        "--db",
        url,
        "--meter",
        "u1",
        "--lcd-kwh",
        "1086",
        "--time",
        "2026-11-10T00:00:00Z",
    )
    assert result.returncode == 0, result.stderr
    result = cli(
        "reconcile",
        "--db",
        url,
        "--meter",
        "u1",
        "--lcd-kwh",
        "1281",
        "--time",
        "2026-11-30T00:00:00Z",
    )
    assert result.returncode == 0, result.stderr
    assert "the gateway counted 2401..4399 Wh less than the LCD" in result.stdout
    text = cli("status", "--db", url).stdout
    assert "; 2 anomalies\n" in text
    assert "  anomaly: 2026-11-30T00:00:00Z lcd_drift: " in text
    # A third reading, the other way: 1275 kWh is 997,000..997,999 Wh ahead: the gateway
    # counted 1,601..3,599 Wh more than the meter registered.
    result = cli(
        "reconcile", "--db", url, "--meter", "u1", "--lcd-kwh", "1275", "--time",
        "2026-11-30T00:00:00Z",
    )  # fmt: skip
    assert "the gateway counted 1601..3599 Wh more than the LCD" in result.stdout
