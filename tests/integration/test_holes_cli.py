"""Where the data has holes (SPEC 2 "Watched time"): through the daemon and the command line."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from db_helpers import sqlite_file
from gpiozero.pins.mock import MockFactory

from gateway.config import (
    BillingSettings,
    Config,
    GatewaySettings,
    MqttSettings,
    meter_settings,
)
from gateway.daemon.service import Service
from gateway.sinks.database import Database
from gateway.sinks.readback import Readback
from gateway.timefmt import format_iso, parse_time_ns

NS = 1_000_000_000


def _clock_from(text: str):
    """A wall clock that reads ``text`` now and runs on with the monotonic clock."""
    base, mono = parse_time_ns(text), time.monotonic_ns()
    return lambda: base + time.monotonic_ns() - mono


def _gpio(tmp_path: Path) -> Config:
    return Config(
        GatewaySettings(id="t", database=f"sqlite:///{tmp_path / 'g.db'}"),
        MqttSettings(enabled=False),
        (meter_settings("m1", model="2O208-4W", source="gpio", pin_10=17),),
        billing=BillingSettings(timezone="UTC"),
    )


def _run_once(tmp_path: Path, wall: str) -> None:
    service = Service(
        _gpio(tmp_path), out=io.StringIO(), pin_factory=MockFactory(), wall_ns=_clock_from(wall)
    )
    service._open_sources()
    service.step()
    service.commit(stamp=True)
    for runtime in service.meters:
        runtime.source.close()
    service.database.close()


def test_a_daemon_down_across_a_read_gives_both_periods_their_share(tmp_path: Path) -> None:
    # Up at 23:00Z on 30 November, down from about 23:00:00 until 01:00Z on 1 December.
    _run_once(tmp_path, "2026-11-30T23:00:00Z")
    _run_once(tmp_path, "2026-12-01T01:00:00Z")
    with sqlite_file(tmp_path / "g.db") as conn:
        (period, quality, gap_s) = conn.execute(
            "select period, quality, gap_s from meter_reads"
        ).fetchone()
        (core,) = conn.execute("select core from meter_state").fetchone()
    # November: not watched but for a moment at 23:00Z; at least the last hour is a gap.
    assert (period, quality) == ("2026-11", "partial") and gap_s >= 30 * 24 * 3600 - 60
    # December begins with its own share of the outage, midnight to the restart at 01:00Z.
    gaps = json.loads(core)["billing"]["gaps"]
    assert [(format_iso(a), b - a >= 3600 * NS) for a, b in gaps] == [
        ("2026-12-01T00:00:00Z", True)
    ]


# -- replay: the time between logs ---------------------------------------------------------------


def _log(path: Path, start: str, end: str, first_level: int = 1) -> int:
    """Write a log of 0.6 kW (an edge every 30 s after ``start``) to ``end``; return the last
    level."""
    a, b = parse_time_ns(start) // NS, parse_time_ns(end) // NS
    level = first_level
    lines = [f"# start={start}", f"# end={end}", "time,meter,channel,level"]
    for t in range(a + 30, b, 30):
        lines.append(f"{t}.000000,m1,10,{level}")
        level ^= 1
    path.write_text("\n".join(lines) + "\n")
    return level


@pytest.fixture(autouse=True)
def utc(monkeypatch) -> None:
    """Meters no configuration names are read at midnight in the host's zone: UTC here."""
    monkeypatch.setenv("TZ", "UTC")


