"""The collector's fleet page in a real browser: Debian's chromium, driven headless by
Playwright (issue 20). The numbers on screen equal the fleet's ``status --json``; an offline
gateway shows offline; a meter page from the fleet database draws its chart. Screenshots go to
the test's tmp directory.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil

import pytest
from fleet_web_helpers import Fleet, running_fleet
from mqtt_helpers import wait_for
from web_helpers import get_json, run_cli

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM) or shutil.which("chromium") is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs it)")
        pytest.skip("chromium is not installed")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    with running_fleet(tmp_path_factory.mktemp("fleet-browser")) as running:
        yield running


def _status(fleet: Fleet):
    result = run_cli("status", "--db", fleet.db, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _settled(fleet: Fleet):
    """status --json once the page's API says the same (the last events have arrived)."""

    def same():
        status = _status(fleet)
        return status if get_json(fleet.url, "/api/status") == status else None

    return wait_for(same, 30, "the fleet's status to hold still")["gateways"]


def _page(browser, **options):
    page = browser.new_page(**options)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    return page, problems


def test_fleet_page_shows_what_status_says(browser, fleet: Fleet, tmp_path) -> None:
    status = _settled(fleet)
    page, problems = _page(browser, viewport={"width": 1280, "height": 800})
    page.goto(fleet.url)
    page.wait_for_selector("#live.on")  # the stream's first overview has been applied
    for gateway, g in status.items():
        row = page.locator(f'#gateways tr[data-gateway="{gateway}"]')
        assert row.locator('[data-g="status"]').inner_text() == g["status"]
        assert row.locator('[data-g="since"]').inner_text() == g["since"]
        assert row.locator('[data-g="meters"]').inner_text() == str(len(g["meters"]))
        for meter, m in g["meters"].items():
            cells = page.locator(f'#fleet-meters tr[data-meter="{gateway}/{meter}"]')

            def text(key: str, cells=cells) -> str:
                return cells.locator(f'[data-k="{key}"]').inner_text()

            assert text("energy_wh") == str(m["energy_wh"])
            assert text("model") == m["model"]
            assert text("last_interval_end") == m["last_interval_end"]
            assert text("silent_since") == m["silent_since"]
            assert text("open_gaps") == str(len(m["open_gaps"]))
            assert text("anomalies") == str(m["anomalies"])
            read = m["last_read"]
            since = read["end"] if read else "counting began"
            assert text("period_since") == since
            assert text("period_energy_wh") == str(
                m["energy_wh"] - (read["register_wh"] if read else 0)
            )
    # gwa stopped: its last status is offline, shown first and marked
    assert status["gwa"]["status"] == "offline"
    first = page.locator("#gateways tbody tr").first
    assert first.get_attribute("data-gateway") == "gwa"
    assert first.get_attribute("class") == "gw-offline"
    assert first.locator('[data-g="status"]').inner_text() == "offline"
    assert page.locator('[data-h="state"]').inner_text() == "running"
    assert page.locator('[data-h="mqtt"]').inner_text() == "connected"
    page.screenshot(path=str(tmp_path / "web-fleet.png"), full_page=True)
    assert problems == []  # no script error, no CSP violation


def test_fleet_meter_page_draws_its_chart(browser, fleet: Fleet, tmp_path) -> None:
    page, problems = _page(browser, viewport={"width": 390, "height": 844})  # a phone
    page.goto(f"{fleet.url}meter/gwb/b-1")
    page.wait_for_selector("#chart[data-drawn]")
    bars = page.locator("#chart svg rect.bar")
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
    assert bars.count() == len(rows) > 0
    heights = [float(bars.nth(i).get_attribute("height") or 0) for i in range(bars.count())]
    assert max(heights) > 0  # drawn, not just present
    bill = json.loads(
        run_cli(
            "bill", "--db", fleet.db, "--period", "2026-10", "--format", "json", "--gateway", "gwb"
        ).stdout
    )
    row = page.locator("#reads tbody tr", has_text="2026-10")
    assert str(bill["gateways"]["gwb"]["b-1"]["energy_wh"]) in row.inner_text()
    card = page.locator("section.card")
    status = _status(fleet)["gateways"]["gwb"]["meters"]["b-1"]
    assert card.locator('[data-k="energy_wh"]').inner_text() == str(status["energy_wh"])
    assert page.locator("#running").inner_text() == str(
        status["energy_wh"] - status["last_read"]["register_wh"]
    )
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # usable on a phone
    page.screenshot(path=str(tmp_path / "fleet-meter-phone.png"), full_page=True)
    with page.expect_download() as download:
        page.locator("form[action$='bill.csv'] button").click()
    expected = run_cli(
        "bill", "--db", fleet.db, "--period", "2026-10", "--gateway", "gwb", "--meter", "b-1"
    ).stdout
    with open(download.value.path()) as handle:
        assert handle.read() == expected
    assert problems == []
