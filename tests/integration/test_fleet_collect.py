"""``amr-gateway collect`` end to end: real gateways, a real Mosquitto, the fleet commands."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

from fleet_helpers import (
    CollectorProcess,
    collector_config,
    fleet_rows,
    gateway_rows,
    make_log,
    replay_gateway_config,
)
from mqtt_helpers import Gateway, Subscriber, wait_for

from gateway.sinks.database import Database
from gateway.sinks.resend import resend_messages
from gateway.timefmt import parse_time_ns

END = "2026-11-03T00:00:00Z"
# b-2 starts counting after the read of 1 November: it has no read for period 2026-10.
FLEET = {
    "gwa": {"a-1": ("0.4", "2026-10-28T00:00:00Z")},
    "gwb": {"b-1": ("0.6", "2026-10-28T00:00:00Z"), "b-2": ("0.2", "2026-11-02T00:00:00Z")},
}


def _settled(dirs: dict[str, Path], url: str) -> bool:
    intervals, reads, waiting = set(), set(), 0
    for gw, directory in dirs.items():
        i, r, w = gateway_rows(directory / "gateway.db")
        intervals |= {(gw, *row) for row in i}
        reads |= {(gw, *row) for row in r}
        waiting += w
    finished = {(gw, row[0]) for gw, *row in intervals if row[2] == parse_time_ns(END)}
    if waiting or not finished or finished != {(gw, row[0]) for gw, *row in intervals}:
        return False
    got_i, got_r = fleet_rows(url)
    return set(got_i) == intervals and set(got_r) == reads and len(got_i) == len(intervals)


def test_two_gateways_into_one_fleet_then_status_bill_export(cli, broker, tmp_path) -> None:
    recorder = Subscriber(broker, ["amr/gwa/a-1/interval"], client_id="recorder")
    fleet_db = tmp_path / "fleet.db"
    url = f"sqlite:///{fleet_db}"
    collector = CollectorProcess(collector_config(tmp_path, broker, url, "c1")).start()
    wait_for(fleet_db.exists, 30, "the fleet database")
    dirs: dict[str, Path] = {}
    gateways = []
    try:
        for gw, meters in FLEET.items():
            directory = tmp_path / gw
            directory.mkdir()
            logs = {
                m: make_log(cli, directory, m, kw, start, END) for m, (kw, start) in meters.items()
            }
            dirs[gw] = directory
            config = replay_gateway_config(directory, broker, gw, logs, 1_000_000)
            gateways.append(Gateway(config).start())
        wait_for(lambda: _settled(dirs, url), 120, "the gateways' data in the fleet database")
        assert gateways[0].stop() == 0  # gwa says offline (retained), as its last will would
        wait_for(
            lambda: '"status": "offline"' in cli("status", "--db", url, "--json").stdout,
            30,
            "gwa offline in the fleet status",
        )
    finally:
        for gateway in gateways:
            if gateway.proc is not None and gateway.proc.poll() is None:
                gateway.stop()
        assert collector.stop() == 0, collector.log.read_text()
        recorder.close()

    # status: every gateway with its last will, every meter with since when it is silent
    status = json.loads(cli("status", "--db", url, "--json").stdout)["gateways"]
    assert status["gwa"]["status"] == "offline" and status["gwb"]["status"] == "offline"
    a1 = status["gwa"]["meters"]["a-1"]
    assert a1["model"] == "2O208-4W"  # from the retained discovery
    # the log ends at 00:00, which opens the interval from 00:00 (half-open periods)
    assert a1["last_interval_end"] == "2026-11-03T00:15:00Z"
    assert a1["silent_since"] == "2026-11-03T00:15:00Z"  # a month ago by the wall clock
    assert a1["open_gaps"] == []
    assert a1["energy_wh"] == 6 * 24 * 400 - 6 * 24 * 400 % 5  # 0.4 kW for six days, in 5 Wh
    text = cli("status", "--db", url, "--gateway", "gwb")
    assert text.returncode == 0
    assert text.stdout.startswith("gwb: offline since ")
    assert "b-2 (2O208-4W)" in text.stdout and "SILENT since 2026-11-03T00:15:00Z" in text.stdout
    assert "gwa" not in text.stdout

    # bill: one CSV for every meter of every building; the gateways' own rows, and "no read"
    result = cli("bill", "--db", url, "--period", "2026-10")
    assert result.returncode == 0, result.stderr
    fleet_bill = list(csv.reader(io.StringIO(result.stdout)))
    assert fleet_bill[0][:3] == ["gateway", "meter", "period"]
    by_meter = {row[1]: row for row in fleet_bill[1:]}
    assert sorted(by_meter) == ["a-1", "b-1", "b-2"]
    # The columns a published read carries are the gateway's own bill's; the others (its local
    # times and zone, the peak's start, estimates, the last LCD reading) stay empty.
    carried = ["meter", "period", "start", "end", "register_wh", "lcd_kwh", "energy_wh"]
    carried += ["energy_kwh", "peak_demand_kw", "peak_demand_end", "quality", "gap_minutes"]
    for gw, meter in (("gwa", "a-1"), ("gwb", "b-1")):
        own = cli(
            "bill",
            "--db",
            f"sqlite:///{dirs[gw] / 'gateway.db'}",
            "--period",
            "2026-10",
            "--meter",
            meter,
        )
        assert own.returncode == 0, own.stderr
        header, own_row = list(csv.reader(io.StringIO(own.stdout)))[:2]
        mine = dict(zip(fleet_bill[0], by_meter[meter], strict=True))
        theirs = dict(zip(header, own_row, strict=True))
        assert mine["gateway"] == gw
        assert {k: mine[k] for k in carried} == {k: theirs[k] for k in carried}
        assert mine["timezone"] == "" and mine["last_lcd_kwh"] == ""
    quality = fleet_bill[0].index("quality")
    assert (
        by_meter["b-2"][:3] == ["gwb", "b-2", "2026-10"] and by_meter["b-2"][quality] == "no read"
    )
    narrowed = cli(
        "bill", "--db", url, "--period", "2026-10", "--gateway", "gwb", "--format", "json"
    )
    assert list(json.loads(narrowed.stdout)["gateways"]) == ["gwb"]
    assert json.loads(narrowed.stdout)["gateways"]["gwb"]["b-2"] == {"quality": "no read"}

    # export: the gateways' own CSV, with the gateway in front; Green Button with every interval
    fleet_csv = cli("export", "--db", url, "--gateway", "gwa").stdout.splitlines()
    own_csv = cli("export", "--db", f"sqlite:///{dirs['gwa'] / 'gateway.db'}").stdout.splitlines()
    # the gateway's own columns, without its estimates of unwatched time (not published)
    own_spec = [",".join(line.split(",")[:7]) for line in own_csv]
    assert fleet_csv == ["gateway," + own_spec[0], *("gwa," + line for line in own_spec[1:])]
    feed = ET.fromstring(cli("export", "--db", url, "--format", "espi").stdout)
    readings = feed.findall(".//{http://naesb.org/espi}IntervalReading")
    assert len(readings) == len(fleet_rows(url)[0])
    summaries = feed.findall(".//{http://naesb.org/espi}UsageSummary")
    assert len(summaries) == 2  # the reads of a-1 and b-1

    # re-send on request: the same messages the gateway published the first time
    first = {m.json()["seq"]: m.json() for m in recorder.on("amr/gwa/a-1/interval")}
    request = {
        "kind": "interval",
        "from_seq": 3,
        "to_seq": 5,
        "after": first[2]["start"],
        "before": first[6]["start"],
    }
    database = Database(f"sqlite:///{dirs['gwa'] / 'gateway.db'}", upgrade=False)
    try:
        again = resend_messages(database, "a-1", json.dumps(request))
        reads = resend_messages(
            database, "a-1", json.dumps({"kind": "read", "from_seq": 1, "to_seq": 9})
        )
    finally:
        database.close()
    assert again == [("interval", first[seq]) for seq in (3, 4, 5)]
    assert [(kind, p["seq"], p["period"]) for kind, p in reads] == [("read", 1, "2026-10")]


def test_bad_collector_configuration_exits_2_naming_the_key(cli, tmp_path) -> None:
    cases = {
        "[collector]\nport = 1883\n": "collector.database: missing",
        '[collector]\ndatabase = "sqlite:///x.db"\nport = "x"\n': "collector.port: expected an integer",
        '[collector]\ndatabase = "sqlite:///x.db"\nshare = "g"\n': "collector.share: unknown key",
        '[collector]\ndatabase = "sqlite:///x.db"\nshare_group = "a/b"\n': "collector.share_group:",
        '[gateway]\nid = "x"\n': "gateway: unknown section",
        '[collector]\ndatabase = "sqlite:///x.db"\ndatabase_password_file = "/nonexistent/pw"\n': "database_password_file /nonexistent/pw",
    }
    for text, message in cases.items():
        config = tmp_path / "collector.toml"
        config.write_text(text)
        result = cli("collect", "--config", str(config), cwd=tmp_path)
        assert result.returncode == 2, (text, result.stderr)
        assert message in result.stderr, result.stderr
        if "password" not in message:  # the password file is named by its own path
            assert str(config) in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert not (tmp_path / "x.db").exists()
    missing = cli("collect", "--config", str(tmp_path / "none.toml"))
    assert missing.returncode == 2 and "none.toml" in missing.stderr


def test_gateway_option_needs_a_fleet_database(cli, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    assert cli("db", "upgrade", "--db", url).returncode == 0
    result = cli("status", "--db", url, "--gateway", "gw1")
    assert result.returncode == 2 and "--gateway" in result.stderr


def test_a_gap_the_broker_left_is_filled_by_a_resend(cli, broker, tmp_path) -> None:
    """Mosquitto 2.0 does not restore shared subscriptions after a restart: what a gateway
    publishes before the collector subscribes again is dropped. The gap this leaves is seen
    when later messages come, asked for, re-sent by the gateway, and closed."""
    fleet_db = tmp_path / "fleet.db"
    url = f"sqlite:///{fleet_db}"
    collector = CollectorProcess(collector_config(tmp_path, broker, url, "c1")).start()
    wait_for(lambda: "connected to" in collector.log.read_text(), 30, "the collector")
    directory = tmp_path / "gwa"
    directory.mkdir()
    log = make_log(cli, directory, "a-1", "0.4", "2026-10-28T00:00:00Z", END)
    gateway = Gateway(replay_gateway_config(directory, broker, "gwa", {"a-1": log}, 20_000)).start()
    try:
        # Some intervals arrive, then the collector stops and the broker restarts.
        wait_for(lambda: len(fleet_rows(url)[0]) >= 10, 60, "the first intervals")
        assert collector.stop() == 0
        broker.stop()
        broker.start()

        def published() -> int:
            intervals, _, waiting = gateway_rows(directory / "gateway.db")
            return 0 if waiting else len(intervals)

        # The gateway publishes more while no shared subscription exists: dropped.
        before = published()
        wait_for(lambda: published() > before + 20, 60, "intervals published into the void")
        collector.start()
        wait_for(lambda: _settled({"gwa": directory}, url), 120, "the gap filled")
    finally:
        gateway.stop()
        collector.stop()
    text = collector.log.read_text()
    assert "asking amr/gwa/a-1/cmd/resend to re-send" in text
    from sqlalchemy import create_engine
    from sqlalchemy import text as sql

    engine = create_engine(url)
    with engine.connect() as connection:
        open_gaps = connection.execute(
            sql("SELECT count(*) FROM fleet_gaps WHERE closed_ns IS NULL AND kind = 'interval'")
        ).scalar()
        closed = connection.execute(
            sql("SELECT count(*) FROM fleet_gaps WHERE closed_ns IS NOT NULL")
        ).scalar()
    engine.dispose()
    assert open_gaps == 0 and closed >= 1
