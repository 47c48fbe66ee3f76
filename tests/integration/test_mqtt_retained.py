"""What the broker retains on a gateway's own state topic can never set, freeze or kill it.

Anyone who may publish on the broker can leave a retained state there. The published total's
floor comes only from a state this database itself signed; anything else is a conflict (logged
once, an event) or malformed (logged once), and nothing received is ever stored.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from db_helpers import sqlite_file
from mqtt_helpers import Broker, Gateway, Subscriber, gateway_config, wait_for
from paho.mqtt.enums import CallbackAPIVersion

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TOPIC = "amr/gwt/unit-101/state"


def retain(broker: Broker, topic: str, payload: str | None) -> None:
    """Leave ``payload`` retained on ``topic`` (None: clear what is retained)."""
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    client.publish(topic, payload or b"", qos=1, retain=True).wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


def own_states(sub: Subscriber) -> list[dict]:
    """The states the gateway published (what the broker held before it is not one of them)."""
    return [m.json() for m in sub.on(TOPIC) if not m.retain]


def stored(db: Path) -> tuple[int, int]:
    with sqlite_file(db) as conn:
        register, published = conn.execute(
            "select register_wh, published_wh from meter_state"
        ).fetchone()
    return int(register), int(published)


def run_until_states(config: Path, broker: Broker, count: int) -> tuple[list[dict], str]:
    sub = Subscriber(broker, [TOPIC, "amr/gwt/unit-101/event"], client_id=uuid.uuid4().hex)
    gw = Gateway(config).start()
    try:
        wait_for(lambda: len(own_states(sub)) >= count, 60, f"{count} states")
    finally:
        status = gw.stop()
    sub.close()
    err = gw.stderr.decode()
    assert status == 0, err
    assert "Traceback" not in err, err
    events = [m.json() for m in sub.on("amr/gwt/unit-101/event")]
    return [*own_states(sub), {"_events": events}], err


def test_a_retained_total_from_elsewhere_is_a_conflict_never_a_floor(tmp_path, broker) -> None:
    """The attack of the issue: 999,999,999,999 Wh retained is never published nor stored."""
    forged = {"time": "2026-11-30T00:00:00Z", "energy_wh": 999_999_999_999}
    retain(broker, TOPIC, json.dumps(forged))
    config = gateway_config(tmp_path, broker)
    result, err = run_until_states(config, broker, 3)
    states, events = result[:-1], result[-1]["_events"]
    register, published = stored(tmp_path / "gateway.db")
    energies = [s["energy_wh"] for s in states]
    assert 0 < max(energies) <= register < 10**9, energies
    assert published <= register  # nothing received is stored
    assert err.count("publishes as this gateway") == 1, err  # said once
    assert [e for e in events if e["kind"] == "conflict"], events
    # Cleared and restarted: the true total, still never the forged one.
    retain(broker, TOPIC, None)
    result, err = run_until_states(config, broker, 2)
    assert max(s["energy_wh"] for s in result[:-1]) < 10**9


@pytest.mark.parametrize(
    "payload",
    [
        '{"energy_wh": 1e400}',
        '{"energy_wh": -1e400, "database_id": "x"}',
        '{"energy_wh": true}',
        '{"energy_wh": "12"}',
        "[1, 2]",
        "\xff\xfe not json",
        '{"energy_wh": 12, "database_id": 5, "signature": null}',
    ],
)
def test_a_malformed_retained_state_is_ignored_and_publishing_goes_on(
    tmp_path, broker, payload
) -> None:
    retain(broker, TOPIC, payload)
    sub = Subscriber(broker, ["amr/gwt/unit-101/interval", TOPIC])
    config = gateway_config(tmp_path, broker)
    gw = Gateway(config).start()
    try:
        wait_for(lambda: len(sub.on("amr/gwt/unit-101/interval")) >= 3, 60, "three intervals")
        wait_for(lambda: len(own_states(sub)) >= 2, 30, "two states")
    finally:
        status = gw.stop()
    sub.close()
    err = gw.stderr.decode()
    assert status == 0, err
    assert "Traceback" not in err and "Exception" not in err, err
    assert err.count("ignored a malformed retained state") == 1, err
    register, _ = stored(tmp_path / "gateway.db")
    assert 0 < max(s["energy_wh"] for s in own_states(sub)) <= register


def test_a_database_rolled_back_keeps_its_own_retained_total(tmp_path, broker) -> None:
    """The floor's reason to be: an older image of THIS database never publishes less."""
    first = tmp_path / "first"
    first.mkdir()
    config = gateway_config(first, broker)
    run_until_states(config, broker, 2)
    image = tmp_path / "image"
    image.mkdir()
    shutil.copy(first / "gateway.db", image / "gateway.db")  # a clean stop: no WAL left
    old_register, _ = stored(image / "gateway.db")
    # Later it counted on; then the card came back as the older image.
    result, _ = run_until_states(config, broker, 6)
    held = result[-2]["energy_wh"]
    assert held > old_register
    retained = Subscriber(broker, [TOPIC], client_id="retained")
    wait_for(lambda: retained.on(TOPIC), 10, "the retained state")
    retained.close()
    assert retained.on(TOPIC)[-1].json()["energy_wh"] == held
    rolled_back = gateway_config(image, broker)
    result, err = run_until_states(rolled_back, broker, 3)
    after = [s["energy_wh"] for s in result[:-1]]
    assert min(after) >= held, (after, held)
    # Held in what it publishes, never written into the rolled-back database.
    register, published = stored(image / "gateway.db")
    assert published <= register
    # A forged state carrying this database's id but not its signature is a conflict.
    forged = {**result[-2], "energy_wh": held + 10**9}
    retain(broker, TOPIC, json.dumps(forged))
    result, err = run_until_states(rolled_back, broker, 2)
    assert max(s["energy_wh"] for s in result[:-1]) < held + 10**9
    assert "not signed by it" in err, err


