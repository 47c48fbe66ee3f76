"""The store on real databases: one transaction per batch, read back, bad files refused."""

from __future__ import annotations

import pytest
from db_helpers import sqlite_file

from gateway.checkpoint import MeterBatch
from gateway.core.events import Event, EventKind
from gateway.core.intervals import Interval
from gateway.errors import ConfigError, SinkError
from gateway.sinks.database import Database
from gateway.sinks.outbox import Outbox
from gateway.sinks.readback import Readback
from gateway.sinks.schema import EventRow, IntervalRow, OutboxRow
from gateway.sinks.store import Store
from meter_model.demand import SubInterval

T0 = 1_764_057_600 * 10**9
MIN15 = 900 * 10**9


def batch(energy_edges: int, intervals=(), events=(), subintervals=()) -> MeterBatch:
    return MeterBatch(
        name="unit-101",
        model="2O208-4W",
        source="replay",
        core_state={"version": 1, "edges": energy_edges},
        source_state={"now_ns": T0},
        counters={
            "10": {
                "edges": energy_edges,
                "wh_per_edge": 5,
                "level": energy_edges % 2,
                "last_edge_ns": T0,
                "glitches": 0,
                "inferred": 0,
                "duplicates": 0,
                "skipped": 0,
            },
        },
        register_wh=energy_edges * 5,
        intervals=list(intervals),
        subintervals=list(subintervals),
        events=list(events),
    )


def interval(k: int, edges: int) -> Interval:
    start = T0 + k * MIN15
    return Interval("unit-101", start, start + MIN15, edges * 5, edges, "complete")


def test_batch_round_trip_and_outbox_sequence(database_url: str) -> None:
    database = Database(database_url)
    store, readback, outbox = Store(database), Readback(database), Outbox(database)
    try:
        event = Event(T0, EventKind.MISMATCH, "1K", "lost", 500)
        sub = SubInterval(T0 // 1000, T0 // 1000 + 300_000_000, 25, True)
        store.commit([batch(10, [interval(0, 4), interval(1, 6)], [event], [sub])], T0)
        store.commit([batch(13, [interval(2, 3)])], T0 + 1)
        stored = readback.find_meter("unit-101")
        assert stored is not None
        assert stored.register_wh == 65 and stored.core_state == {"version": 1, "edges": 13}
        assert stored.counters["10"].edges == 13
        rows = readback.intervals("unit-101")
        assert [(r.start_ns, r.energy_wh) for _, r in rows] == [
            (T0, 20),
            (T0 + MIN15, 30),
            (T0 + 2 * MIN15, 15),
        ]
        waiting = outbox.head()
        assert [(m.kind, m.seq) for m in waiting] == [
            ("interval", 1),
            ("interval", 2),
            ("event", 1),
            ("interval", 3),
        ]
        outbox.done([m.id for m in waiting[:2]])
        assert [(m.kind, m.seq) for m in outbox.head()] == [
            ("event", 1),
            ("interval", 3),
        ]
        assert readback.count(EventRow, stored.id) == 1
    finally:
        database.close()


def test_a_failed_batch_writes_nothing(database_url: str) -> None:
    database = Database(database_url)
    store, readback = Store(database), Readback(database)
    try:
        store.commit([batch(10, [interval(0, 4)])], T0)
        # A good batch and a bad one (a counter without its Wh per edge, which the schema
        # refuses) in one commit: nothing of either may remain.
        good = batch(20, [interval(1, 6)])
        bad = batch(30, [interval(2, 7)])
        bad.name = "unit-102"
        bad.counters["10"]["wh_per_edge"] = None
        with pytest.raises(SinkError):
            store.commit([good, bad], T0 + 1)
        stored = readback.find_meter("unit-101")
        assert stored is not None and stored.register_wh == 50
        assert readback.count(IntervalRow) == 1
        assert readback.count(OutboxRow) == 1
    finally:
        database.close()


def test_corrupt_and_foreign_files_are_refused(tmp_path) -> None:
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(ConfigError, match="cannot open it"):
        Database(f"sqlite:///{corrupt}")
    foreign = tmp_path / "foreign.db"
    with sqlite_file(foreign) as connection:
        connection.execute("create table invoices (id integer primary key)")
    with pytest.raises(ConfigError, match="something else"):
        Database(f"sqlite:///{foreign}")


def test_cli_reports_bad_databases_without_a_traceback(cli, tmp_path) -> None:
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"\x00garbage" * 500)
    for args in (
        ["status", "--db", f"sqlite:///{corrupt}"],
        ["db", "upgrade", "--db", f"sqlite:///{corrupt}"],
    ):
        result = cli(*args)
        assert result.returncode == 2, result.stderr
        assert "corrupt.db" in result.stderr and "Traceback" not in result.stderr
    result = cli("status", "--db", f"sqlite:///{tmp_path / 'missing.db'}")
    assert result.returncode == 2 and "no such file" in result.stderr


