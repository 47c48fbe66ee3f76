"""A peak says since when it was measured: counting's start, or the last reset (issue 16)."""

from __future__ import annotations

from gateway.core.edge import Edge
from gateway.core.meter import MeterCore
from gateway.core.state import restore, snapshot
from gateway.sinks.payloads import state_payload

S = 1_000_000_000
T0 = 1_793_491_200 * S  # 2026-11-01T00:00:00Z


def counted() -> MeterCore:
    core = MeterCore("m")
    core.begin(T0)
    for k in range(1, 100):  # an edge every 30 s: 0.6 kW
        core.push(Edge(T0 + 30 * k * S, "m", "10", k % 2))
    core.advance(T0 + 3600 * S)
    return core


def test_since_counting_began_then_since_the_reset() -> None:
    core = counted()
    assert core.reading(T0 + 3600 * S).peak_since_ns == T0
    core.reset_peak(T0 + 3600 * S, "key switch")
    assert core.reading(T0 + 3600 * S).peak_since_ns == T0 + 3600 * S


def test_since_survives_a_restart_and_an_older_state_means_counting_began() -> None:
    core = counted()
    core.reset_peak(T0 + 1800 * S, "MQTT command reset_peak")
    state = snapshot(core)
    again = MeterCore("m")
    restore(again, state)
    assert again.reading(T0 + 3600 * S).peak_since_ns == T0 + 1800 * S
    del state["peak_since_ns"]  # states written before it was kept
    older = MeterCore("m")
    restore(older, state)
    assert older.reading(T0 + 3600 * S).peak_since_ns == T0


def test_the_state_message_adds_since_and_keeps_its_keys() -> None:
    core = counted()
    core.reset_peak(T0 + 1800 * S)
    payload = state_payload(core.reading(T0 + 3600 * S), 495, "complete", T0 + 3600 * S)
    assert payload["peak_demand_since"] == "2026-11-01T00:30:00Z"
    assert set(payload) == {
        "time",
        "energy_wh",
        "energy_time",
        "energy_kwh",
        "power_kw",
        "demand_kw",
        "peak_demand_kw",
        "peak_demand_end",
        "peak_demand_since",
        "lcd_kwh",
        "quality",
    }


def test_the_daemons_reading_line_says_since_when() -> None:
    from gateway.daemon.console import format_reading

    core = counted()
    core.reset_peak(T0 + 3600 * S)
    for k in range(121, 180):  # 0.6 kW again, from 01:00:30Z, the levels going on alternating
        core.push(Edge(T0 + 30 * k * S, "m", "10", (k + 1) % 2))  # (the last before was 1)
    core.advance(T0 + 5400 * S)
    line = format_reading(core.reading(T0 + 5400 * S))
    # [01:05, 01:20) is the first window wholly at 0.6 kW: 30 edges, 150 Wh in 15 minutes.
    assert "peak 0.60 kW (window ending 2026-11-01T01:20:00Z) since 2026-11-01T01:00:00Z" in line
