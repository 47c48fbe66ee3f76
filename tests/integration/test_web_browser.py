"""The web view in a real browser: Debian's chromium, driven headless by Playwright (issue 20).

The numbers on screen equal ``status --json`` and ``bill``; a new edge shows up without a
reload; the chart draws; beyond localhost a browser without the token is refused, and one that
came with ``?token=`` gets the live stream through its cookie. Screenshots go to the test's tmp
directory.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from mqtt_helpers import wait_for
from web_helpers import (
    METER,
    OCTOBER_WH,
    Daemon,
    finished,
    make_log,
    replay_meter,
    run_cli,
    simulate_meter,
    write_config,
)

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
TOKEN = "browser-token-0123456789abcdef"


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
def replayed(tmp_path_factory):
    directory = tmp_path_factory.mktemp("browser")
    log = make_log(run_cli, directory)
    config = write_config(directory, replay_meter(log), 'listen = "127.0.0.1:0"')
    daemon = Daemon(config, cwd=directory)
    try:
        wait_for(lambda: finished(daemon.url), 60, "the replay to be committed")
        yield daemon, f"sqlite:///{directory / 'gateway.db'}"
    finally:
        code, err = daemon.stop()
        assert code == 0, err


def _page(browser, **options):
    page = browser.new_page(**options)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    return page, problems


def _live(page) -> None:
    # (wait_for_function would eval a string, which the page's CSP rightly forbids)
    page.wait_for_selector("#live.on")


def _text(card, key: str) -> str:
    return card.locator(f'[data-k="{key}"]').inner_text()


def test_gateway_page_shows_what_status_says(browser, replayed, tmp_path) -> None:
    daemon, db = replayed
    page, problems = _page(browser)
    page.goto(daemon.url)
    _live(page)  # the stream's first overview has been applied
    result = run_cli("status", "--db", db, "--json")
    status = json.loads(result.stdout)["meters"][METER]
    card = page.locator(f'section.card[data-meter="{METER}"]')
    assert _text(card, "energy_wh") == str(status["energy_wh"])
    assert _text(card, "lcd_kwh") == str(status["lcd_kwh"])
    assert _text(card, "power_kw") == f"{status['power_kw']:.3f}"
    assert _text(card, "demand_kw") == f"{status['demand_kw']:.2f}"
    assert _text(card, "peak_demand_kw") == f"{status['peak_demand_kw']:.2f}"
    assert _text(card, "peak_demand_end") == status["peak_demand_end"]
    assert _text(card, "peak_since") == status["last_read"]["end"]
    assert _text(card, "edges") == " ".join(f"{c}={n}" for c, n in status["edges"].items())
    assert _text(card, "last_edge") == max(t for t in status["last_edge"].values() if t)
    assert page.locator('[data-h="storage"]').inner_text() == "ok"
    page.screenshot(path=str(tmp_path / "gateway.png"), full_page=True)
    assert problems == []  # no script error, no CSP violation


def test_meter_page_draws_the_chart_and_the_bill(browser, replayed, tmp_path) -> None:
    daemon, db = replayed
    page, problems = _page(browser, viewport={"width": 390, "height": 844})  # a phone
    page.goto(f"{daemon.url}meter/{METER}")
    page.wait_for_selector("#chart[data-drawn]")
    bars = page.locator("#chart svg rect.bar")
    exported = run_cli("export", "--db", db, "--meter", METER, "--from", "2026-11-01T00:00:00Z")
    rows = exported.stdout.strip().splitlines()[1:]
    assert bars.count() == len(rows) > 0
    heights = [float(bars.nth(i).get_attribute("height") or 0) for i in range(bars.count())]
    assert max(heights) > 0  # drawn, not just present
    bill = json.loads(run_cli("bill", "--db", db, "--period", "2026-10", "--format", "json").stdout)
    row = page.locator("#reads tbody tr", has_text="2026-10")
    assert str(bill["meters"][METER]["energy_wh"]) in row.inner_text()
    assert bill["meters"][METER]["energy_wh"] == OCTOBER_WH
    assert page.locator("#running").inner_text() == "1205"  # 3,600 - 2,395 Wh since the read
    # Usable on a phone: nothing wider than the screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(tmp_path / "meter-phone.png"), full_page=True)
    with page.expect_download() as download:
        page.locator("form[action$='bill.csv'] button").click()
    path = download.value.path()
    expected = run_cli("bill", "--db", db, "--period", "2026-10", "--meter", METER).stdout
    assert Path(path).read_text() == expected
    assert problems == []


def test_live_without_reload_and_the_token_beyond_localhost(browser, tmp_path) -> None:
    (tmp_path / "token").write_text(TOKEN)
    config = write_config(
        tmp_path,
        simulate_meter("unit-101", speed=3600),
        f'listen = "127.0.0.2:0"\ntoken_file = "{tmp_path / "token"}"',
    )
    daemon = Daemon(config, cwd=tmp_path)
    try:
        page, problems = _page(browser, viewport={"width": 1000, "height": 640})
        refused = page.goto(daemon.url)
        assert refused is not None and refused.status == 401
        assert page.goto(f"{daemon.url}?token={TOKEN}").status == 200
        _live(page)  # the EventSource got in with the cookie ?token= set
        page.evaluate("window.notReloaded = true")
        card = page.locator('section.card[data-meter="unit-101"]')
        wait_for(lambda: int(_text(card, "energy_wh") or 0) > 0, 60, "a first commit")
        before = int(_text(card, "energy_wh"))
        wait_for(lambda: int(_text(card, "energy_wh")) > before, 60, "the register to climb")
        assert page.evaluate("window.notReloaded") is True  # updated in place
        after = int(_text(card, "energy_wh"))
        assert after > before and (after - before) % 5 == 0  # whole 5 Wh edges
        page.screenshot(path=str(tmp_path / "web-gateway.png"))
        assert problems == [] or all("401" in p for p in problems), problems
        # A fresh browser context without the token is refused on every path.
        other = browser.new_context()
        for path in ("", "meter/unit-101", "events", "metrics"):
            response = other.new_page().goto(f"{daemon.url}{path}")
            assert response is not None and response.status == 401, path
        other.close()
    finally:
        code, err = daemon.stop()
    assert code == 0, err
