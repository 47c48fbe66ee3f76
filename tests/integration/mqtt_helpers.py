"""A real Mosquitto per test on a free port, a recording subscriber, and a gateway process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout_s: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what or predicate}")


@dataclass
class Broker:
    """A Mosquitto the test owns: it can be stopped and started again on the same port."""

    directory: Path
    port: int = field(default_factory=free_port)
    password_file: Path | None = None
    tls: tuple[Path, Path, Path] | None = None  # ca, cert, key
    persistence: bool = True  # False: a restart forgets retained messages and sessions
    acl_file: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    def config(self) -> Path:
        lines = [f"listener {self.port} 127.0.0.1", "max_queued_messages 100000"]
        if self.persistence:
            lines += [
                "persistence true",
                f"persistence_location {self.directory}/",
                "autosave_interval 1",
            ]
        else:
            lines.append("persistence false")
        if os.geteuid() == 0:
            # As root Mosquitto would drop to its own user, who cannot read the test's files.
            lines.append("user root")
        if self.password_file is not None:
            lines += ["allow_anonymous false", f"password_file {self.password_file}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls is not None:
            ca, cert, key = self.tls
            lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]
        if self.acl_file is not None:
            lines.append(f"acl_file {self.acl_file}")
        path = self.directory / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config())],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def listening() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                return False

        wait_for(listening, 10, "mosquitto to listen")

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open, nothing is answered."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused broker cannot act on SIGTERM
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
        self.proc = None


@dataclass
class Message:
    topic: str
    payload: str
    retain: bool
    qos: int

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """A paho client that records every message, with a persistent session (QoS 1)."""

    def __init__(
        self,
        broker: Broker,
        topics: list[str],
        client_id: str = "test-subscriber",
        **credentials: Any,
    ) -> None:
        self.messages: list[Message] = []
        self.lock = threading.Lock()
        self.subacks = 0
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
        )
        if credentials.get("username"):
            self.client.username_pw_set(credentials["username"], credentials.get("password"))
        if credentials.get("ca"):
            self.client.tls_set(ca_certs=str(credentials["ca"]))
        self.topics = topics
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect_async("127.0.0.1", broker.port, keepalive=10)
        self.client.loop_start()
        wait_for(lambda: self.client.is_connected(), 10, "the subscriber to connect")
        # Only a subscription the broker confirmed is sure to see what is published next.
        wait_for(lambda: self.subacks >= len(topics), 10, "the subscriptions")

    def _on_connect(self, client: paho.Client, *_args: Any) -> None:
        for topic in self.topics:
            client.subscribe(topic, qos=1)

    def _on_subscribe(self, *_args: Any) -> None:
        with self.lock:
            self.subacks += 1

    def _on_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.messages.append(Message(msg.topic, msg.payload.decode(), msg.retain, msg.qos))

    def on(self, topic: str) -> list[Message]:
        with self.lock:
            return [m for m in self.messages if m.topic == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def gateway_config(
    directory: Path,
    broker: Broker,
    *,
    extra_mqtt: str = "",
    meters: str | None = None,
    gw: str = "gwt",
) -> Path:
    meters = (
        meters
        or """
[[meters]]
name = "unit-101"
model = "2O208-4W"
source = "simulate"
speed = 3600
"""
    )
    path = directory / "config.toml"
    path.write_text(
        f"""
[gateway]
id = "{gw}"
database = "sqlite:///{directory / "gateway.db"}"
commit_interval_s = 0.2

[mqtt]
host = "127.0.0.1"
port = {broker.port}
keepalive_s = 5
state_interval_s = 1
{extra_mqtt}
{meters}
"""
    )
    return path


class Gateway:
    """The daemon as a subprocess."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr = b""

    def start(self) -> Gateway:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        _, err = self.proc.communicate(timeout=30)
        self.stderr += err
        return self.proc.returncode
