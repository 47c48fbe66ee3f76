"""The fleet collector, exactly once through faults (issue: a fleet).

Two gateways (real ``amr-gateway run`` daemons replaying pulse logs) publish through their
outboxes into a Mosquitto with persistence; two collectors in one share group store into a
PostgreSQL cluster of the test's own. During ingest the collectors are SIGKILLed 20 times, the
broker is restarted once and PostgreSQL once. Afterwards every gateway's intervals and reads are
in the fleet database exactly once, equal to each gateway's own database.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from fleet_helpers import (
    PG_BIN,
    CollectorProcess,
    PrivateCluster,
    collector_config,
    fleet_count,
    fleet_rows,
    gateway_rows,
    make_log,
    replay_gateway_config,
)
from mqtt_helpers import Gateway, wait_for

from gateway.timefmt import parse_time_ns

START, END = "2026-10-25T00:00:00Z", "2026-11-20T00:00:00Z"  # a billing read on Nov 1 (UTC)
FLEET = {"gwa": {"a-1": "0.3", "a-2": "0.5"}, "gwb": {"b-1": "0.4", "b-2": "0.2"}}
SPEED = 40_000  # 26 days in about 56 s
KILLS = 20


def _expected(dirs: dict[str, Path]) -> tuple[set, set, int]:
    intervals, reads, waiting = set(), set(), 0
    for gw, directory in dirs.items():
        i, r, w = gateway_rows(directory / "gateway.db")
        intervals |= {(gw, *row) for row in i}
        reads |= {(gw, *row) for row in r}
        waiting += w
    return intervals, reads, waiting


@pytest.mark.slow
def test_collectors_killed_20_times_broker_and_postgres_restarted_exactly_once(
    cli, broker, tmp_path
) -> None:
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL server binaries are not installed ({PG_BIN})")
    cluster = PrivateCluster()
    cluster.start()
    gateways: list[Gateway] = []
    collectors: list[CollectorProcess] = []
    dirs: dict[str, Path] = {}
    try:
        for gw, meters in FLEET.items():
            directory = tmp_path / gw
            directory.mkdir()
            logs = {m: make_log(cli, directory, m, kw, START, END) for m, kw in meters.items()}
            dirs[gw] = directory
            config = replay_gateway_config(directory, broker, gw, logs, SPEED)
            gateways.append(Gateway(config))
        # The collectors first, so that their sessions exist before the first message.
        for name in ("c1", "c2"):
            collectors.append(
                CollectorProcess(collector_config(tmp_path, broker, cluster.url, name)).start()
            )
        wait_for(lambda: fleet_count(cluster.url) == 0, 60, "the fleet schema")
        for gateway in gateways:
            gateway.start()

        victims = itertools.cycle(collectors)
        for kill in range(1, KILLS + 1):
            victim = next(victims)
            before = fleet_count(cluster.url)
            wait_for(
                lambda b=before: fleet_count(cluster.url) > b, 90, f"progress before kill {kill}"
            )
            victim.kill()
            if kill == 7:
                broker.stop()  # SIGTERM: Mosquitto saves its persistence file
                broker.start()
            if kill == 14:
                cluster.restart()
            victim.start()
        kills_done_at = fleet_count(cluster.url)

        end_ns = parse_time_ns(END)

        why: list[str] = []

        def settled() -> bool:
            intervals, reads, waiting = _expected(dirs)
            finished = {(gw, row[0]) for gw, *row in intervals if row[2] == end_ns}
            if waiting or len(finished) < sum(len(m) for m in FLEET.values()):
                why[:] = [f"gateways: {waiting} waiting in outboxes, finished {sorted(finished)}"]
                return False
            got_i, got_r = fleet_rows(cluster.url)
            why[:] = [
                f"missing {sorted(intervals - set(got_i))[:5]} ({len(intervals - set(got_i))})",
                f"extra {sorted(set(got_i) - intervals)[:5]} ({len(set(got_i) - intervals)})",
                f"reads missing {sorted(reads - set(got_r))}, extra {sorted(set(got_r) - reads)}",
            ]
            return set(got_i) == intervals and set(got_r) == reads

        try:
            wait_for(settled, 240, "every gateway's intervals and reads in the fleet database")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {why}") from None
    finally:
        for gateway in gateways:
            if gateway.proc is not None:
                gateway.stop()
        codes = [c.stop() for c in collectors]
        logs = {c.config.name: c.log.read_text(errors="replace") for c in collectors}
        final = fleet_rows(cluster.url) if dirs else ([], [])
        cluster.stop()
    intervals, reads, waiting = _expected(dirs)
    got_intervals, got_reads = final
    assert waiting == 0
    assert kills_done_at < len(intervals), "the kills happened during ingest"
    # Exactly once: as many rows as distinct ones, and the same rows as the gateways hold.
    assert len(got_intervals) == len(set(got_intervals)) == len(intervals)
    assert set(got_intervals) == intervals
    assert len(got_reads) == len(set(got_reads)) == len(reads) == 4  # one read per meter
    assert set(got_reads) == reads
    assert codes == [0, 0], logs
    assert [c.starts for c in collectors] == [11, 11]
    for name, text in logs.items():
        assert "Traceback" not in text, f"{name}:\n{text[-3000:]}"
