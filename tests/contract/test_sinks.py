"""One suite over every sink: the store, the MQTT publisher and the null publisher.

Each backend is a real one: the store on an SQLite file, the publisher on a Mosquitto of the
test's own. :class:`SinkContract` says what every sink does (a context manager that may be closed
twice; a commit kept whole; a pump that returns commands); :class:`PublisherContract` adds what
every publisher does with the published total: it never goes backwards, and that floor is the
publisher's alone (no caller applies it for it).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from mqtt_helpers import Broker, Subscriber, wait_for
from paho.mqtt.enums import CallbackAPIVersion

from gateway.checkpoint import MeterBatch
from gateway.config import MqttSettings
from gateway.core.events import Event, EventKind
from gateway.core.meter import Reading
from gateway.sinks.database import Database
from gateway.sinks.mqtt import MqttPublisher
from gateway.sinks.outbox import Outbox
from gateway.sinks.payloads import DatabaseIdentity, MeterInfo, signed_state, state_payload
from gateway.sinks.publisher import NullPublisher, Publisher
from gateway.sinks.readback import Readback
from gateway.sinks.sink import MeterState, Sink
from gateway.sinks.store import Store

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

T0 = 1_764_057_600 * 10**9
METER = MeterInfo("unit-101", "2O208-4W")
TOPIC = "amr/gwt/unit-101/state"
IDENTITY = DatabaseIdentity(uuid.uuid4().hex, uuid.uuid4().hex)


def batch(register_wh: int, events: int = 0) -> MeterBatch:
    return MeterBatch(
        name=METER.name,
        model=METER.model,
        source="replay",
        core_state={"version": 1},
        source_state=None,
        counters={},
        register_wh=register_wh,
        events=[Event(T0 + k, EventKind.MISMATCH, "1K", "lost", 500) for k in range(events)],
    )


def state(committed_wh: int, at_ns: int = T0) -> MeterState:
    """A meter whose register is 2 kWh above what the database holds of it."""
    reading = Reading(
        METER.name, at_ns, committed_wh + 2000, {"10": 0, "1K": 0}, 1.5, Fraction(0), None
    )
    return MeterState(METER.name, reading, committed_wh, at_ns, "complete")


class SinkContract:
    """What every sink does; a backend's class gives :meth:`sink`."""

    @pytest.fixture
    def sink(self, tmp_path: Path) -> Iterator[Sink]:
        raise NotImplementedError

    def test_is_a_context_manager_that_may_be_closed_twice(self, sink: Sink) -> None:
        assert isinstance(sink, Sink)
        with sink as entered:
            assert entered is sink
        sink.close()  # again: harmless

    def test_a_commit_is_taken_whole_and_a_pump_returns_commands(self, sink: Sink) -> None:
        sink.start()
        sink.commit([batch(1000, events=2)], T0)
        sink.commit([batch(1000)], T0 + 1, stamp=True)  # nothing new: still fine
        assert sink.pump() == []  # nobody sent a command
        assert sink.take_conflicts() == []
        sink.tell(METER.name, Event(T0, EventKind.STORAGE, None, "the database failed"))
        sink.close()

    def test_abstract_methods_are_what_a_backend_must_write(self) -> None:
        assert Sink.__abstractmethods__ == {"commit", "publish"}
        with pytest.raises(TypeError):
            Sink()  # type: ignore[abstract]


class TestStore(SinkContract):
    @pytest.fixture
    def sink(self, tmp_path: Path) -> Iterator[Sink]:
        store = Store(Database(f"sqlite:///{tmp_path / 'g.db'}"))
        yield store
        store.close()

    def test_a_commit_is_in_the_database_and_publishing_writes_nothing(self, tmp_path) -> None:
        url = f"sqlite:///{tmp_path / 'g.db'}"
        with Store(Database(url)) as store:
            store.commit([batch(1000)], T0)
            store.publish(state(5000))  # the store shows committed totals only
        database = Database(url)
        try:
            (meter,) = Readback(database).meters()
            assert (meter.register_wh, meter.published_wh) == (1000, 0)
        finally:
            database.close()


