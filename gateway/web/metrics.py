"""``/metrics``: the latest snapshot in the Prometheus text format, built at scrape time.

A custom collector on a registry of our own (none in prometheus_client's global one): nothing
is counted per edge, a scrape reads the snapshot the loop last published. Names follow the
Prometheus naming guide: base units (joules, watts, seconds), ``_total`` on counters, labels
``gateway`` and ``meter`` only. Energy is the committed register, as MQTT publishes it, so a
counter never goes backwards across restarts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from gateway.errors import GatewayError
from gateway.web.snapshot import SnapshotHolder

J_PER_WH = 3600
W_PER_KW = 1000


class SnapshotCollector(Collector):
    """Turn the current snapshot into metric families."""

    def __init__(
        self, holder: SnapshotHolder, gateway: str, outbox_depth: Callable[[], int | None]
    ) -> None:
        self.holder = holder
        self.gateway = gateway
        self.outbox_depth = outbox_depth

    def collect(self) -> Iterator[Metric]:
        snapshot = self.holder.current
        gw = self.gateway if snapshot is None else snapshot.gateway
        up = GaugeMetricFamily(
            "amr_gateway_up", "1 while the gateway's loop runs and has reported", labels=["gateway"]
        )
        up.add_metric([gw], 0 if snapshot is None else 1)
        yield up
        if snapshot is None:
            return
        labels = ["gateway", "meter"]

        def counter(name: str, doc: str) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, labels=labels)

        def gauge(name: str, doc: str, unit: str = "") -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=labels, unit=unit)

        energy_j = counter("amr_meter_energy_joules", "Register energy committed, in joules")
        energy_wh = counter(
            "amr_meter_energy_watt_hours", "Register energy committed, in watt-hours (exact)"
        )
        power = gauge("amr_meter_power_watts", "Power from the time between the last edges")
        demand = gauge("amr_meter_demand_watts", "Instantaneous demand (last sub-interval)")
        peak = gauge("amr_meter_peak_demand_watts", "Peak rolling demand since the last reset")
        edges_10 = counter("amr_meter_edges_10", "Edges counted on the 10 output (5 Wh each)")
        edges_1k = counter("amr_meter_edges_1k", "Edges counted on the 1K output (500 Wh each)")
        glitches = counter("amr_meter_glitches", "Glitches dropped (both edges of each)")
        inferred = counter("amr_meter_inferred_edges", "Edges inferred from a repeated level")
        mismatches = counter("amr_meter_mismatches", "10/1K cross-check mismatches")
        for meter in snapshot.meters:
            key = [snapshot.gateway, meter.name]
            energy_j.add_metric(key, meter.energy_wh * J_PER_WH)
            energy_wh.add_metric(key, meter.energy_wh)
            power.add_metric(key, meter.power_kw * W_PER_KW)
            demand.add_metric(key, meter.demand_kw * W_PER_KW)
            if meter.peak_demand_kw is not None:
                peak.add_metric(key, meter.peak_demand_kw * W_PER_KW)
            edges = dict(meter.edges)
            edges_10.add_metric(key, edges.get("10", 0))
            edges_1k.add_metric(key, edges.get("1K", 0))
            glitches.add_metric(key, meter.glitches)
            inferred.add_metric(key, meter.inferred_edges)
            mismatches.add_metric(key, meter.mismatches)
        yield from (energy_j, energy_wh, power, demand, peak, edges_10, edges_1k)
        yield from (glitches, inferred, mismatches)
        gw_labels = ["gateway"]
        connected = GaugeMetricFamily(
            "amr_gateway_mqtt_connected", "1 while connected to the MQTT broker", labels=gw_labels
        )
        connected.add_metric([gw], 1 if snapshot.mqtt_connected else 0)
        yield connected
        depth = self.outbox_depth()
        if depth is not None:
            outbox = GaugeMetricFamily(
                "amr_gateway_outbox_messages",
                "MQTT messages waiting in the outbox",
                labels=gw_labels,
            )
            outbox.add_metric([gw], depth)
            yield outbox
        if snapshot.commit_latency_s is not None and snapshot.last_commit_ns is not None:
            latency = GaugeMetricFamily(
                "amr_gateway_commit_latency_seconds",
                "How long the last commit took",
                labels=gw_labels,
            )
            latency.add_metric([gw], snapshot.commit_latency_s)
            yield latency
            last = GaugeMetricFamily(
                "amr_gateway_last_commit_timestamp_seconds",
                "When the last commit succeeded (Unix time)",
                labels=gw_labels,
            )
            last.add_metric([gw], snapshot.last_commit_ns / 1e9)
            yield last
        storage = GaugeMetricFamily(
            "amr_gateway_storage_ok", "1 while the database takes commits", labels=gw_labels
        )
        storage.add_metric([gw], 1 if snapshot.storage_error is None else 0)
        yield storage


class FleetCollector(Collector):
    """The collector's ``/metrics``: messages ingested, gateways online, gaps open, meters
    silent; from the overview the fleet page shows (computed once per snapshot), so a scrape
    costs no query of its own between snapshots."""

    def __init__(
        self, overview: Callable[[], dict[str, Any]], stored: Callable[[], int], collector: str
    ) -> None:
        self.overview = overview
        self.stored = stored
        self.collector = collector

    def collect(self) -> Iterator[Metric]:
        ingested = CounterMetricFamily(
            "amr_fleet_messages_ingested",
            "Messages (intervals, reads, events, statuses) this collector committed",
            labels=["collector"],
        )
        ingested.add_metric([self.collector], self.stored())
        yield ingested
        try:
            overview = self.overview()
        except GatewayError:  # the database is not open yet: only the count
            return
        gateways = overview["gateways"]
        online = GaugeMetricFamily(
            "amr_fleet_gateway_online",
            "1 while the gateway's last status is online (0: offline, its last will)",
            labels=["gateway"],
        )
        for name, g in gateways.items():
            online.add_metric([name], 1 if g["status"] == "online" else 0)
        yield online
        count = GaugeMetricFamily("amr_fleet_gateways_online", "Gateways online")
        count.add_metric([], sum(1 for g in gateways.values() if g["status"] == "online"))
        yield count
        meters = overview["meters"].values()
        gaps = GaugeMetricFamily("amr_fleet_gaps_open", "Ranges of messages missing, open")
        gaps.add_metric([], sum(len(m["open_gaps"]) for m in meters))
        yield gaps
        silent = GaugeMetricFamily(
            "amr_fleet_meters_silent", "Meters without a closed interval for two intervals"
        )
        silent.add_metric([], sum(1 for m in meters if m["silent_since"]))
        yield silent


def registry(collector: Collector) -> CollectorRegistry:
    """Return a registry of our own holding only the snapshot collector."""
    result = CollectorRegistry(auto_describe=False)
    result.register(collector)
    return result