@pytest.fixture
def logs(tmp_path: Path) -> tuple[Path, Path]:
    """a.log: 31 October to 20 November; b.log: 22 November to 2 December (00:00Z)."""
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    level = _log(a, "2026-10-31T00:00:00Z", "2026-11-20T00:00:00Z")
    _log(b, "2026-11-22T00:00:00Z", "2026-12-02T00:00:00Z", level)
    return a, b


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _november(cli, url: str) -> dict:
    result = cli("bill", "--db", url, "--period", "2026-11", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["meters"]["m1"]


# By hand: at 600 W an edge (5 Wh) every 30 s, 2,880 a day, 14,400 Wh a day. November (UTC)
# holds 19 watched days of a.log (its rows from 1 November 00:00:00, which is November's, to
# 19 November 23:59:30) and 9 of b.log less one edge (its rows begin at 22 November 00:00:30; the
# one at 1 December 00:00:00 is December's): 28 x 14,400 - 5 = 403,195 Wh. 20 to 22 November
# nobody watched: 2 days, 192 intervals of 15 minutes, 2,880 minutes.


def test_the_time_between_two_logs_is_a_gap_in_intervals_and_the_read(
    cli, tmp_path, logs, database_url: str
) -> None:
    a, b = logs
    url = database_url
    result = cli("replay", str(a), str(b), "--db", url)
    assert result.returncode == 0, result.stderr
    exported = cli("export", "--db", url)
    assert exported.returncode == 0, exported.stderr
    rows = _rows(exported.stdout)
    between = [r for r in rows if "2026-11-20T00:00:00Z" <= r["start"] < "2026-11-22T00:00:00Z"]
    assert len(between) == 192
    assert {(r["quality"], r["energy_wh"], r["edges"]) for r in between} == {("gap", "0", "0")}
    assert [r["quality"] for r in rows if r["start"] == "2026-11-19T23:45:00Z"] == ["complete"]
    assert [r["quality"] for r in rows if r["start"] == "2026-11-22T00:00:00Z"] == ["complete"]
    # The read-back tells an estimator how much of each interval nobody watched.
    database = Database(url)
    try:
        stored = {
            format_iso(row.start_ns): (row.quality, row.unwatched_s)
            for _, row in Readback(database).intervals("m1")
        }
    finally:
        database.close()
    assert stored["2026-11-19T23:45:00Z"] == ("complete", 0)
    assert stored["2026-11-20T00:00:00Z"] == ("gap", 900)
    assert stored["2026-11-22T00:00:00Z"] == ("complete", 0)
    assert sum(unwatched for _, unwatched in stored.values()) == 2 * 86400
    november = _november(cli, url)
    assert (november["quality"], november["gap_minutes"]) == ("partial", 2880.0)
    assert november["energy_wh"] == 403_195
    # --intervals of a plain replay says the same.
    out = tmp_path / "iv.csv"
    result = cli("replay", str(a), str(b), "--intervals", str(out))
    assert result.returncode == 0, result.stderr
    plain = [r for r in _rows(out.read_text()) if r["start"] >= "2026-11-20T00:00:00Z"]
    assert {r["quality"] for r in plain[:192]} == {"gap"} and plain[192]["quality"] == "complete"


def test_importing_the_logs_one_by_one_gives_the_same_database(cli, tmp_path, logs) -> None:
    a, b = logs
    together, apart = f"sqlite:///{tmp_path / 'one.db'}", f"sqlite:///{tmp_path / 'two.db'}"
    assert cli("replay", str(a), str(b), "--db", together).returncode == 0
    assert cli("replay", str(a), "--db", apart).returncode == 0
    assert cli("replay", str(b), "--db", apart).returncode == 0
    assert cli("export", "--db", together).stdout == cli("export", "--db", apart).stdout
    assert _november(cli, together) == _november(cli, apart)


def test_a_gap_across_a_read_instant_is_split_by_replay(cli, tmp_path) -> None:
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    level = _log(a, "2026-11-25T00:00:00Z", "2026-11-30T22:00:00Z")
    _log(b, "2026-12-01T03:00:00Z", "2026-12-02T00:00:00Z", level)
    url = f"sqlite:///{tmp_path / 'g.db'}"
    result = cli("replay", str(a), str(b), "--db", url)
    assert result.returncode == 0, result.stderr
    with sqlite_file(tmp_path / "g.db") as conn:
        (core,) = conn.execute("select core from meter_state").fetchone()
    november = _november(cli, url)
    # 24 days before a.log began, and 22:00Z to midnight.
    assert november["gap_minutes"] == (24 * 24 + 2) * 60.0
    # December's share (midnight to 03:00Z) waits in the open period for December's read.
    gaps = json.loads(core)["billing"]["gaps"]
    assert [(format_iso(x), format_iso(y)) for x, y in gaps] == [
        ("2026-12-01T00:00:00Z", "2026-12-01T03:00:00Z")
    ]


def test_capture_files_that_touch_have_no_hole_and_those_that_do_not_have_one(
    cli, tmp_path: Path
) -> None:
    from gateway.core.edge import Edge
    from gateway.pulselog.capture import Capture

    def edges(start: str, count: int, level: int) -> list[Edge]:
        t0 = parse_time_ns(start)
        return [Edge(t0 + k * 30 * NS, "m1", "10", (level + k) % 2) for k in range(count)]

    touching, apart = tmp_path / "touching", tmp_path / "apart"
    # One gateway watching across midnight: the files end and start at midnight.
    capture = Capture(str(touching), 30, "t")
    capture.write(edges("2026-11-30T23:00:30Z", 119, 1), parse_time_ns("2026-11-30T23:00:00Z"))
    capture.write(edges("2026-12-01T00:10:00Z", 100, 0), parse_time_ns("2026-12-01T00:10:00Z"))
    capture.close({"m1": parse_time_ns("2026-12-01T01:00:00Z")})
    # A gateway stopped at 23:30Z and started again at 00:30Z: an hour nobody watched.
    capture = Capture(str(apart), 30, "t")
    capture.write(edges("2026-11-30T23:00:30Z", 59, 1), parse_time_ns("2026-11-30T23:00:00Z"))
    capture.close({"m1": parse_time_ns("2026-11-30T23:30:00Z")})
    capture = Capture(str(apart), 30, "t")
    capture.write(edges("2026-12-01T00:30:00Z", 60, 0), parse_time_ns("2026-12-01T00:30:00Z"))
    capture.close({"m1": parse_time_ns("2026-12-01T01:00:00Z")})
    quality = {}
    for folder in (touching, apart):
        files = sorted(str(p) for p in folder.glob("capture-*.csv.gz"))
        assert len(files) == 2
        out = folder / "iv.csv"
        result = cli("replay", *files, "--intervals", str(out))
        assert result.returncode == 0, result.stderr
        quality[folder.name] = [(r["start"][11:16], r["quality"]) for r in _rows(out.read_text())]
    assert quality["touching"] == [
        ("23:00", "complete"),
        ("23:15", "complete"),
        ("23:30", "complete"),
        ("23:45", "complete"),
        ("00:00", "complete"),  # watched; its first edge came at 00:10
        ("00:15", "complete"),
        ("00:30", "complete"),
        ("00:45", "complete"),
    ]
    assert quality["apart"] == [
        ("23:00", "complete"),
        ("23:15", "complete"),
        ("23:30", "gap"),
        ("23:45", "gap"),
        ("00:00", "gap"),
        ("00:15", "gap"),
        ("00:30", "complete"),
        ("00:45", "complete"),
    ]


# -- replay --db: an older log after a newer one -------------------------------------------------


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_older_log_after_a_newer_one_is_refused_leaving_the_database_as_it_was(
    cli, tmp_path, logs
) -> None:
    a, b = logs
    db = tmp_path / "g.db"
    url = f"sqlite:///{db}"
    assert cli("replay", str(b), "--db", url).returncode == 0
    before = _digest(db)
    result = cli("replay", str(a), "--db", url)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert str(a) in line and "meter m1" in line and "Traceback" not in line
    assert "2026-11-22T00:00:00Z to 2026-12-02T00:00:00Z" in line  # what the database holds
    assert _digest(db) == before
    # Importing the same log again is no drop: nothing is added, exit 0.
    again = cli("replay", str(b), "--db", url)
    assert again.returncode == 0, again.stderr
    assert "m1: 0 edges added, 28799 already stored; no time added" in again.stderr


def test_a_log_inside_a_stretch_nobody_watched_is_refused(cli, tmp_path) -> None:
    a, b, c = tmp_path / "a.log", tmp_path / "b.log", tmp_path / "c.log"
    level = _log(a, "2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z")
    level = _log(b, "2026-11-02T00:00:00Z", "2026-11-03T00:00:00Z", level)
    _log(c, "2026-11-03T00:00:00Z", "2026-11-04T00:00:00Z", level)
    db = tmp_path / "g.db"
    url = f"sqlite:///{db}"
    first = cli("replay", str(a), str(c), "--db", url)
    assert first.returncode == 0, first.stderr
    # One line per meter: the edges added and the window, with the day no log covered. Each
    # log has 2,879 rows; c.log's first repeats a.log's last level (b.log's odd count of edges
    # is missing between them): one edge counted back, 5,759.
    assert (
        "m1: 5759 edges added, 0 already stored; added 2026-11-01T00:00:00Z to "
        "2026-11-04T00:00:00Z, 1 gap(s) no log covers (1440.0 min)"
    ) in first.stderr
    before = _digest(db)
    result = cli("replay", str(b), "--db", url)
    assert result.returncode == 2
    assert str(b) in result.stderr and "nobody watched" in result.stderr
    assert "2026-11-02T00:00:00Z" in result.stderr
    assert _digest(db) == before


# -- a changed time zone -------------------------------------------------------------------------


def test_a_changed_time_zone_invents_no_read_in_the_past(cli, tmp_path) -> None:
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    level = _log(first, "2026-12-04T00:00:00Z", "2026-12-04T12:00:00Z")
    _log(second, "2026-12-04T12:00:00Z", "2026-12-05T00:00:00Z", level)
    config = tmp_path / "ny.toml"
    config.write_text(
        '[billing]\ntimezone = "America/New_York"\n\n[[meters]]\nname = "m1"\n'
        f'model = "2O208-4W"\nsource = "replay"\nfile = "{second}"\n'
    )
    db = tmp_path / "g.db"
    url = f"sqlite:///{db}"
    assert cli("replay", str(first), "--db", url).returncode == 0  # read on UTC (TZ)
    result = cli("replay", str(second), "--db", url, "--config", str(config))
    assert result.returncode == 0, result.stderr
    with sqlite_file(db) as conn:
        reads = conn.execute("select period from meter_reads").fetchall()
        events = conn.execute("select detail from events where kind = 'schedule'").fetchall()
        resets = conn.execute("select count(*) from demand_peaks where reset_ns is not null")
        (reset_count,) = resets.fetchone()
    assert reads == [] and reset_count == 0  # no "November" read of 4 December's energy
    assert [detail for (detail,) in events] == [
        "billing schedule changed from day 1 at 00:00 UTC to day 1 at 00:00 America/New_York; "
        "the period that began 2026-12-01T00:00:00Z ends at 2027-01-01T05:00:00Z"
    ]


# -- empty time --------------------------------------------------------------------------------


def test_replay_db_memory_follows_the_rows_not_the_span(tmp_path) -> None:
    """Two rows 55 years apart: under a 3 GiB address-space cap the import works, and the
    database holds the empty time as ranges that export gives back one interval each."""
    import resource
    import subprocess
    import sys

    log = tmp_path / "span.log"
    log.write_text("time,meter,channel,level\n100000.000000,m1,10,1\n1767225600.000000,m1,10,0\n")
    db = tmp_path / "g.db"
    url = f"sqlite:///{db}"
    cap = 3 * 1024**3

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway", *args],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            preexec_fn=limit,
        )

    result = run("replay", str(log), "--db", url)
    assert result.returncode == 0, result.stderr[-2000:]
    with sqlite_file(db) as conn:
        (rows,) = conn.execute("select count(*) from intervals").fetchone()
        outboxed = "select count(*) from mqtt_outbox where kind = 'interval'"
        (outbox,) = conn.execute(outboxed).fetchone()
    # 1.96 million intervals of 15 minutes; stored: the first, one range, the last.
    assert rows == 3 and outbox == 3
    window = run(
        "export", "--db", url, "--from", "2000-01-01T00:00:00Z", "--to", "2000-01-01T00:45:00Z"
    )
    assert window.returncode == 0, window.stderr
    assert _rows(window.stdout) == [
        {
            "meter": "m1",
            "start": f"2000-01-01T00:{m:02d}:00Z",
            "end": f"2000-01-01T00:{m + 15:02d}:00Z",
            "energy_wh": "0",
            "edges": "0",
            "demand_kw": "0.00",
            "quality": "complete",
            "estimated_wh": "",  # watched: nothing to estimate
            "estimate_method": "",
        }
        for m in (0, 15, 30)
    ]


