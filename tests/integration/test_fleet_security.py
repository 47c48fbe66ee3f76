"""The central broker's example ACL (docs/fleet-mosquitto.acl) with a real Mosquitto, and the
collector's database password (from a file, never in a log line)."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import paho.mqtt.client as paho
from fleet_helpers import CollectorProcess, collector_config
from mqtt_helpers import Broker, wait_for
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from sqlalchemy import create_engine, text

DOCS = Path(__file__).resolve().parents[2] / "docs"
PASSWORDS = {"gwa": "pw-a", "gwb": "pw-b", "amr-collector": "pw-collector"}


def _interval(meter: str, seq: int) -> str:
    return json.dumps(
        {
            "meter": meter,
            "start": f"2026-11-01T00:{15 * (seq - 1):02d}:00Z",
            "end": f"2026-11-01T00:{15 * seq:02d}:00Z",
            "energy_wh": 5 * seq,
            "edges": seq,
            "demand_kw": 0.02,
            "quality": "complete",
            "seq": seq,
        }
    )


class Publisher:
    """A gateway's connection as MQTT 5, to see the broker's answer to each publish."""

    def __init__(self, broker: Broker, user: str) -> None:
        self.reasons: dict[int, int] = {}
        self.lock = threading.Lock()
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"gw-{user}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.username_pw_set(user, PASSWORDS[user])
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        wait_for(self.client.is_connected, 10, "the gateway to connect")

    def _on_publish(self, _c, _u, mid, reason, _p) -> None:  # type: ignore[no-untyped-def]
        with self.lock:
            self.reasons[mid] = reason.value

    def publish(self, topic: str, payload: str) -> int:
        """Publish at QoS 1; return the broker's reason code (0 accepted, 135 not authorized)."""
        info = self.client.publish(topic, payload, qos=1)
        return int(wait_for(lambda: self.reasons.get(info.mid, -1) + 1, 10, "PUBACK")) - 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_a_gateway_cannot_publish_under_another_id(tmp_path) -> None:
    directory = tmp_path / "broker"
    directory.mkdir()
    passwords = directory / "passwd"
    for i, (user, password) in enumerate(PASSWORDS.items()):
        flags = ["-c"] if i == 0 else []
        subprocess.run(
            ["mosquitto_passwd", *flags, "-b", str(passwords), user, password], check=True
        )
    broker = Broker(directory, password_file=passwords, acl_file=DOCS / "fleet-mosquitto.acl")
    broker.start()
    secret = tmp_path / "collector.secret"
    secret.write_text("pw-collector\n")
    fleet = tmp_path / "fleet.db"
    config = collector_config(
        tmp_path,
        broker,
        f"sqlite:///{fleet}",
        "c1",
        extra=f'username = "amr-collector"\npassword_file = "{secret}"',
    )
    collector = CollectorProcess(config).start()
    intruder = honest = None
    try:
        wait_for(lambda: "connected to" in collector.log.read_text(), 30, "the collector")
        intruder = Publisher(broker, "gwb")
        # gwb publishing as gwa: refused, and nothing of it reaches the fleet database.
        assert intruder.publish("amr/gwa/a-1/interval", _interval("a-1", 1)) == 135
        assert intruder.publish("amr/gwa/status", "offline") == 135
        # gwb under its own id: accepted and stored (it comes after the refused ones).
        assert intruder.publish("amr/gwb/b-1/interval", _interval("b-1", 1)) == 0
        honest = Publisher(broker, "gwa")
        assert honest.publish("amr/gwa/a-2/interval", _interval("a-2", 1)) == 0

        def stored() -> list[tuple[str, str]]:
            if not fleet.exists():
                return []
            engine = create_engine(f"sqlite:///{fleet}")
            try:
                with engine.connect() as connection:
                    return [
                        tuple(row)
                        for row in connection.execute(
                            text(
                                "SELECT m.gateway, m.meter FROM fleet_intervals i "
                                "JOIN fleet_meters m ON m.id = i.meter_id ORDER BY 1, 2"
                            )
                        )
                    ]
            finally:
                engine.dispose()

        wait_for(lambda: len(stored()) == 2, 30, "the accepted intervals")
        assert stored() == [("gwa", "a-2"), ("gwb", "b-1")]
        engine = create_engine(f"sqlite:///{fleet}")
        with engine.connect() as connection:
            assert connection.execute(
                text("SELECT meter FROM fleet_meters WHERE gateway = 'gwa'")
            ).scalars().all() == ["a-2"]
            assert connection.execute(text("SELECT count(*) FROM fleet_gateways")).scalar() == 0
        engine.dispose()
    finally:
        for publisher in (intruder, honest):
            if publisher is not None:
                publisher.close()
        assert collector.stop() == 0
        broker.stop()


def test_the_database_password_comes_from_a_file_and_is_never_logged(
    broker, postgres_url, tmp_path
) -> None:
    secret = tmp_path / "db.secret"
    password = "Db-s3cret-Pa55"
    secret.write_text(password + "\n")
    config = collector_config(
        tmp_path,
        broker,
        postgres_url,
        "c1",
        extra=f'database_password_file = "{secret}"',
    )
    collector = CollectorProcess(config, verbose=True).start()  # debug lines too
    wait_for(lambda: "connected to" in collector.log.read_text(), 30, "the collector")
    assert collector.stop() == 0
    log = collector.log.read_text()
    assert "collecting into database postgresql+psycopg://postgres:***@" in log
    assert password not in log
