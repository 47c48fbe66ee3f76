"""MQTT against a real Mosquitto that each test starts on a free port."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from db_helpers import read_db
from mqtt_helpers import Broker, Gateway, Subscriber, gateway_config, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def seqs(sub: Subscriber, topic: str) -> list[int]:
    return [m.json()["seq"] for m in sub.on(topic)]


def test_topics_payloads_and_retained_flags(tmp_path, broker) -> None:
    sub = Subscriber(broker, ["amr/#", "homeassistant/#"])
    gw = Gateway(gateway_config(tmp_path, broker)).start()
    try:
        wait_for(lambda: len(sub.on("amr/gwt/unit-101/interval")) >= 3, 60, "three intervals")
        wait_for(lambda: sub.on("amr/gwt/unit-101/event"), 10, "an event")
    finally:
        assert gw.stop() == 0, gw.stderr.decode()
    status = sub.on("amr/gwt/status")
    assert status[0].payload == "online" and status[-1].payload == "offline"
    states = [m.json() for m in sub.on("amr/gwt/unit-101/state")]
    assert set(states[-1]) == {
        "time",
        "energy_wh",
        "energy_time",
        "energy_kwh",
        "power_kw",
        "demand_kw",
        "peak_demand_kw",
        "peak_demand_end",
        "peak_demand_since",  # added by issue 16: since when the peak was measured
        "lcd_kwh",
        "quality",
        "database_id",  # who published it, and its signature (issue #17)
        "signature",
    }
    assert all(s["peak_demand_since"] is not None for s in states)
    energies = [s["energy_wh"] for s in states]
    assert energies == sorted(energies) and energies[0] > 0  # never zero, never backwards
    assert all(s["energy_kwh"] == s["energy_wh"] / 1000 for s in states)
    assert all(s["lcd_kwh"] == s["energy_wh"] // 1000 for s in states)
    # The total is the committed one: the payload says what time it is for, never later than
    # the reading's own time (issue #11).
    assert all(s["energy_time"] is not None and s["energy_time"] <= s["time"] for s in states)
    intervals = [m.json() for m in sub.on("amr/gwt/unit-101/interval")]
    assert [i["seq"] for i in intervals] == list(range(1, len(intervals) + 1))
    assert set(intervals[0]) == {
        "meter",
        "start",
        "end",
        "energy_wh",
        "edges",
        "demand_kw",
        "quality",
        "seq",
    }
    assert all(i["energy_wh"] == 5 * i["edges"] for i in intervals)
    events = [m.json() for m in sub.on("amr/gwt/unit-101/event")]
    assert events[0]["kind"] == "restart" and events[0]["seq"] == 1
    assert all(m.qos == 1 for m in sub.on("amr/gwt/unit-101/interval"))
    # What a newcomer sees: retained status, state and discovery; no retained intervals.
    late = Subscriber(broker, ["amr/#", "homeassistant/#"], client_id="late")
    wait_for(lambda: late.on("amr/gwt/status"), 5, "retained status")
    time.sleep(0.5)
    assert late.on("amr/gwt/status")[0].retain and late.on("amr/gwt/status")[0].payload == "offline"
    assert late.on("amr/gwt/unit-101/state")[0].retain
    assert late.on("amr/gwt/unit-101/state")[0].json()["energy_wh"] == energies[-1]
    assert len([m for m in late.messages if m.topic.startswith("homeassistant/")]) == 5
    assert not late.on("amr/gwt/unit-101/interval")
    late.close()
    sub.close()


HA_ENERGY_UNITS = {
    "Wh",
    "kWh",
    "MWh",
    "GWh",
    "mWh",
    "GJ",
    "MJ",
    "kJ",
    "cal",
    "kcal",
    "Mcal",
    "Gcal",
}
HA_POWER_UNITS = {"W", "kW", "MW", "GW", "TW", "mW", "BTU/h"}


def test_discovery_follows_home_assistant_rules(tmp_path, broker) -> None:
    sub = Subscriber(broker, ["homeassistant/#"])
    gw = Gateway(gateway_config(tmp_path, broker)).start()
    try:
        wait_for(lambda: len(sub.messages) >= 5, 30, "discovery")
        configs = {m.topic: m.json() for m in sub.messages}
        # Retained: a subscriber that comes later still gets all five, flagged retained.
        late = Subscriber(broker, ["homeassistant/#"], client_id="late")
        wait_for(lambda: len(late.messages) >= 5, 10, "retained discovery")
        assert all(m.retain for m in late.messages)
        late.close()
        # Home Assistant announces itself: everything is sent again.
        before = len(sub.messages)
        publish = subprocess.run(
            ["mosquitto_pub", "-p", str(broker.port), "-t", "homeassistant/status", "-m", "online"],
            check=False,
        )
        if publish.returncode == 0:
            wait_for(lambda: len(sub.messages) >= before + 5, 10, "discovery sent again")
    finally:
        assert gw.stop() == 0
    assert len(configs) == 5
    unique_ids = [c["unique_id"] for c in configs.values()]
    assert len(set(unique_ids)) == 5
    for topic, config in configs.items():
        assert topic.startswith("homeassistant/sensor/") and topic.endswith("/config")
        assert "object_id" not in config  # deprecated: default_entity_id replaces it
        slug = config["unique_id"].lower().replace("-", "_")
        assert config["default_entity_id"] == f"sensor.{slug}"
        assert re.fullmatch(r"sensor\.[a-z0-9_]+", config["default_entity_id"])
        assert "via_device" not in config["device"]  # no device that is never announced
        assert config["state_topic"] == "amr/gwt/unit-101/state"
        assert config["availability_topic"] == "amr/gwt/status"
        assert config["device"]["identifiers"] and "2O208-4W" in config["device"]["model"]
        assert "model_id" not in config["device"]  # Home Assistant < 2024.8 rejects it
        assert config["device"]["manufacturer"] == "Leviton"
        assert config["value_template"].startswith("{{ value_json.")
    by_key = {topic.split("/")[-2]: config for topic, config in configs.items()}
    energy = by_key["energy"]
    # The Energy dashboard takes a sensor with device_class energy, a total state class and
    # an energy unit.
    assert energy["device_class"] == "energy"
    assert energy["state_class"] == "total_increasing"
    assert energy["unit_of_measurement"] in HA_ENERGY_UNITS
    assert energy["value_template"] == "{{ value_json.energy_kwh }}"
    for key in ("power", "demand", "peak_demand"):
        assert by_key[key]["device_class"] == "power"
        assert by_key[key]["state_class"] == "measurement"
        assert by_key[key]["unit_of_measurement"] in HA_POWER_UNITS
    assert by_key["quality"]["entity_category"] == "diagnostic"
    assert "device_class" not in by_key["quality"]
    # One device per meter: every entity names the same one.
    assert len({json.dumps(c["device"], sort_keys=True) for c in configs.values()}) == 1
    sub.close()


def test_last_will_after_sigkill(tmp_path, broker) -> None:
    sub = Subscriber(broker, ["amr/gwt/status"])
    gw = Gateway(gateway_config(tmp_path, broker)).start()
    wait_for(lambda: [m for m in sub.messages if m.payload == "online"], 30, "online")
    killed_at = time.monotonic()
    gw.stop(signal.SIGKILL)
    wait_for(lambda: sub.messages[-1].payload == "offline", 15, "the last will")
    # keepalive 5 s: the broker gives up after 1.5 keepalives
    assert time.monotonic() - killed_at < 1.5 * 5 + 2
    sub.close()


def outbox_size(directory: Path) -> int:
    with read_db(directory / "gateway.db") as conn:
        return conn.execute("select count(*) from mqtt_outbox").fetchone()[0]


def test_broker_outage_loses_no_interval_and_keeps_order(tmp_path, broker) -> None:
    sub = Subscriber(broker, ["amr/gwt/+/interval"])
    gw = Gateway(gateway_config(tmp_path, broker)).start()
    try:
        wait_for(lambda: len(seqs(sub, "amr/gwt/unit-101/interval")) >= 2, 60, "intervals")
        broker.stop()
        time.sleep(4)  # 4 simulated hours: about 16 intervals wait in the outbox
        assert outbox_size(tmp_path) > 5
        broker.start()
        got = len(seqs(sub, "amr/gwt/unit-101/interval"))
        wait_for(lambda: outbox_size(tmp_path) == 0, 60, "the outbox to drain")
        wait_for(lambda: len(seqs(sub, "amr/gwt/unit-101/interval")) > got + 10, 30, "catch-up")
    finally:
        assert gw.stop() == 0
    seen = seqs(sub, "amr/gwt/unit-101/interval")
    assert seen == list(range(1, len(seen) + 1)), seen  # none lost, none out of order
    sub.close()


def test_gateway_restarted_while_the_broker_is_down(tmp_path, broker) -> None:
    sub = Subscriber(broker, ["amr/gwt/+/interval"])
    config = gateway_config(tmp_path, broker)
    gw = Gateway(config).start()
    wait_for(lambda: len(seqs(sub, "amr/gwt/unit-101/interval")) >= 1, 60, "an interval")
    broker.stop()
    time.sleep(2)
    assert gw.stop() == 0  # stops cleanly with the broker away
    waiting = outbox_size(tmp_path)
    assert waiting > 0
    gw = Gateway(config).start()  # starts and runs with the broker still down
    time.sleep(3)
    assert gw.proc is not None and gw.proc.poll() is None
    broker.start()
    try:
        wait_for(lambda: outbox_size(tmp_path) == 0, 60, "the outbox to drain")
        wait_for(lambda: len(seqs(sub, "amr/gwt/unit-101/interval")) >= waiting + 1, 30, "delivery")
    finally:
        assert gw.stop() == 0
    seen = seqs(sub, "amr/gwt/unit-101/interval")
    assert seen == list(range(1, len(seen) + 1)), seen
    sub.close()


def test_commands_are_off_by_default_and_logged_when_on(tmp_path, broker) -> None:
    sub = Subscriber(broker, ["amr/gwt/#"])
    gw = Gateway(gateway_config(tmp_path, broker)).start()
    try:
        wait_for(
            lambda: any(m.json()["peak_demand_kw"] > 0 for m in sub.on("amr/gwt/unit-101/state")),
            60,
            "a peak",
        )
        subprocess.run(
            [
                "mosquitto_pub",
                "-p",
                str(broker.port),
                "-t",
                "amr/gwt/unit-101/cmd/reset_peak",
                "-m",
                "1",
                "-q",
                "1",
            ],
            check=True,
        )
        time.sleep(1.5)
    finally:
        assert gw.stop() == 0
    kinds = [m.json()["kind"] for m in sub.on("amr/gwt/unit-101/event")]
    assert "peak_reset" not in kinds
    sub.close()

    sub = Subscriber(broker, ["amr/gwt2/#"], client_id="second")
    gw = Gateway(
        gateway_config(tmp_path, broker, gw="gwt2", extra_mqtt='commands = ["reset_peak"]')
    ).start()
    try:
        wait_for(
            lambda: any(m.json()["peak_demand_kw"] > 0 for m in sub.on("amr/gwt2/unit-101/state")),
            60,
            "a peak",
        )
        subprocess.run(
            [
                "mosquitto_pub",
                "-p",
                str(broker.port),
                "-t",
                "amr/gwt2/unit-101/cmd/reset_peak",
                "-m",
                "1",
                "-q",
                "1",
            ],
            check=True,
        )
        wait_for(
            lambda: any(
                m.json()["kind"] == "peak_reset" for m in sub.on("amr/gwt2/unit-101/event")
            ),
            15,
            "the reset event",
        )
    finally:
        assert gw.stop() == 0
    sub.close()


def test_mqtt_5(tmp_path, broker) -> None:
    sub = Subscriber(broker, ["amr/gwt/+/state"])
    gw = Gateway(gateway_config(tmp_path, broker, extra_mqtt='protocol = "5"')).start()
    try:
        wait_for(lambda: sub.messages, 30, "state over MQTT 5")
    finally:
        assert gw.stop() == 0
    sub.close()


def test_username_and_password_from_a_file(tmp_path) -> None:
    directory = tmp_path / "broker"
    directory.mkdir()
    passwords = directory / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwords), "meter", "s3cret-Pa55"], check=True
    )
    passwords.chmod(0o600)
    broker = Broker(directory, password_file=passwords)
    broker.start()
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret-Pa55\n")
    try:
        sub = Subscriber(broker, ["amr/gwt/#"], username="meter", password="s3cret-Pa55")
        gw = Gateway(
            gateway_config(
                tmp_path, broker, extra_mqtt=f'username = "meter"\npassword_file = "{secret}"'
            )
        ).start()
        try:
            wait_for(lambda: sub.on("amr/gwt/unit-101/state"), 30, "state with auth")
        finally:
            assert gw.stop() == 0
        assert b"s3cret" not in gw.stderr
        # A wrong password: the gateway runs on, refused, and says so without the secret.
        secret.write_text("wrong-s3cret\n")
        gw = Gateway(
            gateway_config(
                tmp_path, broker, extra_mqtt=f'username = "meter"\npassword_file = "{secret}"'
            )
        ).start()
        time.sleep(3)
        assert gw.proc is not None and gw.proc.poll() is None
        assert gw.stop() == 0
        assert b"refused" in gw.stderr and b"s3cret" not in gw.stderr
        sub.close()
    finally:
        broker.stop()


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    ca_key, ca = directory / "ca.key", directory / "ca.crt"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)  # noqa: E731
    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
        "-days",
        "2",
        "-subj",
        "/CN=amr-test-ca",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        "/CN=127.0.0.1",
    )
    run(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-out",
        str(cert),
        "-days",
        "2",
        "-extfile",
        str(ext),
    )
    return ca, cert, key


def test_tls_with_a_generated_ca(tmp_path) -> None:
    directory = tmp_path / "broker"
    directory.mkdir()
    ca, cert, key = make_certificates(directory)
    broker = Broker(directory, tls=(ca, cert, key))
    broker.start()
    try:
        sub = Subscriber(broker, ["amr/gwt/#"], ca=ca)
        gw = Gateway(
            gateway_config(tmp_path, broker, extra_mqtt=f'tls = true\nca_file = "{ca}"')
        ).start()
        try:
            wait_for(lambda: sub.on("amr/gwt/unit-101/state"), 30, "state over TLS")
        finally:
            assert gw.stop() == 0
        sub.close()
    finally:
        broker.stop()


def test_distinct_meter_names_never_share_a_unique_id() -> None:
    from gateway.sinks.payloads import MeterInfo, discovery_messages

    ids = set()
    for name in ("unit-101", "unit_101", "Unit_101"):
        meter = MeterInfo(name, "2O208-4W")
        for _topic, payload in discovery_messages("amr", "homeassistant", "gw1", meter):
            ids.add(payload["unique_id"])
    assert len(ids) == 15


def test_a_retained_command_is_ignored(tmp_path, broker) -> None:
    subprocess.run(
        [
            "mosquitto_pub",
            "-p",
            str(broker.port),
            "-r",
            "-q",
            "1",
            "-t",
            "amr/gwt/unit-101/cmd/reset_peak",
            "-m",
            "1",
        ],
        check=True,
    )
    sub = Subscriber(broker, ["amr/gwt/#"])
    config = gateway_config(tmp_path, broker, extra_mqtt='commands = ["reset_peak"]')
    gw = Gateway(config).start()
    try:
        wait_for(lambda: len(sub.on("amr/gwt/unit-101/interval")) >= 1, 60, "an interval")
    finally:
        assert gw.stop() == 0
    kinds = [m.json()["kind"] for m in sub.on("amr/gwt/unit-101/event")]
    assert "peak_reset" not in kinds
    assert b"ignored a retained command" in gw.stderr
    sub.close()
