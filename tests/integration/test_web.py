"""The web view over plain HTTP: the same numbers as the commands, every endpoint, the 4xx
cases, the headers, escaping, access beyond localhost, and configuration errors (issue 20)."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
from db_helpers import read_db
from mqtt_helpers import wait_for
from prometheus_client.parser import text_string_to_metric_families
from web_helpers import (
    METER,
    OCTOBER_PEAK_END,
    OCTOBER_PEAK_KW,
    OCTOBER_WH,
    TOTAL_WH,
    Daemon,
    finished,
    get_json,
    make_log,
    replay_meter,
    request,
    run_cli,
    simulate_meter,
    write_config,
)


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    """A daemon that replayed a log across a billing read, web view on a free port."""
    directory = tmp_path_factory.mktemp("web")
    log = make_log(run_cli, directory)
    config = write_config(directory, replay_meter(log), 'listen = "127.0.0.1:0"')
    daemon = Daemon(config, cwd=directory)
    try:
        wait_for(lambda: finished(daemon.url), 60, "the replay to be committed")
        yield daemon, f"sqlite:///{directory / 'gateway.db'}"
    finally:
        code, err = daemon.stop()
        assert code == 0, err
        assert "Traceback" not in err


def _outbox(db: str) -> int:
    with read_db(Path(db.removeprefix("sqlite:///"))) as connection:  # the daemon holds it
        return int(connection.execute("select count(*) from mqtt_outbox").fetchone()[0])


def _cli_json(*args: str):
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _cli_text(*args: str) -> str:
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _stable_status(url: str, db: str):
    """Read the command's status, the web's, the command's again: equal when the daemon is idle."""

    def attempt():
        before = _cli_json("status", "--db", db, "--json")
        web = get_json(url, "/api/status")
        after = _cli_json("status", "--db", db, "--json")
        return (before, web) if before == after else None

    return wait_for(attempt, 30, "a status that stays put")


def test_status_and_overview_equal_status_json(replayed) -> None:
    daemon, db = replayed
    cli, web = _stable_status(daemon.url, db)
    assert web == cli
    assert web["meters"][METER]["energy_wh"] == TOTAL_WH
    overview = get_json(daemon.url, "/api/overview")
    assert overview["meters"] == cli["meters"]
    health = overview["gateway"]
    assert health["gateway"] == "gw-web" and health["mqtt"] == "off"
    assert health["storage"] == "ok"
    # MQTT is off: every interval, read and event waits in the outbox.
    assert health["outbox_depth"] == _outbox(db) > 0
    # The page shows the same numbers.
    _, headers, body = request(daemon.url, "/")
    page = body.decode()
    assert f'<span data-k="energy_wh">{TOTAL_WH}</span>' in page
    assert f'<span data-k="lcd_kwh">{TOTAL_WH // 1000}</span>' in page
    assert '<span data-k="peak_demand_kw">' in page
    assert headers["Content-Type"].startswith("text/html")


def test_bill_and_downloads_equal_the_commands(replayed) -> None:
    daemon, db = replayed
    web = get_json(daemon.url, "/api/bill?period=2026-10")
    assert web == _cli_json("bill", "--db", db, "--period", "2026-10", "--format", "json")
    october = web["meters"][METER]
    assert october["energy_wh"] == OCTOBER_WH  # by hand (web_helpers)
    assert october["peak_demand_kw"] == OCTOBER_PEAK_KW
    assert october["peak_demand_end"] == OCTOBER_PEAK_END
    assert get_json(daemon.url, f"/api/bill?meter={METER}") == _cli_json(
        "bill", "--db", db, "--meter", METER, "--format", "json"
    )
    base = f"/api/meters/{METER}"
    status, headers, body = request(daemon.url, f"{base}/bill.csv?period=2026-10")
    assert status == 200 and headers["Content-Disposition"].startswith("attachment")
    assert body.decode() == _cli_text("bill", "--db", db, "--period", "2026-10", "--meter", METER)
    status, _, body = request(daemon.url, f"{base}/intervals.csv?from=2026-11-01&to=2026-11-01")
    assert status == 200
    assert body.decode() == _cli_text(
        "export", "--db", db, "--meter", METER,
        "--from", "2026-11-01T00:00:00Z", "--to", "2026-11-02T00:00:00Z",
    )  # fmt: skip
    status, _, body = request(daemon.url, f"{base}/espi.xml")
    assert status == 200
    feed = _cli_text("export", "--db", db, "--format", "espi", "--meter", METER)
    updated = re.compile(r"<updated>[^<]*</updated>")  # the time the feed was written
    assert updated.sub("", body.decode()) == updated.sub("", feed)


