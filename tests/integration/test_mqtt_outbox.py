"""The MQTT publisher driven directly against a real Mosquitto: when an outbox row may go, and
what a fresh connection announces.

The test calls :meth:`MqttPublisher.pump` itself, as the service's main loop does, so it knows
exactly which pass handed a message to paho and which one saw the broker's answer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from db_helpers import read_db
from mqtt_helpers import Broker, Subscriber, wait_for
from paho.mqtt.enums import CallbackAPIVersion

from gateway.checkpoint import MeterBatch
from gateway.config import MqttSettings
from gateway.core.events import Event, EventKind
from gateway.core.intervals import Interval
from gateway.sinks.database import Database
from gateway.sinks.mqtt import MqttPublisher
from gateway.sinks.outbox import Outbox
from gateway.sinks.payloads import MeterInfo
from gateway.sinks.store import Store

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

T0 = 1_764_057_600 * 10**9
MIN15 = 900 * 10**9
METER = MeterInfo("unit-101", "2O208-4W")


def batch(intervals: int, events: int = 0) -> MeterBatch:
    """A commit with ``intervals`` closed intervals and ``events`` events for the outbox."""
    return MeterBatch(
        name=METER.name,
        model=METER.model,
        source="replay",
        core_state={"version": 1},
        source_state=None,
        counters={
            "10": {
                "edges": 4 * intervals,
                "wh_per_edge": 5,
                "level": 0,
                "last_edge_ns": T0,
                "glitches": 0,
                "inferred": 0,
                "duplicates": 0,
                "skipped": 0,
            },
        },
        register_wh=20 * intervals,
        intervals=[
            Interval(METER.name, T0 + k * MIN15, T0 + (k + 1) * MIN15, 20, 4, "complete")
            for k in range(intervals)
        ],
        events=[Event(T0 + k, EventKind.MISMATCH, "1K", "lost", 500) for k in range(events)],
    )


def outbox(db: Path) -> list[tuple[str, int]]:
    """The outbox as the database file holds it, read past the store."""
    with read_db(db) as conn:
        return conn.execute("select kind, seq from mqtt_outbox order by id").fetchall()


def pumping(publisher: MqttPublisher, predicate: Callable[[], Any]) -> Callable[[], Any]:
    """A wait_for predicate that runs a main-loop pass first."""

    def step() -> Any:
        publisher.pump()
        return predicate()

    return step


def start_publisher(broker: Broker, outbox: Outbox | None, **settings: Any) -> MqttPublisher:
    publisher = MqttPublisher(
        MqttSettings(host="127.0.0.1", port=broker.port, keepalive_s=60, **settings),
        "gwt",
        [METER],
        outbox,
    )
    publisher.start()
    return publisher


def test_an_outbox_row_is_deleted_on_puback_not_on_publish(tmp_path, broker) -> None:
    db = tmp_path / "gateway.db"
    database = Database(f"sqlite:///{db}")
    store = Store(database)
    sub = Subscriber(broker, ["amr/gwt/+/interval", "amr/gwt/+/event"])
    publisher = start_publisher(broker, Outbox(database))
    try:
        wait_for(pumping(publisher, lambda: publisher.connected), 30, "the publisher to connect")
        publisher.pump()  # the announcements of the fresh connection
        broker.pause()  # it still takes bytes into its socket, but answers nothing
        store.commit([batch(intervals=3, events=1)], T0)
        publisher.outbox_changed()
        waiting = [("interval", 1), ("interval", 2), ("interval", 3), ("event", 1)]
        assert outbox(db) == waiting
        wait_for(pumping(publisher, lambda: publisher.pending() == 4), 30, "paho to hold all four")
        for _ in range(5):  # more passes change nothing while no PUBACK can have come
            publisher.pump()
        assert publisher.pending() == 4
        assert outbox(db) == waiting, "a row went before the broker acknowledged it"

        broker.resume()
        wait_for(pumping(publisher, lambda: not outbox(db)), 30, "the outbox to empty")
        assert publisher.pending() == 0
        wait_for(lambda: len(sub.messages) == 4, 30, "the four messages")
        assert [(m.topic.rsplit("/", 1)[1], m.json()["seq"]) for m in sub.messages] == waiting
    finally:
        publisher.stop()
        sub.close()
        database.close()


def nth(items: list[bool], value: bool, n: int) -> int:
    """The index of the n-th ``value`` in ``items``; past the end if there are fewer."""
    found = [i for i, item in enumerate(items) if item is value]
    return found[n - 1] if len(found) >= n else len(items)


def test_an_mqtt5_refusal_keeps_the_row(tmp_path, caplog) -> None:
    directory = tmp_path / "broker"
    directory.mkdir()
    # Anonymous clients may read everything and write all but intervals. Mosquitto answers a
    # denied MQTT 5 QoS 1 publish with PUBACK reason 0x87 (not authorized); under 3.1.1 it
    # would acknowledge it as if delivered.
    acl = directory / "acl"
    acl.write_text(
        "topic read #\n"
        "topic write amr/gwt/status\n"
        "topic write amr/gwt/+/state\n"
        "topic write amr/gwt/+/event\n"
        "topic write homeassistant/#\n"
    )
    broker = Broker(directory, acl_file=acl)
    broker.start()
    db = tmp_path / "gateway.db"
    database = Database(f"sqlite:///{db}")
    store = Store(database)
    store.commit([batch(intervals=2, events=1)], T0)
    sub = Subscriber(broker, ["amr/gwt/+/interval", "amr/gwt/+/event"])
    caplog.set_level(logging.WARNING, logger="gateway.sinks.mqtt")
    publisher = MqttPublisher(
        MqttSettings(host="127.0.0.1", port=broker.port, keepalive_s=60, protocol="5"),
        "gwt",
        [METER],
        Outbox(database),
    )
    # What the broker answered, seen in paho's thread right after the publisher saw it. The
    # status and discovery go first, then intervals 1 and 2, then the event; the broker answers
    # in order, so an acknowledgement after the second refusal is the event's.
    answers: list[bool] = []  # is_failure, one per PUBACK
    on_publish = publisher.client.on_publish

    def watch(client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        on_publish(client, userdata, mid, reason, properties)
        answers.append(reason.is_failure)

    publisher.client.on_publish = watch
    publisher.start()
    try:
        wait_for(
            pumping(publisher, lambda: False in answers[nth(answers, True, 2) + 1 :]),
            30,
            "the broker to refuse both intervals and take the event",
        )
        publisher.pump()  # the pass that acts on those answers
        assert outbox(db) == [("interval", 1), ("interval", 2)]
        wait_for(lambda: sub.on("amr/gwt/unit-101/event"), 30, "the event")
        assert not sub.on("amr/gwt/unit-101/interval")
        # And the operator is told why, in the broker's words.
        assert any("Not authorized" in r.getMessage() for r in caplog.records)
    finally:
        publisher.stop()
        sub.close()
        database.close()
        broker.stop()


STATE = {"time": "2025-11-25T08:00:00Z", "energy_wh": 1234}


def announced(sub: Subscriber, *, retained: bool = False) -> bool:
    """Whether ``sub`` got status online, the five discovery configs and the state."""
    wanted = [m for m in sub.messages if m.retain or not retained]
    status = [m.payload for m in wanted if m.topic == "amr/gwt/status"]
    configs = {m.topic for m in wanted if m.topic.startswith("homeassistant/sensor/")}
    # The state as given, plus who published it (issue #17).
    states = [
        {k: v for k, v in m.json().items() if k not in ("database_id", "signature")}
        for m in wanted
        if m.topic == "amr/gwt/unit-101/state"
    ]
    return status[-1:] == ["online"] and len(configs) == 5 and states[-1:] == [STATE]


def test_status_discovery_and_state_are_announced_again_after_a_reconnect(tmp_path) -> None:
    directory = tmp_path / "broker"
    directory.mkdir()
    broker = Broker(directory, persistence=False)  # a restart forgets everything retained
    broker.start()
    publisher = start_publisher(broker, None)
    try:
        wait_for(pumping(publisher, lambda: publisher.connected), 30, "the publisher to connect")
        publisher.publish_state(METER.name, STATE)
        first = Subscriber(broker, ["amr/gwt/#", "homeassistant/#"], client_id="first")
        wait_for(pumping(publisher, lambda: announced(first)), 30, "the first announcement")
        first.close()

        broker.stop()
        wait_for(pumping(publisher, lambda: not publisher.connected), 30, "the disconnect")
        broker.start()
        after = Subscriber(broker, ["amr/gwt/#", "homeassistant/#"], client_id="after")
        # Nothing calls publish_state meanwhile: the state must come from the announcement.
        wait_for(pumping(publisher, lambda: announced(after)), 60, "the announcement again")
        after.close()
        # And the broker keeps them for whoever comes later.
        late = Subscriber(broker, ["amr/gwt/#", "homeassistant/#"], client_id="late")
        wait_for(lambda: announced(late, retained=True), 30, "retained status, discovery, state")
        late.close()
    finally:
        publisher.stop()
        broker.stop()


def test_resend_answers_go_out_in_the_outboxs_flight_window(tmp_path, broker, monkeypatch) -> None:
    """A re-send request's answers wait their turn: paho is never handed more than the flight
    window (it numbers messages modulo 65,535 without checking a number is free, so a flood
    could overwrite queued messages or confuse an acknowledgement), and all of them arrive."""
    from gateway.sinks.mqtt import MAX_IN_FLIGHT

    n = 3 * MAX_IN_FLIGHT
    database = Database(f"sqlite:///{tmp_path / 'gateway.db'}")
    store = Store(database)
    store.commit([batch(intervals=n)], T0)
    sub = Subscriber(broker, ["amr/gwt/+/interval"])
    publisher = start_publisher(broker, Outbox(database), commands=["resend"])
    handed: list[int] = []
    publish = publisher.client.publish

    def counting(topic: str, *args: Any, **kwargs: Any) -> Any:
        if topic.endswith("/interval"):
            handed.append(len(sub.messages))
        return publish(topic, *args, **kwargs)

    monkeypatch.setattr(publisher.client, "publish", counting)
    try:
        wait_for(pumping(publisher, lambda: len(sub.messages) == n), 60, "the outbox sent")
        handed.clear()
        request = json.dumps({"kind": "interval", "from_seq": 1, "to_seq": n})
        cmd = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        cmd.connect("127.0.0.1", broker.port)
        cmd.loop_start()
        cmd.publish("amr/gwt/unit-101/cmd/resend", request, qos=1).wait_for_publish(10)
        cmd.loop_stop()
        cmd.disconnect()
        # The pass that takes the request hands paho no more than the window.
        wait_for(pumping(publisher, lambda: len(handed) > 0), 30, "the request answered")
        assert len(handed) <= MAX_IN_FLIGHT, len(handed)
        wait_for(pumping(publisher, lambda: len(sub.messages) == 2 * n), 60, "every answer")
        resent = [m.json()["seq"] for m in sub.messages[n:]]
        assert resent == list(range(1, n + 1))
    finally:
        publisher.stop()
        sub.close()
        database.close()
