"""Batches into the fleet database (real SQLite and PostgreSQL): keys, versions, gaps."""

from __future__ import annotations

import io
import json
import time

import pytest
from sqlalchemy import text

from gateway.errors import ConfigError
from gateway.fleet.commands import fleet_export
from gateway.fleet.database import FleetDatabase
from gateway.fleet.ingest import (
    GAP_GRACE_S,
    Incoming,
    Ingest,
    claim_resends,
    parse_message,
    report_gaps,
)
from gateway.timefmt import NS_PER_S

T0 = 1_793_491_200  # 2026-11-01T00:00:00Z


def interval(seq: int, k: int, energy_wh: int, meter: str = "m1", gw: str = "gw1") -> Incoming:
    """The k-th 15-minute interval of Nov 1."""
    start, end = T0 + 900 * k, T0 + 900 * (k + 1)
    payload = {
        "meter": meter,
        "start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
        "end": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(end)),
        "energy_wh": energy_wh,
        "edges": energy_wh // 5,
        "demand_kw": energy_wh * 4 / 1000,
        "quality": "complete",
        "seq": seq,
    }
    return parse_message(gw, meter, "interval", json.dumps(payload).encode())


def rows(database: FleetDatabase, sql: str) -> list[tuple]:
    with database.engine.connect() as connection:
        return [tuple(r) for r in connection.execute(text(sql))]


def test_redelivery_changes_nothing_and_order_does_not_matter(database_url: str) -> None:
    database = FleetDatabase(database_url)
    try:
        ingest, now = Ingest(), 10**18
        ingest.ingest(database.engine, [interval(3, 2, 30), interval(1, 0, 10)], now)
        ingest.ingest(database.engine, [interval(1, 0, 10), interval(3, 2, 30)], now + 1)
        ingest.ingest(database.engine, [interval(2, 1, 20)], now + 2)  # late, lands in place
        got = rows(
            database, "SELECT start_ns, energy_wh, seq FROM fleet_intervals ORDER BY start_ns"
        )
        assert got == [
            ((T0 + 0) * NS_PER_S, 10, 1),
            ((T0 + 900) * NS_PER_S, 20, 2),
            ((T0 + 1800) * NS_PER_S, 30, 3),
        ]
        # A later version of an interval (the gateway re-closed it) replaces the earlier one;
        # the earlier one redelivered afterwards does not come back.
        ingest.ingest(database.engine, [interval(4, 2, 35)], now + 3)
        ingest.ingest(database.engine, [interval(3, 2, 30)], now + 4)
        assert rows(database, "SELECT energy_wh, seq FROM fleet_intervals WHERE seq >= 3") == [
            (35, 4)
        ]
        assert rows(database, "SELECT count(*) FROM fleet_gaps") == [(1,)]  # 2 was late
        assert rows(database, "SELECT closed_ns FROM fleet_gaps") == [(now + 2,)]
        assert rows(database, "SELECT high_seq FROM fleet_seqs") == [(4,)]
    finally:
        database.close()


def test_a_gap_is_opened_split_reported_asked_for_and_closed(database_url: str) -> None:
    database = FleetDatabase(database_url)
    try:
        ingest, now = Ingest(), 10**18
        ingest.ingest(database.engine, [interval(1, 0, 10), interval(6, 5, 60)], now)
        gaps = "SELECT first_seq, last_seq, closed_ns FROM fleet_gaps ORDER BY first_seq"
        assert rows(database, gaps) == [(2, 5, None)]
        ingest.ingest(database.engine, [interval(4, 3, 40)], now + 1)
        assert rows(database, gaps) == [(2, 3, None), (5, 5, None)]
        # Too young to be reported or asked for: the other collector may be committing it.
        with database.engine.begin() as connection:
            assert report_gaps(connection, now + 2) == []
            assert claim_resends(connection, now + 2) == []
        later = now + (GAP_GRACE_S + 1) * NS_PER_S
        with database.engine.begin() as connection:
            assert len(report_gaps(connection, later)) == 2
            requests = claim_resends(connection, later)
            assert claim_resends(connection, later) == []  # claimed once
        assert [(r.gateway, r.meter, r.payload) for r in requests] == [
            (
                "gw1",
                "m1",
                {
                    "kind": "interval",
                    "from_seq": 2,
                    "to_seq": 3,
                    "after": "2026-11-01T00:00:00Z",
                    "before": "2026-11-01T00:45:00Z",
                },
            ),
            (
                "gw1",
                "m1",
                {
                    "kind": "interval",
                    "from_seq": 5,
                    "to_seq": 5,
                    "after": "2026-11-01T00:45:00Z",
                    "before": "2026-11-01T01:15:00Z",
                },
            ),
        ]
        ingest.ingest(database.engine, [interval(2, 1, 20), interval(3, 2, 30)], later + 1)
        ingest.ingest(database.engine, [interval(5, 4, 50)], later + 2)
        assert rows(database, gaps) == [(2, 3, later + 1), (5, 5, later + 2)]
        events = rows(database, "SELECT kind, origin FROM fleet_events ORDER BY id")
        assert events == [("gap", "collector")] * 2 + [("gap_closed", "collector")] * 2
        assert rows(database, "SELECT sum(energy_wh), count(*) FROM fleet_intervals") == [(210, 6)]
    finally:
        database.close()