class PublisherContract(SinkContract):
    """What every publisher does with the published total."""

    def published(self, sink: Publisher) -> list[int]:
        """The totals that left the publisher, in order."""
        raise NotImplementedError

    def publish_and_wait(self, sink: Publisher, committed_wh: int, count: int) -> None:
        sink.publish(state(committed_wh))

    def test_the_published_total_never_goes_backwards(self, sink: Sink) -> None:
        assert isinstance(sink, Publisher)
        sink.resume(METER.name, 0, 0)
        sink.start()
        self.publish_and_wait(sink, 1000, 1)
        # The database rolled back (an older image after a power cut): the total is held.
        self.publish_and_wait(sink, 800, 2)
        self.publish_and_wait(sink, 1200, 3)
        assert self.published(sink) == self.expected([1000, 1000, 1200])
        assert sink.published_wh(METER.name) == self.expected_floor(1200)

    def test_a_stored_floor_above_the_register_is_not_taken(self, sink: Sink) -> None:
        assert isinstance(sink, Publisher)
        sink.resume(METER.name, 10**9, 500)  # only an older version stored such a total
        assert sink.published_wh(METER.name) == 500

    def expected(self, totals: list[int]) -> list[int]:
        return totals

    def expected_floor(self, total: int) -> int:
        return total


class TestNullPublisher(PublisherContract):
    @pytest.fixture
    def sink(self, tmp_path: Path) -> Iterator[Sink]:
        publisher = NullPublisher()
        yield publisher
        publisher.close()

    def published(self, sink: Publisher) -> list[int]:
        return []

    def expected(self, totals: list[int]) -> list[int]:
        return []  # MQTT off: nothing leaves

    def expected_floor(self, total: int) -> int:
        return 0  # nothing published: the stored floor stays as it was

    def test_is_not_enabled_nor_connected(self, sink: Sink) -> None:
        assert isinstance(sink, NullPublisher)
        assert not sink.enabled and not sink.connected


def pumping(publisher: Publisher, predicate: Any) -> Any:
    def step() -> Any:
        publisher.pump()
        return predicate()

    return step


class TestMqttPublisher(PublisherContract):
    @pytest.fixture
    def subscriber(self, broker: Broker) -> Iterator[Subscriber]:
        sub = Subscriber(broker, [TOPIC], client_id=uuid.uuid4().hex)
        yield sub
        sub.close()

    @pytest.fixture
    def sink(self, tmp_path: Path, broker: Broker, subscriber: Subscriber) -> Iterator[Sink]:
        database = Database(f"sqlite:///{tmp_path / 'g.db'}")
        publisher = MqttPublisher(
            MqttSettings(host="127.0.0.1", port=broker.port, keepalive_s=60),
            "gwt",
            [METER],
            Outbox(database),
            identity=IDENTITY,
        )
        self.subscriber = subscriber
        yield publisher
        publisher.close()
        database.close()

    def states(self) -> list[int]:
        return [m.json()["energy_wh"] for m in self.subscriber.on(TOPIC) if not m.retain]

    def published(self, sink: Publisher) -> list[int]:
        return self.states()

    def publish_and_wait(self, sink: Publisher, committed_wh: int, count: int) -> None:
        sink.publish(state(committed_wh))
        wait_for(pumping(sink, lambda: len(self.states()) >= count), 30, f"state {count}")

    def test_the_floor_is_this_databases_state_the_broker_retains(
        self, sink: Sink, broker: Broker
    ) -> None:
        """Publishing below the own total the broker retains (a database rolled back to an
        older image) holds that total, with the time it was reached."""
        assert isinstance(sink, MqttPublisher)
        retained = state_payload(state(5000, T0 - 3600 * 10**9).reading, 5000, "complete", T0)
        client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        text = json.dumps(signed_state(retained, METER.name, IDENTITY))
        client.publish(TOPIC, text, qos=1, retain=True).wait_for_publish(10)
        client.loop_stop()
        client.disconnect()
        wait_for(lambda: self.states() == [5000], 30, "the retained state, live")
        sink.start()
        wait_for(pumping(sink, lambda: sink.retained_wh(METER.name) == 5000), 30, "the floor")
        self.publish_and_wait(sink, 1000, 2)
        held = self.subscriber.on(TOPIC)[-1].json()
        assert held["energy_wh"] == 5000
        assert held["energy_time"] == retained["energy_time"]
        assert sink.published_wh(METER.name) == 0  # nothing received is this database's count
