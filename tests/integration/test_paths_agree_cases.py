"""Where the replay, import and status paths once disagreed, case by case (the property over
every path is test_paths_agree.py)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from gateway.batch.command import replay
from gateway.commands.database import status
from gateway.core.edge import CHANNEL_1K, Edge
from gateway.core.meter import CoreSettings, MeterCore
from gateway.core.state import snapshot

NS = 1_000_000_000
T0 = 1_764_057_600  # 2025-11-25T08:00:00Z


def write(path: Path, rows: list[tuple[float, str, str, int]], meta: str = "") -> str:
    text = (f"# {meta}\n" if meta else "") + "time,meter,channel,level\n"
    text += "".join(f"{t:.6f},{m},{ch},{lv}\n" for t, m, ch, lv in rows)
    path.write_text(text)
    return str(path)


def as_json(paths: list[str], **options: str) -> dict[str, dict[str, object]]:
    out = io.StringIO()
    replay(paths, as_json=True, out=out, **options)  # type: ignore[arg-type]
    return json.loads(out.getvalue())["meters"]  # type: ignore[no-any-return]


def status_of(url: str) -> dict[str, dict[str, object]]:
    out = io.StringIO()
    status(url, True, out=out)
    return json.loads(out.getvalue())["meters"]  # type: ignore[no-any-return]


def steady(meter: str, kw: float, from_s: float, to_s: float) -> list[tuple[float, str, str, int]]:
    """`10` edges at a steady power: one every 5 Wh."""
    step = 5 * 3600 / (kw * 1000)
    n = int((to_s - from_s) / step)
    return [(from_s + (k + 1) * step, meter, "10", (k + 1) % 2) for k in range(n)]


def test_replay_db_then_status_counts_the_last_edge_as_replay_json_does(tmp_path) -> None:
    log = write(tmp_path / "a.csv", steady("m", 6, T0, T0 + 1800))
    url = f"sqlite:///{tmp_path / 'g.db'}"
    replay([log], db_url=url, out=io.StringIO())
    by_json = as_json([log])["m"]
    by_status = status_of(url)["m"]
    assert by_status["energy_wh"] == by_json["energy_wh"] == 3000  # old: 2995 in status
    assert by_status["edges"] == by_json["edges"]


def test_another_meters_log_changes_nothing_of_a_meter(tmp_path) -> None:
    # Meter b: 12 kW from 08:00 to 08:10 (its log says so); meter a's log spans 07:00-10:00.
    b = write(
        tmp_path / "b.csv",
        steady("b", 12, T0, T0 + 600),
        "start=2025-11-25T08:00:00Z end=2025-11-25T08:10:00Z",
    )
    a = write(
        tmp_path / "a.csv",
        steady("a", 1, T0 - 3600, T0 + 7200),
        "start=2025-11-25T07:00:00Z end=2025-11-25T10:00:00Z",
    )
    alone = as_json([b])["b"]
    together = as_json([a, b])["b"]
    assert together == alone
    assert alone["peak_demand_kw"] == 7.98  # the edge at 08:05:00 starts the next sub-interval
    (tmp_path / "alone.csv").unlink(missing_ok=True)
    replay([b], intervals_csv=str(tmp_path / "alone.csv"), out=io.StringIO())
    replay([a, b], intervals_csv=str(tmp_path / "both.csv"), out=io.StringIO())
    mine = [
        line for line in (tmp_path / "both.csv").read_text().splitlines() if line.startswith("b,")
    ]
    assert mine == (tmp_path / "alone.csv").read_text().splitlines()[1:]
    assert mine == ["b,2025-11-25T08:00:00Z,2025-11-25T08:15:00Z,2000,400,8.00,partial"]


def test_status_restores_the_configured_settings(tmp_path) -> None:
    # S = 60 s (W = I = 900 s) at 6 kW: demand 6.0 kW in replay and in status alike.
    config = tmp_path / "c.toml"
    config.write_text(
        '[[meters]]\nname = "m"\nmodel = "2O208-4W"\nsource = "replay"\n'
        f'file = "{tmp_path / "a.csv"}"\nsub_interval_s = 60\n'
    )
    log = write(tmp_path / "a.csv", steady("m", 6, T0 + 0.001, T0 + 1200))
    url = f"sqlite:///{tmp_path / 'g.db'}"
    replay([log], db_url=url, config_path=str(config), out=io.StringIO())
    shown = status_of(url)["m"]
    assert shown["demand_kw"] == 6.0  # old: 1.2 (a 60 s sub-interval read as 300 s)
    assert shown["peak_demand_kw"] == as_json([log], config_path=str(config))["m"]["peak_demand_kw"]
    # A second import without --config keeps the settings the state was made with.
    more = write(tmp_path / "b.csv", steady("m", 6, T0 + 1200, T0 + 1800))
    replay([more], db_url=url, out=io.StringIO())
    assert status_of(url)["m"]["demand_kw"] == 6.0


def test_a_meter_with_only_1k_wired_keeps_nothing_waiting() -> None:
    core = MeterCore("m", CoreSettings(register_channel=CHANNEL_1K))
    for k in range(1, 200):
        t = (T0 + 60 * k) * NS
        core.push(Edge(t, "m", CHANNEL_1K, k % 2))
        core.advance(t + NS)
    state = snapshot(core)["crosscheck"]
    assert state["pending1k"] == []  # old: all 199 edges waited, rewritten at every commit
    assert core.energy_wh == 199 * 500
    assert core.crosscheck.summary()["status"] == "not checked"
    assert not [e for e in core.take_events() if e.kind in ("coincidence", "silent", "mismatch")]


def test_a_silent_10_line_keeps_1k_edges_waiting_no_longer_than_their_tolerance() -> None:
    core = MeterCore("m")
    t = T0 * NS
    for k in range(1, 101):  # `10` works for 100 edges, with the `1K` edge on the 100th
        core.push(Edge(t + k * NS, "m", "10", k % 2))
    core.push(Edge(t + 100 * NS, "m", CHANNEL_1K, 1))
    for k in range(2, 50):  # then only `1K` moves
        core.push(Edge(t + 100 * k * NS, "m", CHANNEL_1K, k % 2))
        core.advance(t + (100 * k + 1) * NS)
    assert len(snapshot(core)["crosscheck"]["pending1k"]) == 0
    assert np.int64(core.crosscheck.kind_counts.get("silent", 0)) == 48  # each judged at once


def test_reconcile_uses_the_register_as_it_stood_then_and_refuses_the_future(tmp_path) -> None:
    import pytest

    from gateway.commands.database import reconcile
    from gateway.errors import ConfigError

    # 6 kW from 08:00 to 09:00: 6000 Wh; an edge every 3 s. Just before 08:30:00 (the edge
    # at 08:30:00 belongs to the later sub-interval, half-open) the register held 2995 Wh.
    log = write(tmp_path / "a.csv", steady("m", 6, T0, T0 + 3600))
    url = f"sqlite:///{tmp_path / 'g.db'}"
    replay([log], db_url=url, out=io.StringIO())
    out = io.StringIO()
    reconcile(url, "m", 103, "2025-11-25T08:30:00Z", out=out)
    assert "against 2995 Wh counted" in out.getvalue()  # old: 6000, today's register
    with pytest.raises(ConfigError, match="future"):
        reconcile(url, "m", 200, "2199-01-01T00:00:00Z", out=io.StringIO())
    assert status_of(url)["m"]["last_reconciliation"]["lcd_kwh"] == 103