def test_an_older_log_is_refused_on_postgresql_too(cli, logs, postgres_url: str) -> None:
    a, b = logs
    assert cli("replay", str(b), "--db", postgres_url).returncode == 0

    def everything() -> tuple[str, str, str]:
        export = cli("export", "--db", postgres_url).stdout
        status = cli("status", "--db", postgres_url, "--json").stdout
        bill = cli("bill", "--db", postgres_url, "--format", "json").stdout
        return export, status, bill

    before = everything()
    result = cli("replay", str(a), "--db", postgres_url)
    assert result.returncode == 2 and str(a) in result.stderr and "meter m1" in result.stderr
    assert everything() == before


def test_green_button_marks_the_intervals_nobody_watched_questionable(cli, tmp_path, logs) -> None:
    a, b = logs
    url = f"sqlite:///{tmp_path / 'g.db'}"
    assert cli("replay", str(a), str(b), "--db", url).returncode == 0
    result = cli(
        "export", "--db", url, "--format", "espi",
        "--from", "2026-11-19T23:45:00Z", "--to", "2026-11-20T00:30:00Z",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    espi = "{http://naesb.org/espi}"
    readings = ET.fromstring(result.stdout).iter(f"{espi}IntervalReading")
    got = [
        (
            int(r.findtext(f"{espi}timePeriod/{espi}start") or 0) * NS,
            r.findtext(f"{espi}ReadingQuality/{espi}quality"),
            r.findtext(f"{espi}value"),
        )
        for r in readings
    ]
    # The estimates of the unwatched time are a MeterReading of their own (quality 8: from
    # the same time of the weeks before), never mixed into the measured one.
    measured = [(format_iso(t), q, v) for t, q, v in got if q not in ("8", "9")]
    estimated = [(format_iso(t), q) for t, q, _ in got if q in ("8", "9")]
    assert measured == [
        ("2026-11-19T23:45:00Z", None, "150"),  # watched: valid, no quality element
        ("2026-11-20T00:00:00Z", "10", "0"),  # nobody watched: questionable
        ("2026-11-20T00:15:00Z", "10", "0"),
    ]
    assert estimated == [("2026-11-20T00:00:00Z", "8"), ("2026-11-20T00:15:00Z", "8")]