def test_meter_page_data(replayed) -> None:
    daemon, db = replayed
    data = get_json(daemon.url, f"/api/meters/{METER}")
    assert data["status"] == _stable_status(daemon.url, db)[0]["meters"][METER]
    assert data["today"] == "2026-11-01"  # the meter's own day: its log's last
    # The current period runs from the read at midnight: 3,600 - 2,395 Wh (by hand).
    assert data["current_period"] == {"since": "2026-11-01T00:00:00Z", "energy_wh": 1205}
    assert [r["period"] for r in data["reads"]] == ["2026-10"]
    exported = _cli_text("export", "--db", db, "--meter", METER).splitlines()[1:]
    today = [line for line in exported if line.split(",")[1] >= "2026-11-01"]
    assert [r["start"] for r in data["intervals"]] == [line.split(",")[1] for line in today]
    assert sum(d["energy_wh"] for d in data["days"]) == sum(
        int(line.split(",")[3]) for line in exported
    )
    status, _, body = request(daemon.url, f"/meter/{METER}")
    assert status == 200 and b'id="chart"' in body and b"2026-10" in body


def test_metrics_follow_the_naming_guide(replayed) -> None:
    daemon, _db = replayed
    status, headers, body = request(daemon.url, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    samples = {s.name: s for f in families.values() for s in f.samples}
    energy = samples["amr_meter_energy_joules_total"]
    assert energy.labels == {"gateway": "gw-web", "meter": METER}
    assert energy.value == TOTAL_WH * 3600
    assert samples["amr_meter_energy_watt_hours_total"].value == TOTAL_WH
    assert families["amr_meter_energy_joules"].type == "counter"
    assert families["amr_meter_power_watts"].type == "gauge"
    assert samples["amr_meter_edges_10_total"].value == TOTAL_WH // 5
    assert samples["amr_gateway_up"].value == 1
    assert samples["amr_gateway_outbox_messages"].value == _outbox(_db)
    assert samples["amr_gateway_commit_latency_seconds"].value > 0
    for sample in samples.values():
        assert set(sample.labels) <= {"gateway", "meter"}, sample


def test_events_stream_the_overview(replayed) -> None:
    daemon, _db = replayed
    host, port = daemon.url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"GET /events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        received = b""
        while b"\n\n" not in received.partition(b"\r\n\r\n")[2]:
            received += sock.recv(65536)
    head, _, stream = received.partition(b"\r\n\r\n")
    assert b"text/event-stream" in head
    event = stream.decode().split("\n\n")[0]
    assert event.startswith("event: overview\n")
    data = json.loads(event.split("data: ", 1)[1])
    assert data["meters"][METER]["energy_wh"] == TOTAL_WH


def test_bad_requests_get_a_clear_4xx(replayed) -> None:
    daemon, _db = replayed
    cases = [
        ("POST", "/", 405),
        ("PUT", "/api/status", 405),
        ("DELETE", "/metrics", 405),
        ("PATCH", "/", 405),
        ("GET", "/nope", 404),
        ("GET", "/meter/nobody", 404),
        ("GET", "/api/meters/nobody", 404),
        ("GET", f"/api/meters/{METER}/other.csv", 404),
        ("GET", "/static/../server.py", 404),
        ("GET", "/static/nope.js", 404),
        ("GET", "/api/bill?period=2026-13", 400),
        ("GET", "/api/bill?period=1999-01", 404),  # no read ends it
        ("GET", f"/api/meters/{METER}/intervals.csv?from=yesterday", 400),
        ("GET", f"/api/meters/{METER}/bill.csv?period=x", 400),
    ]
    for method, path, expected in cases:
        status, headers, body = request(daemon.url, path, method)
        assert status == expected, (method, path, status, body)
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        text = body.decode()
        assert "Traceback" not in text and len(text.strip().splitlines()) == 1, text
        if expected == 405:
            assert headers["Allow"] == "GET, HEAD"
    status, _, body = request(daemon.url, "/api/bill?period=2026-13")
    assert "--period" in body.decode()
    # HEAD: the headers, no body.
    status, headers, body = request(daemon.url, "/api/status", "HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
    # A page elsewhere that rebinds its name to 127.0.0.1 is not served.
    status, _, _ = request(daemon.url, "/api/status", headers={"Host": "evil.example:80"})
    assert status == 403


def test_every_page_has_a_strict_csp_and_no_inline_script(replayed) -> None:
    daemon, _db = replayed
    for path in ("/", f"/meter/{METER}"):
        status, headers, body = request(daemon.url, path)
        assert status == 200
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        scripts = re.findall(rb"<script([^>]*)>(.*?)</script>", body, re.S)
        assert scripts and all(b'src="/static/' in attrs and not code for attrs, code in scripts)
        assert b" on" not in re.sub(rb">[^<]*<", b"><", body)  # no inline handlers
    for name in ("gateway.js", "meter.js", "common.js", "style.css"):
        status, headers, body = request(daemon.url, f"/static/{name}")
        assert status == 200 and body


def _hostile_server(tmp_path: Path):
    from gateway.config import WebSettings
    from gateway.sinks.database import Database
    from gateway.sinks.store import Store
    from gateway.web.provider import GatewayProvider
    from gateway.web.server import WebServer
    from gateway.web.snapshot import GatewaySnapshot, SnapshotHolder

    url = f"sqlite:///{tmp_path / 'hostile.db'}"
    database = Database(url)
    Store(database).meter(HOSTILE, "<b>model</b>", "simulate", 0)
    database.close()
    holder = SnapshotHolder()
    holder.publish(
        GatewaySnapshot(1, "<gw>", 0, 0, None, None, False, False, None, False, meters=())
    )
    server = WebServer(WebSettings(listen="127.0.0.1:0"), GatewayProvider(url, holder, "<gw>"))
    server.start()
    return server


HOSTILE = "<img src=x onerror=alert(1)>\"'&"


def test_a_hostile_meter_name_is_escaped(tmp_path) -> None:
    from urllib.parse import quote

    server = _hostile_server(tmp_path)
    try:
        for path in ("/", f"/meter/{quote(HOSTILE, safe='')}"):
            status, _, body = request(server.url, path)
            assert status == 200, body
            page = body.decode()
            assert "<img" not in page and "<b>model" not in page and "<gw>" not in page
            assert "&lt;img src=x onerror=alert(1)&gt;&quot;&#x27;&amp;" in page
        data = get_json(server.url, f"/api/meters/{quote(HOSTILE, safe='')}")
        assert data["meter"] == HOSTILE
    finally:
        server.stop()


def test_beyond_localhost_a_token_is_required(tmp_path) -> None:
    token = "s3cret-token-0123456789"
    (tmp_path / "token").write_text(token + "\n")
    config = write_config(
        tmp_path,
        simulate_meter(speed=60),
        f'listen = "127.0.0.2:0"\ntoken_file = "{tmp_path / "token"}"',
    )
    daemon = Daemon(config, cwd=tmp_path)
    try:
        assert daemon.url.startswith("http://127.0.0.2:")
        for path in ("/", "/api/status", "/events", "/metrics", "/static/gateway.js"):
            status, headers, body = request(daemon.url, path)
            assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer"), path
            assert token not in body.decode()
        bad = {"Authorization": "Bearer wrong-token-0123456789"}
        assert request(daemon.url, "/api/status", headers=bad)[0] == 401
        assert request(daemon.url, "/api/status?token=nope")[0] == 401
        good = {"Authorization": f"Bearer {token}"}
        assert request(daemon.url, "/api/status", headers=good)[0] == 200
        # EventSource cannot send headers: ?token= on the page sets an HttpOnly cookie.
        status, headers, _ = request(daemon.url, f"/?token={token}")
        assert status == 200
        cookie = headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        jar = {"Cookie": cookie.split(";")[0]}
        assert request(daemon.url, "/metrics", headers=jar)[0] == 200
    finally:
        code, err = daemon.stop()
    assert code == 0, err
    assert token not in err and token not in (tmp_path / "daemon.out").read_text()


@pytest.mark.parametrize(
    ("web", "args", "message"),
    [
        ('listen = "nonsense"', (), "web.listen: 'nonsense': expected \"HOST:PORT\""),
        ('listen = "127.0.0.1:99999"', (), "web.listen"),
        ('listen = "127.0.0.1:0"\ncolour = "red"', (), "web.colour: unknown key"),
        ("listen = 8080", (), "web.listen: expected a string"),
        ('listen = "0.0.0.0:0"', (), "web.listen: '0.0.0.0:0' is beyond localhost"),
        (
            'listen = "0.0.0.0:0"\ntoken_file = "/nonexistent/token"',
            (),
            "web.token_file: /nonexistent/token",
        ),
        ('listen = "127.0.0.1:0"\ncert_file = "/x.pem"', (), "web.key_file"),
        ("", ("--web", "127.0.0.2:0"), "--web.listen: '127.0.0.2:0' is beyond localhost"),
        ("", ("--web", "x"), "--web.listen"),
    ],
)
def test_bad_web_configuration_exits_2_and_creates_nothing(tmp_path, web, args, message) -> None:
    config = write_config(tmp_path, simulate_meter(), web)
    result = run_cli("run", "--config", str(config), *args, cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "gateway.db").exists()


def test_a_port_in_use_exits_2_and_creates_nothing(tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, simulate_meter(), f'listen = "127.0.0.1:{port}"')
        result = run_cli("run", "--config", str(config), cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    assert f"web.listen: 127.0.0.1:{port}:" in result.stderr and "in use" in result.stderr
    assert not (tmp_path / "gateway.db").exists()


def test_stalled_browsers_never_block_counting(tmp_path) -> None:
    """Streams that never read fill their sockets; the loop counts and commits on, the server
    answers others, and streams beyond the limit get a 503."""
    from gateway.web.server import MAX_STREAMS

    config = write_config(tmp_path, simulate_meter(speed=36000), 'listen = "127.0.0.1:0"')
    daemon = Daemon(config, cwd=tmp_path)
    host, port = daemon.url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    stalled = []
    try:
        for _ in range(MAX_STREAMS):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            sock.connect((host, int(port)))
            sock.sendall(f"GET /events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            stalled.append(sock)  # never read
        _, _, body = wait_for(
            lambda: (r := request(daemon.url, "/events"))[0] == 503 and r, 30, "a 503"
        )
        assert b"too many open streams" in body
        db = tmp_path / "gateway.db"

        def register() -> int:
            with read_db(db) as connection:  # a copy: the daemon holds the file alone
                row = connection.execute("select sum(edges) from channel_counters").fetchone()
                return int(row[0] or 0)

        counted = register()
        wait_for(lambda: register() > counted + 100, 60, "commits to go on")
        assert request(daemon.url, "/api/status")[0] == 200
        wait_for(lambda: register() > counted + 200, 60, "commits to go on still")
    finally:
        for sock in stalled:
            sock.close()
        code, err = daemon.stop()
    assert code == 0, err
    assert "Traceback" not in err


def _certificates(directory: Path) -> dict[str, Path]:
    import subprocess

    def openssl(*args: str | Path) -> None:
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)

    files = {n: directory / n for n in ("ca.key", "ca.crt")}
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", files["ca.key"],
            "-out", files["ca.crt"], "-days", "2", "-subj", "/CN=amr-web-test-ca")  # fmt: skip
    extensions = {
        "server": "subjectAltName=IP:127.0.0.2\n",
        "client": "extendedKeyUsage=clientAuth\n",
    }
    for name, ext in extensions.items():
        key, csr, crt = (directory / f"{name}.{s}" for s in ("key", "csr", "crt"))
        (directory / f"{name}.ext").write_text(ext)
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
                "-subj", f"/CN={name}")  # fmt: skip
        openssl("x509", "-req", "-in", csr, "-CA", files["ca.crt"], "-CAkey", files["ca.key"],
                "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", directory / f"{name}.ext")  # fmt: skip
        files[f"{name}.key"], files[f"{name}.crt"] = key, crt
    return files


def test_tls_client_certificates_beyond_localhost(tmp_path) -> None:
    import http.client
    import ssl

    from gateway.config import WebSettings
    from gateway.sinks.database import Database
    from gateway.web.provider import GatewayProvider
    from gateway.web.server import WebServer
    from gateway.web.snapshot import GatewaySnapshot, SnapshotHolder

    files = _certificates(tmp_path)
    url = f"sqlite:///{tmp_path / 'tls.db'}"
    Database(url).close()
    holder = SnapshotHolder()
    holder.publish(GatewaySnapshot(1, "gw", 0, 0, None, None, False, False, None, True, ()))
    web = WebSettings(
        listen="127.0.0.2:0",
        cert_file=str(files["server.crt"]),
        key_file=str(files["server.key"]),
        client_ca_file=str(files["ca.crt"]),
    )
    server = WebServer(web, GatewayProvider(url, holder, "gw"))
    server.start()
    try:
        assert server.url.startswith("https://127.0.0.2:")
        port = int(server.url.rstrip("/").rsplit(":", 1)[1])

        def get(with_certificate: bool) -> int:
            context = ssl.create_default_context(cafile=str(files["ca.crt"]))
            if with_certificate:
                context.load_cert_chain(str(files["client.crt"]), str(files["client.key"]))
            connection = http.client.HTTPSConnection("127.0.0.2", port, context=context, timeout=30)
            try:
                connection.request("GET", "/api/status")
                response = connection.getresponse()
                response.read()
                return response.status
            finally:
                connection.close()

        assert get(True) == 200
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            get(False)
        # The server lives on after a refused handshake.
        assert get(True) == 200
    finally:
        server.stop()


def test_a_malformed_request_gets_one_plain_line(replayed) -> None:
    daemon, _db = replayed
    host, port = daemon.url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    for raw in (b"NONSENSE\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"GET /" + b"x" * 70000 + b"\r\n"):
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(raw)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        assert re.match(rb"HTTP/1\.[01] (4\d\d|505) ", head), head  # 505: HTTP/9.9
        assert b"Content-Security-Policy: default-src 'none'" in head
        assert b"<" not in body and len(body.decode().strip().splitlines()) == 1, body


def test_a_port_in_use_given_by_option_names_the_option(tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(
            "run", "--simulate", "--web", f"127.0.0.1:{port}", cwd=tmp_path, timeout=60
        )
    assert result.returncode == 2, result.stderr
    assert f"--web.listen: 127.0.0.1:{port}:" in result.stderr
    assert not (tmp_path / "gateway.db").exists()


def test_on_postgresql_the_same_numbers_as_the_commands(tmp_path, postgres_url) -> None:
    from gateway.config import WebSettings
    from gateway.web.provider import GatewayProvider
    from gateway.web.server import WebServer
    from gateway.web.snapshot import GatewaySnapshot, SnapshotHolder

    log = make_log(run_cli, tmp_path)
    config = write_config(tmp_path, replay_meter(log))
    result = run_cli("replay", str(log), "--db", postgres_url, "--config", str(config))
    assert result.returncode == 0, result.stderr
    holder = SnapshotHolder()
    holder.publish(GatewaySnapshot(1, "gw", 0, 0, None, None, False, False, None, True, ()))
    server = WebServer(
        WebSettings(listen="127.0.0.1:0"), GatewayProvider(postgres_url, holder, "gw")
    )
    server.start()
    try:
        status = get_json(server.url, "/api/status")
        assert status == _cli_json("status", "--db", postgres_url, "--json")
        assert status["meters"][METER]["energy_wh"] == TOTAL_WH
        bill = get_json(server.url, "/api/bill?period=2026-10")
        assert bill == _cli_json(
            "bill", "--db", postgres_url, "--period", "2026-10", "--format", "json"
        )
        assert bill["meters"][METER]["energy_wh"] == OCTOBER_WH
        data = get_json(server.url, f"/api/meters/{METER}")
        assert data["current_period"]["energy_wh"] == TOTAL_WH - OCTOBER_WH
    finally:
        server.stop()


def test_the_wheel_carries_every_asset(tmp_path) -> None:
    """Works offline: every script, style and icon of the pages is inside the wheel."""
    import shutil
    import subprocess
    import sys
    import zipfile

    root = Path(__file__).resolve().parents[2]
    source = tmp_path / "source"
    shutil.copytree(
        root,
        source,
        ignore=shutil.ignore_patterns(
            "build", "dist", ".git", "*.egg-info", "__pycache__", ".*cache", ".hypothesis", "*.db*"
        ),
    )
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(source)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("amr_gateway-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assets = sorted((root / "gateway" / "web" / "static").iterdir())
    assert assets
    for asset in assets:
        assert f"gateway/web/static/{asset.name}" in names, asset
    # and the pages name no other origin
    from gateway.web.server import STATIC

    assert sorted(STATIC) == sorted(a.name for a in assets)
    for asset in assets:
        assert "http://" not in asset.read_text().replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in asset.read_text()
