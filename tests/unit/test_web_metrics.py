"""/metrics from a hand-made snapshot: base units, counters, labels gateway and meter only."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.web.metrics import SnapshotCollector, registry
from gateway.web.snapshot import GatewaySnapshot, MeterSnapshot, SnapshotHolder


def _meter(name: str, energy_wh: int, peak_kw: float | None) -> MeterSnapshot:
    return MeterSnapshot(
        name=name,
        model="2O208-4W",
        source="gpio",
        energy_wh=energy_wh,
        edges=(("10", energy_wh // 5), ("1K", energy_wh // 500)),
        power_kw=1.2,
        demand_kw=0.96,
        peak_demand_kw=peak_kw,
        peak_demand_end_ns=None,
        quality="complete",
        glitches=2,
        inferred_edges=1,
        mismatches=0,
    )


def _scrape(holder: SnapshotHolder, depth: int | None = 3) -> dict[tuple[str, tuple], float]:
    text = generate_latest(registry(SnapshotCollector(holder, "gw", lambda: depth))).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_before_the_first_snapshot_only_up_is_0() -> None:
    assert _scrape(SnapshotHolder()) == {("amr_gateway_up", (("gateway", "gw"),)): 0.0}


def test_energy_in_joules_and_watt_hours_power_in_watts() -> None:
    holder = SnapshotHolder()
    meters = (_meter("a", 12_345, 2.5), _meter("b", 0, None))
    holder.publish(GatewaySnapshot(1, "gw", 0, 4, 10**18, 0.012, True, True, None, True, meters))
    samples = _scrape(holder)
    a = (("gateway", "gw"), ("meter", "a"))
    assert samples[("amr_meter_energy_joules_total", a)] == 12_345 * 3600  # 44,442,000 J
    assert samples[("amr_meter_energy_watt_hours_total", a)] == 12_345
    assert samples[("amr_meter_power_watts", a)] == 1200
    assert samples[("amr_meter_demand_watts", a)] == 960
    assert samples[("amr_meter_peak_demand_watts", a)] == 2500
    assert samples[("amr_meter_edges_10_total", a)] == 2469
    assert samples[("amr_meter_edges_1k_total", a)] == 24
    assert samples[("amr_meter_glitches_total", a)] == 2
    b = (("gateway", "gw"), ("meter", "b"))
    assert ("amr_meter_peak_demand_watts", b) not in samples  # no peak yet: no sample
    gw = (("gateway", "gw"),)
    assert samples[("amr_gateway_up", gw)] == 1
    assert samples[("amr_gateway_outbox_messages", gw)] == 3
    assert samples[("amr_gateway_commit_latency_seconds", gw)] == 0.012
    assert samples[("amr_gateway_last_commit_timestamp_seconds", gw)] == 1e9
    assert all(set(dict(labels)) <= {"gateway", "meter"} for _, labels in samples)


def test_the_holder_hands_over_only_newer_snapshots() -> None:
    holder = SnapshotHolder()
    assert holder.wait_newer(0, 0) is None
    snapshot = GatewaySnapshot(1, "gw", 0, 0, None, None, False, False, None, False, ())
    holder.publish(snapshot)
    assert holder.wait_newer(0, 0) is snapshot
    assert holder.wait_newer(1, 0) is None