def test_an_exception_in_a_paho_callback_never_ends_publishing(broker, monkeypatch, caplog) -> None:
    """Whatever a callback trips over (here: every message), paho's loop and publishing go on."""
    from gateway.config import MqttSettings
    from gateway.sinks.mqtt import MqttPublisher
    from gateway.sinks.payloads import MeterInfo

    def boom(*_args: object) -> None:
        raise RuntimeError("a bug in a callback")

    monkeypatch.setattr(MqttPublisher, "_on_message", boom)
    retain(broker, TOPIC, '{"energy_wh": 1}')  # arrives as soon as it subscribes
    sub = Subscriber(broker, ["amr/gwt/unit-101/event"], client_id=uuid.uuid4().hex)
    publisher = MqttPublisher(
        MqttSettings(host="127.0.0.1", port=broker.port, keepalive_s=60),
        "gwt",
        [MeterInfo("unit-101", "2O208-4W")],
        None,
    )
    publisher.start()
    try:
        wait_for(lambda: publisher.pump() is not None and publisher.connected, 30, "a connection")
        for n in range(3):
            retain(broker, TOPIC, f'{{"energy_wh": {n}}}')  # live: the callback fails again
            publisher.publish_now("unit-101", "event", {"n": n})
            wait_for(lambda n=n: len(sub.on("amr/gwt/unit-101/event")) > n, 10, f"event {n}")
        # And paho's loop still runs: it notices the broker going and reconnects to it.
        broker.stop()
        wait_for(lambda: not publisher.connected, 30, "the publisher to notice")
        broker.start()

        def delivered_after_reconnect() -> bool:
            publisher.pump()
            publisher.publish_now("unit-101", "event", {"n": "after"})
            return any(m.json()["n"] == "after" for m in sub.on("amr/gwt/unit-101/event"))

        wait_for(delivered_after_reconnect, 30, "an event after the reconnect")
    finally:
        publisher.stop()
        sub.close()
    failures = [r for r in caplog.records if "MQTT on_message failed" in r.getMessage()]
    assert len(failures) == 1 and failures[0].levelname == "ERROR"  # said once


def test_a_total_an_older_version_stored_from_the_broker_is_not_published(tmp_path, broker) -> None:
    """A database the old bug poisoned (published_wh far above its register) heals at start."""
    config = gateway_config(tmp_path, broker)
    run_until_states(config, broker, 2)
    db = tmp_path / "gateway.db"
    with sqlite_file(db) as conn:
        conn.execute("update meter_state set published_wh = 999999999999")
    retain(broker, TOPIC, None)  # the message itself is long gone
    result, err = run_until_states(config, broker, 2)
    register, _ = stored(db)
    assert 0 < max(s["energy_wh"] for s in result[:-1]) <= register < 10**9
    assert err.count("came from the broker, not from this meter") == 1, err


def test_a_second_gateway_publishing_as_this_one_is_reported_once(tmp_path, broker) -> None:
    """Live states of other databases on our topic, each with another id: one line, one event."""
    sub = Subscriber(broker, [TOPIC, "amr/gwt/unit-101/event"], client_id=uuid.uuid4().hex)
    gw = Gateway(gateway_config(tmp_path, broker)).start()
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    try:
        wait_for(lambda: len(own_states(sub)) >= 2, 60, "two states")
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        for n in range(5):
            other = {"energy_wh": 5 + n, "database_id": f"{n:032x}", "signature": "0" * 32}
            client.publish(TOPIC, json.dumps(other), qos=1).wait_for_publish(10)
        wait_for(
            lambda: [m for m in sub.on("amr/gwt/unit-101/event") if m.json()["kind"] == "conflict"],
            30,
            "the conflict event",
        )
        seen = len(own_states(sub))
        wait_for(lambda: len(own_states(sub)) >= seen + 2, 30, "two more states")
    finally:
        client.loop_stop()
        client.disconnect()
        status = gw.stop()
    sub.close()
    err = gw.stderr.decode()
    assert status == 0, err
    assert err.count("publishes as this gateway") == 1, err
    conflicts = [
        m.json() for m in sub.on("amr/gwt/unit-101/event") if m.json()["kind"] == "conflict"
    ]
    assert len(conflicts) == 1 and "a state of another database" in conflicts[0]["detail"]
