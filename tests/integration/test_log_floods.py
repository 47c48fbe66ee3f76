"""A failure that repeats every pass of a loop is logged once, and once more when it clears.

The database really fails, in SQLite itself: a trigger refuses the outbox's deletes (as a
card that turned read-only refuses every write) while reads go on, and a renamed table makes
the outbox unreadable. Dropping the trigger, renaming the table back, is the repair.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from mqtt_helpers import Subscriber, wait_for
from test_mqtt_outbox import METER, batch

from gateway.config import MqttSettings
from gateway.sinks.database import Database
from gateway.sinks.mqtt import MqttPublisher
from gateway.sinks.outbox import Outbox
from gateway.sinks.store import Store

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

T0 = 1_764_057_600 * 10**9


def sql(database: Database, statement: str) -> None:
    """Change the database through the test's own engine: it holds the file alone."""
    with database.engine.begin() as connection:
        connection.exec_driver_sql(statement)


def lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if text in r.getMessage() and r.levelno >= logging.INFO
    ]


def test_outbox_failures_are_said_once_and_once_when_they_clear(
    tmp_path: Path, broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway")
    db = tmp_path / "gateway.db"
    database = Database(f"sqlite:///{db}")
    store = Store(database)
    store.commit([batch(intervals=3)], T0)
    outbox = Outbox(database)
    sub = Subscriber(broker, ["amr/gwt/+/interval"])
    publisher = MqttPublisher(
        MqttSettings(host="127.0.0.1", port=broker.port, keepalive_s=60),
        "gwt",
        [METER],
        outbox,
    )
    sql(
        database,
        "create trigger failing before delete on mqtt_outbox begin select raise(abort, 'I/O error'); end",
    )
    publisher.start()
    try:
        # The three go out and are acknowledged; removing them fails at every pass.
        wait_for(lambda: publisher.pump() is not None and len(sub.messages) == 3, 30, "three")
        wait_for(lambda: publisher.pump() is not None and publisher.pending() == 0, 30, "acks")
        for _ in range(60):  # 6 s of a main loop at 0.1 s a pass
            publisher.pump()
        assert outbox.count() == 3
        assert len(lines(caplog, "could not remove acknowledged messages")) == 1
        sql(database, "drop trigger failing")
        wait_for(lambda: publisher.pump() is not None and outbox.count() == 0, 30, "removal")
        assert len(lines(caplog, "removing acknowledged messages works again")) == 1
        assert len(lines(caplog, "could not remove acknowledged messages")) == 1
        assert len(sub.messages) == 3  # nothing sent twice meanwhile

        # Reading the outbox fails at every pass that has something to send.
        sql(database, "alter table mqtt_outbox rename to mqtt_outbox_away")
        publisher.outbox_changed()
        for _ in range(60):
            publisher.pump()
        assert len(lines(caplog, "could not read the outbox")) == 1
        sql(database, "alter table mqtt_outbox_away rename to mqtt_outbox")
        store.commit([batch(intervals=1)], T0 + 1)  # a fourth message waits
        publisher.outbox_changed()
        wait_for(lambda: publisher.pump() is not None and len(sub.messages) == 4, 30, "fourth")
        assert len(lines(caplog, "reading the outbox works again")) == 1
        assert len(lines(caplog, "could not read the outbox")) == 1
    finally:
        publisher.stop()
        sub.close()
        database.close()


def test_capture_files_that_cannot_be_pruned_are_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Pruning runs at every new capture file of every meter; a stuck file is said once."""
    import os
    import time

    from gateway.pulselog.capture import Capture

    caplog.set_level(logging.DEBUG, logger="gateway")
    month_ago = time.time() - 30 * 86_400
    stuck = [tmp_path / f"capture-20200101T000000Z-m{n}.csv.gz" for n in range(3)]
    for path in stuck:
        path.mkdir()  # unlink fails (EISDIR), as a file on a card gone read-only would
        os.utime(path, (month_ago, month_ago))
    capture = Capture(str(tmp_path), keep_days=7, gateway_id="gw")
    for _ in range(5):
        capture.prune()
    warned = lines(caplog, "could not prune")
    assert len(warned) == 1 and warned[0].startswith("could not prune 3 old capture file(s)")
    assert "Is a directory" in warned[0]
    assert not [r for r in caplog.records if r.exc_info]  # one line, no traceback
    for path in stuck:
        path.rmdir()
    capture.prune()
    capture.prune()
    assert len(lines(caplog, "pruning old capture files works again")) == 1
