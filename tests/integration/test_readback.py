"""Reading the database back: status, export and LCD reconciliation."""

from __future__ import annotations

import csv
import io
import json

T0 = 1_764_057_600  # 2025-11-25T08:00:00Z


def imported(cli, tmp_path) -> str:
    profile = tmp_path / "p.csv"
    # 4 kW for an hour, then 8 kW for an hour: 12 kWh, intervals of 1000 Wh then 2000 Wh.
    profile.write_text(f"time,kw\n{T0},4\n{T0 + 3600},8\n{T0 + 7200},0\n")
    log = tmp_path / "log.csv"
    assert (
        cli("simulate", "--profile", str(profile), "--out", str(log), "--meter", "u1").returncode
        == 0
    )
    url = f"sqlite:///{tmp_path / 'g.db'}"
    result = cli("replay", str(log), "--db", url)
    assert result.returncode == 0, result.stderr
    return url


def test_status_json_names_every_figure(cli, tmp_path) -> None:
    url = imported(cli, tmp_path)
    result = cli("status", "--db", url, "--json")
    assert result.returncode == 0, result.stderr
    meter = json.loads(result.stdout)["meters"]["u1"]
    # The end of the log confirms its last edge (at 10:00:00 exactly), as `replay --json`
    # counts it (issue #11): all 2400 edges.
    assert meter["energy_wh"] == 12_000 and meter["lcd_kwh"] == 12
    assert meter["edges"] == {"10": 2400, "1K": 24}
    assert meter["last_edge"]["10"] == "2025-11-25T10:00:00Z"  # 8 kW: every 2.25 s
    # 09:00-09:15 at 8 kW is 400 edges exactly: 2000 Wh in 15 minutes, the first such window.
    assert meter["peak_demand_kw"] == 8.0 and meter["peak_demand_end"] == "2025-11-25T09:15:00Z"
    assert meter["crosscheck"]["status"] == "ok"
    assert meter["last_reconciliation"] is None
    plain = cli("status", "--db", url)
    assert "u1 (unknown, replay): 12000 Wh, LCD 12 kWh" in plain.stdout


def test_export_filters_by_meter_and_time(cli, tmp_path) -> None:
    url = imported(cli, tmp_path)
    result = cli("export", "--db", url, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["start"] for r in rows][:2] == ["2025-11-25T08:00:00Z", "2025-11-25T08:15:00Z"]
    # The last edge, at 10:00:00 exactly, opens 10:00-10:15, which the log's end leaves partial.
    assert [int(r["energy_wh"]) for r in rows] == [995, 1000, 1000, 1000, 2000, 2000, 2000, 2000, 5]
    assert rows[-1]["quality"] == "partial"
    assert rows[4]["demand_kw"] == "8.00" and rows[0]["quality"] == "complete"  # start= says 08:00
    result = cli(
        "export",
        "--db",
        url,
        "--meter",
        "u1",
        "--from",
        "2025-11-25T09:00:00Z",
        "--to",
        "2025-11-25T09:30:00Z",
    )
    window = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["start"], r["end"]) for r in window] == [
        ("2025-11-25T09:00:00Z", "2025-11-25T09:15:00Z"),
        ("2025-11-25T09:15:00Z", "2025-11-25T09:30:00Z"),
    ]
    bad = cli("export", "--db", url, "--meter", "nobody")
    assert bad.returncode == 2 and "--meter nobody" in bad.stderr
    bad = cli("export", "--db", url, "--from", "yesterday")
    assert bad.returncode == 2 and "--from" in bad.stderr


def test_reconcile_sets_a_baseline_then_reports_drift(cli, tmp_path) -> None:
    url = imported(cli, tmp_path)
    # The LCD showed 1234 kWh: the meter held 1,234,000..1,234,999 Wh against 12,000 counted.
    first = cli("reconcile", "--db", url, "--meter", "u1", "--lcd-kwh", "1234")
    assert first.returncode == 0, first.stderr
    assert "offset 1222000..1222999 Wh (the baseline)" in first.stdout
    again = cli("reconcile", "--db", url, "--meter", "u1", "--lcd-kwh", "1234")
    assert "drift -999..999 Wh" in again.stdout and "consistent" in again.stdout
    # Two kWh more on the LCD with nothing more counted: the gateway lost energy.
    lost = cli("reconcile", "--db", url, "--meter", "u1", "--lcd-kwh", "1236")
    assert "drift 1001..2999 Wh" in lost.stdout
    assert "the gateway counted 1001..2999 Wh less than the LCD" in lost.stdout  # issue 16
    status = json.loads(cli("status", "--db", url, "--json").stdout)["meters"]["u1"]
    assert status["last_reconciliation"]["lcd_kwh"] == 1236
    assert status["last_reconciliation"]["consistent"] is False
    bad = cli("reconcile", "--db", url, "--meter", "u9", "--lcd-kwh", "1")
    assert bad.returncode == 2 and "u9" in bad.stderr and "u1" in bad.stderr
