"""The collector's fleet page and its JSON API (issue 20): a real Mosquitto, two gateways
replaying logs, the fleet database in SQLite; every number equals the fleet commands'."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from fleet_helpers import CollectorProcess, collector_config
from fleet_web_helpers import Fleet, running_fleet, web_url
from mqtt_helpers import Broker, wait_for
from web_helpers import get_json, request, run_cli


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    with running_fleet(tmp_path_factory.mktemp("fleet-web")) as running:
        yield running


def _cli_json(*args: str):
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _agree(fleet: Fleet, path: str, *args: str):
    """The page's JSON once it equals the command's: read both in turn until they agree (a
    gateway's last events may still be arriving); fails when they never do."""

    def same():
        page = get_json(fleet.url, path)
        return page if page == _cli_json(*args) else None

    return wait_for(same, 30, f"{path} to equal {' '.join(args)}")


def test_status_and_bill_json_equal_the_commands(fleet: Fleet) -> None:
    status = _agree(fleet, "/api/status", "status", "--db", fleet.db, "--json")
    assert status["gateways"]["gwa"]["status"] == "offline"
    assert status["gateways"]["gwb"]["status"] == "online"
    for query, args in (
        ("", ()),
        ("?period=2026-10", ("--period", "2026-10")),
        (
            "?period=2026-10&meter=gwb/b-1",
            ("--period", "2026-10", "--gateway", "gwb", "--meter", "b-1"),
        ),
        ("?meter=b-2", ("--meter", "b-2")),
    ):
        expected = _cli_json("bill", "--db", fleet.db, "--format", "json", *args)
        assert get_json(fleet.url, f"/api/bill{query}") == expected, query
    october = get_json(fleet.url, "/api/bill?period=2026-10")["gateways"]
    assert october["gwb"]["b-1"]["energy_wh"] > 0
    assert october["gwb"]["b-2"] == {"quality": "no read"}


def test_overview_orders_and_previews_the_bill(fleet: Fleet) -> None:
    def cards_agree():
        # The overview follows the collector's commits (at most every 2 s): wait for it.
        overview = get_json(fleet.url, "/api/overview")
        status = _cli_json("status", "--db", fleet.db, "--json")["gateways"]
        same = all(
            overview["meters"][f"{g}/{m}"][field] == value
            for g in status
            for m in status[g]["meters"]
            for field, value in status[g]["meters"][m].items()
        )
        return (overview, status) if same else None

    overview, status = wait_for(cards_agree, 30, "the overview to equal status --json")
    assert list(overview["gateways"]) == ["gwa", "gwb"]  # the offline one first
    assert overview["gateways"]["gwa"]["status"] == "offline"
    assert overview["gateways"]["gwa"]["since"] == status["gwa"]["since"]
    assert sorted(overview["order"]) == ["gwa/a-1", "gwb/b-1", "gwb/b-2"]
    # Every meter is silent (its last interval a month ago): all need a look, by name.
    assert overview["order"] == ["gwa/a-1", "gwb/b-1", "gwb/b-2"]
    # The bill preview: the register less the last read's register.
    b1 = overview["meters"]["gwb/b-1"]
    read = status["gwb"]["meters"]["b-1"]["last_read"]
    assert b1["current_period"] == {
        "period": "2026-11",
        "since": read["end"],
        "energy_wh": b1["energy_wh"] - read["register_wh"],
    }
    # By hand: 0.6 kW is an edge (5 Wh) every 30 s; the edge exactly at the read (1 November
    # 00:00) opens the period, and the log's last edge is exactly at its end: 60 h of 600 Wh,
    # and one edge more.
    assert b1["current_period"]["energy_wh"] == 60 * 600 + 5
    b2 = overview["meters"]["gwb/b-2"]
    assert (
        b2["current_period"]["since"] is None
        and b2["current_period"]["energy_wh"] == b2["energy_wh"]
    )
    gwb = overview["gateways"]["gwb"]["bill"]
    assert gwb == {
        "period": "2026-11",
        "energy_wh": b1["current_period"]["energy_wh"] + b2["energy_wh"],
    }


def test_meter_data_and_downloads_equal_the_commands(fleet: Fleet) -> None:
    data = get_json(fleet.url, "/api/meters/gwb%2Fb-1")
    assert data["today"] == "2026-11-03"
    exported = run_cli(
        "export",
        "--db",
        fleet.db,
        "--gateway",
        "gwb",
        "--meter",
        "b-1",
        "--from",
        "2026-11-03T00:00:00Z",
    )
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert len(data["intervals"]) == len(rows) == 49  # 48 of the morning, and the open one
    for shown, row in zip(data["intervals"], rows, strict=True):
        assert shown == {
            "start": row["start"],
            "end": row["end"],
            "energy_wh": int(row["energy_wh"]),
            "edges": int(row["edges"]),
            "demand_kw": float(row["demand_kw"]),
            "quality": row["quality"],
        }
    bill = _cli_json(
        "bill", "--db", fleet.db, "--format", "json", "--gateway", "gwb", "--meter", "b-1"
    )
    assert data["reads"][-1] == bill["gateways"]["gwb"]["b-1"]
    for path, args in (
        ("bill.csv?period=2026-10", ("bill", "--period", "2026-10")),
        (
            "intervals.csv?from=2026-11-02&to=2026-11-02",  # a date input's: that whole UTC day
            ("export", "--from", "2026-11-02T00:00:00Z", "--to", "2026-11-03T00:00:00Z"),
        ),
    ):
        code, _, body = request(fleet.url, f"/api/meters/gwb%2Fb-1/{path}")
        assert code == 200, body
        expected = run_cli(*args, "--db", fleet.db, "--gateway", "gwb", "--meter", "b-1").stdout
        assert body.decode() == expected
    code, _, body = request(fleet.url, "/api/meters/gwb%2Fb-1/espi.xml")
    assert code == 200 and b"<feed" in body


def test_pages_and_refusals(fleet: Fleet) -> None:
    code, headers, body = request(fleet.url, "/")
    assert code == 200 and "script-src 'self'" in headers["Content-Security-Policy"]
    page = body.decode()
    assert 'data-gateway="gwa" class="gw-offline"' in page
    assert 'href="/meter/gwb/b-1"' in page
    for path in ("/meter/gwb/b-1", "/meter/gwb%2Fb-1"):
        code, _, body = request(fleet.url, path)
        assert code == 200 and b'data-meter="gwb/b-1"' in body, path
    for path in ("/meter/gwb/nope", "/meter/b-1", "/api/meters/gwz%2Fb-1", "/api/bill?meter=nope"):
        assert request(fleet.url, path)[0] == 404, path
    assert request(fleet.url, "/api/bill?period=2026-13")[0] == 400
    assert request(fleet.url, "/", method="POST")[0] == 405


def test_metrics(fleet: Fleet) -> None:
    code, _, body = request(fleet.url, "/metrics")
    assert code == 200
    text = body.decode()
    assert 'amr_fleet_gateway_online{gateway="gwa"} 0.0' in text
    assert 'amr_fleet_gateway_online{gateway="gwb"} 1.0' in text
    assert "amr_fleet_gateways_online 1.0" in text
    assert "amr_fleet_meters_silent 3.0" in text
    ingested = re.search(r'amr_fleet_messages_ingested_total\{collector="c-web"\} (\S+)', text)
    assert ingested is not None and float(ingested.group(1)) > 0


def test_collect_web_refuses_beyond_localhost_without_a_token(tmp_path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[collector]\ndatabase = "sqlite:///{tmp_path / "f.db"}"\n')
    result = run_cli("collect", "--config", str(config), "--web", "0.0.0.0:0")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--web.listen" in result.stderr and "token_file" in result.stderr
    assert not (tmp_path / "f.db").exists()  # nothing opened first
    config.write_text(config.read_text() + '\n[web]\nlisten = "10.0.0.1:8081"\n')
    result = run_cli("collect", "--config", str(config))
    assert result.returncode == 2 and f"{config}: web.listen" in result.stderr
    assert not (tmp_path / "f.db").exists()


def test_beyond_localhost_the_fleet_page_requires_its_token(tmp_path) -> None:
    """The collector's page follows the gateway's rules: bound beyond localhost, nothing is
    served without the token (header, or the cookie ``?token=`` sets), and none of it is logged;
    without a token file such an address is refused at start."""
    token = "fleet-token-0123456789abcdef"
    (tmp_path / "token").write_text(token + "\n")
    broker = Broker(tmp_path / "broker")
    broker.directory.mkdir()
    broker.start()
    db = f"sqlite:///{tmp_path / 'fleet.db'}"
    web = f'\n[web]\nlisten = "127.0.0.2:0"\ntoken_file = "{tmp_path / "token"}"\n'
    collector = CollectorProcess(collector_config(tmp_path, broker, db, "c-tok", web)).start()
    try:
        url = wait_for(lambda: web_url(collector), 30, "the fleet page's address")
        assert url.startswith("http://127.0.0.2:")
        for path in ("/", "/api/status", "/api/bill", "/events", "/metrics", "/meter/gw/m"):
            status, headers, body = request(url, path)
            assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer"), path
            assert token not in body.decode()
        assert request(url, "/api/status", headers={"Authorization": "Bearer nope"})[0] == 401
        good = {"Authorization": f"Bearer {token}"}

        def answered() -> bool:  # a 503 (Retry-After) until the collector has its database
            status, headers, _ = request(url, "/api/status", headers=good)
            assert status in (200, 503), status
            assert status == 200 or headers["Retry-After"] == "2"
            return status == 200

        wait_for(answered, 30, "the fleet's status behind the token")
        status, headers, _ = request(url, f"/?token={token}")
        assert status == 200 and "HttpOnly" in headers["Set-Cookie"]
        jar = {"Cookie": headers["Set-Cookie"].split(";")[0]}
        assert request(url, "/metrics", headers=jar)[0] == 200
    finally:
        code = collector.stop()
        broker.stop()
    assert code == 0, collector.log.read_text()
    assert token not in collector.log.read_text()
    # Beyond localhost without a token file (or certificates): refused, named, nothing opened.
    bare = collector_config(tmp_path, broker, db, "c-bare", '\n[web]\nlisten = "127.0.0.2:0"\n')
    result = run_cli("collect", "--config", str(bare), cwd=tmp_path)
    assert result.returncode == 2 and "web.listen" in result.stderr, result.stderr