def test_reads_and_events_once_by_seq(database_url: str) -> None:
    database = FleetDatabase(database_url)
    try:
        read = {
            "meter": "m1",
            "period": "2026-10",
            "start": "2026-10-01T00:00:00Z",
            "end": "2026-11-01T00:00:00Z",
            "energy_wh": 1234,
            "register_wh": 5678,
            "quality": "complete",
            "seq": 1,
        }
        event = {"meter": "m1", "time": "2026-11-01T00:00:01Z", "kind": "glitch", "seq": 1}
        items = [
            parse_message("gw1", "m1", "read", json.dumps(read).encode()),
            parse_message("gw1", "m1", "event", json.dumps(event).encode()),
            parse_message("gw2", "m1", "read", json.dumps(read).encode()),  # another building
        ]
        ingest = Ingest()
        ingest.ingest(database.engine, items, 1)
        ingest.ingest(database.engine, items, 2)
        both = (
            "SELECT count(*), count(DISTINCT m.gateway) FROM fleet_reads r "
            "JOIN fleet_meters m ON m.id = r.meter_id"
        )
        assert rows(database, both) == [(2, 2)]
        assert rows(database, "SELECT kind, seq FROM fleet_events") == [("glitch", 1)]
    finally:
        database.close()


def test_any_quality_text_is_stored_as_sent(database_url: str) -> None:
    # PostgreSQL receives a batch's columns as array literals: quotes, backslashes, commas,
    # braces and the word NULL inside a value must come back as they were sent.
    qualities = ['a"b', "c\\d", "e,f", "{g}", "NULL", "", "élan ∑", "x" * 20]
    database = FleetDatabase(database_url)
    try:
        items = []
        for k, quality in enumerate(qualities):
            payload = interval(k + 1, k, 10).payload | {"quality": quality}
            items.append(parse_message("gw1", "m1", "interval", json.dumps(payload).encode()))
        Ingest().ingest(database.engine, items, 1)
        got = rows(database, "SELECT quality FROM fleet_intervals ORDER BY start_ns")
        assert got == [(q[:16],) for q in qualities]
    finally:
        database.close()


def test_export_takes_a_date_as_the_gateways_export_does(database_url: str) -> None:
    """``--from``/``--to`` dates are whole UTC days (``--to`` included), as on a gateway."""
    database = FleetDatabase(database_url)
    try:
        # Oct 31 23:45, then Nov 1 and Nov 2 (96 intervals a day), from one gateway and meter.
        items = [interval(k + 2, k, 10) for k in range(-1, 2 * 96)]
        Ingest().ingest(database.engine, items, time.time_ns())

        def exported(start: str | None, end: str | None) -> list[str]:
            out = io.StringIO()
            fleet_export(database, None, None, start, end, "csv", out)
            return [line.split(",")[2] for line in out.getvalue().splitlines()[1:]]  # start

        nov1 = exported("2026-11-01", "2026-11-01")
        assert len(nov1) == 96 and nov1[0] == "2026-11-01T00:00:00Z"
        assert nov1 == exported("2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z")
        with pytest.raises(ConfigError, match="--from 2026-11-02 is not before --to"):
            exported("2026-11-02", "2026-11-01")
    finally:
        database.close()