def test_a_commit_writes_only_what_changed(database_url: str) -> None:
    database = Database(database_url)
    store, readback = Store(database), Readback(database)
    try:
        assert store.commit([batch(10, [interval(0, 4)])], T0) > 0
        # The same state again: not one statement (no rewritten state, counter or peak).
        assert store.commit([batch(10)], T0 + 1) == 0
        # One more edge: the state row and the one counter, nothing else.
        assert store.commit([batch(11)], T0 + 2) == 2
        stored = readback.find_meter("unit-101")
        assert stored is not None and stored.register_wh == 55 and stored.saved_ns == T0 + 2
        # Nothing changed, but the last commit before a stop stamps when it was made.
        assert store.commit([batch(11)], T0 + 3, stamp=True) == 1
        stored = readback.find_meter("unit-101")
        assert stored is not None and stored.saved_ns == T0 + 3
    finally:
        database.close()


def test_a_stamp_at_the_time_already_stamped_writes_nothing(database_url: str) -> None:
    """A stop right after a commit, on a clock that has not moved (a simulated one), stamps
    the time the row already holds: no statement, where an UPDATE with nothing to SET failed."""
    database = Database(database_url)
    store = Store(database)
    try:
        assert store.commit([batch(10)], T0) > 0
        assert store.commit([batch(10)], T0, stamp=True) == 0
    finally:
        database.close()


def test_a_retry_of_a_commit_that_reached_the_database_is_harmless(database_url: str) -> None:
    """A connection lost during COMMIT: the database has it, the gateway thinks it failed."""
    database = Database(database_url)
    store, readback = Store(database), Readback(database)
    try:
        first = batch(
            10,
            [interval(0, 4)],
            subintervals=[SubInterval(T0 // 1000, T0 // 1000 + 300_000_000, 20, True)],
        )
        store.commit([first], T0)
        other = Store(database)  # knows nothing of it, as after a lost COMMIT
        other.commit([first], T0 + 1)
        assert readback.count(IntervalRow) == 1
        stored = readback.find_meter("unit-101")
        assert stored is not None and stored.register_wh == 50
    finally:
        database.close()


def test_a_commit_reported_failed_that_reached_the_database_reuses_no_seq(
    database_url: str,
) -> None:
    """The same store carries on after a commit that is in the database but raised (issue 16).

    The COMMIT succeeds, then the sync after it fails (an I/O error from the card): the store
    must not trust what it remembers of the meter, or its next commit numbers the outbox from
    where the failed one started and reuses a ``seq`` that is already stored.
    """
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    database = Database(database_url)
    store, readback, outbox = Store(database), Readback(database), Outbox(database)
    fail = {"once": False}

    def sync_fails(_session: Session) -> None:
        if fail["once"]:
            fail["once"] = False
            raise OSError(5, "Input/output error")

    event.listen(Session, "after_commit", sync_fails)
    try:
        store.commit([batch(10, [interval(0, 4)])], T0)  # seq 1
        fail["once"] = True
        with pytest.raises(SinkError, match="Input/output error"):
            store.commit([batch(13, [interval(1, 3)])], T0 + 1)  # seq 2, committed all the same
        stored = readback.find_meter("unit-101")
        assert stored is not None and stored.register_wh == 65  # it did reach the database
        store.commit([batch(16, [interval(2, 3)])], T0 + 2)  # the same Store object carries on
        assert [(m.kind, m.seq) for m in outbox.head()] == [
            ("interval", 1),
            ("interval", 2),
            ("interval", 3),
        ]
        stored = readback.find_meter("unit-101")
        assert stored is not None and stored.register_wh == 80
        assert readback.count(IntervalRow) == 3
    finally:
        event.remove(Session, "after_commit", sync_fails)
        database.close()
