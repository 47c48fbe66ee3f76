"""MQTT publishing (SPEC section 5) with paho-mqtt 2.x, behind one small interface.

Everything paho lives here: its return codes, its network thread, its callbacks. Callbacks run
in paho's thread and only record facts under a lock (connected, acknowledged message ids,
commands received, Home Assistant coming online); the service's main loop calls :meth:`pump`,
which acts on them in its own thread: it publishes the discovery configuration and status after a
connect, moves waiting interval and event messages from the database outbox to the broker, and
deletes each one only after the broker acknowledged it (QoS 1). So a broker outage of any length,
or a gateway restart during one, loses nothing, and delivery stays in ``seq`` order.

Topics (``amr`` is ``base_topic``, ``gw`` the gateway id):

- ``amr/gw/status``: ``online`` / ``offline``, retained; ``offline`` is the last will.
- ``amr/gw/METER/state``: retained JSON, every ``state_interval_s`` and at each sub-interval end.
- ``amr/gw/METER/interval`` and ``amr/gw/METER/event``: QoS 1 through the outbox.
- ``homeassistant/sensor/...``: discovery, retained, re-sent when Home Assistant says ``online``.
- ``amr/gw/METER/cmd/NAME``: commands, off unless listed in ``[mqtt] commands``.

Anything may arrive from the broker (anyone who may publish there can put it there): every
callback is guarded, so no message and no paho surprise ends publishing, and of a retained state
on our own topic only one this database signed is taken as a floor for the published total
(:func:`~gateway.sinks.payloads.judge_retained_state`); another database's is a conflict,
reported once, and a malformed one is ignored, said once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import socket
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from gateway.config import MqttSettings
from gateway.core.events import Event
from gateway.errors import ConfigError, SinkError
from gateway.sinks.outbox import Outbox
from gateway.sinks.payloads import (
    Conflict,
    DatabaseIdentity,
    Malformed,
    MeterInfo,
    OwnState,
    discovery_messages,
    event_payload,
    judge_retained_state,
    signed_state,
)
from gateway.sinks.publisher import Publisher
from gateway.sinks.sink import Command
from gateway.trouble import Trouble

if TYPE_CHECKING:
    from gateway.checkpoint import MeterBatch

__all__ = ["Command", "LoginSettings", "MqttPublisher", "log_in"]

logger = logging.getLogger(__name__)

KNOWN_COMMANDS = ("reset_peak", "resend")
MAX_IN_FLIGHT = 50
# Re-send answers waiting for room in flight, at most: a request beyond it is declined (its gap
# stays open, and the collector asks again). paho numbers messages modulo 65,535 and never
# checks a number is free: handed too many at once it would overwrite queued messages, or take
# a re-sent message's acknowledgement for an outbox message's.
MAX_RESEND_WAITING = 20_000
REFUSED_RETRY_S = 30
RETAINED_GRACE_S = 0.5  # after our SUBACK, retained messages have arrived (sent right after it)
OUTBOX_BATCH = 200


def unreachable(settings: MqttSettings, exc: BaseException | None) -> str:
    """Say why the broker cannot be reached, as far as the connection's failure tells."""
    host, port = settings.host, settings.port
    if isinstance(exc, socket.gaierror):
        why = f"the name {host} does not resolve ({exc.strerror})"
    elif isinstance(exc, ssl.SSLCertVerificationError):
        why = f"the TLS handshake failed: its certificate is not trusted ({exc.verify_message})"
    elif isinstance(exc, ssl.SSLError) or (
        (settings.tls or settings.ca_file) and isinstance(exc, ConnectionError)
    ):
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        why = f"the TLS handshake failed ({reason}: is port {port} a TLS listener?)"
    elif isinstance(exc, ConnectionRefusedError):
        why = "the connection was refused (nothing listens there)"
    elif isinstance(exc, TimeoutError):
        why = "no answer (timed out)"
    elif isinstance(exc, OSError):
        why = exc.strerror or str(exc)
    else:
        why = "the connection failed"
    return (
        f"cannot reach the broker at {host}:{port}: {why}; will keep trying"
        " (data waits in the outbox)"
    )


def read_password(path: str) -> str:
    """Read a password file (first line); the password is never logged."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.readline().rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"mqtt.password_file {path}: {exc.strerror or exc}") from None


class LoginSettings(Protocol):
    """What :func:`log_in` reads: the gateway's ``[mqtt]`` and the collector's ``[collector]``."""

    @property
    def username(self) -> str | None: ...
    @property
    def tls(self) -> bool: ...
    @property
    def ca_file(self) -> str | None: ...
    @property
    def cert_file(self) -> str | None: ...
    @property
    def key_file(self) -> str | None: ...


def log_in(
    client: paho.Client, settings: LoginSettings, password: str | None, section: str
) -> None:
    """Give ``client`` its user name with ``password`` (read by the caller, who words its own
    errors) and TLS when ``tls`` or a ``ca_file`` asks for it; a CA, certificate or key that
    does not load is a ConfigError naming ``section``'s keys."""
    s = settings
    if s.username is not None:
        client.username_pw_set(s.username, password)
    if s.tls or s.ca_file:
        try:
            client.tls_set(
                ca_certs=s.ca_file,
                certfile=s.cert_file,
                keyfile=s.key_file,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"{section}.ca_file, cert_file, key_file: {exc}") from None


class MqttPublisher(Publisher):
    """The gateway's MQTT client. Call :meth:`start`, then :meth:`pump` from the main loop."""

    def __init__(
        self,
        settings: MqttSettings,
        gateway_id: str,
        meters: Sequence[MeterInfo],
        outbox: Outbox | None,
        identity: DatabaseIdentity | None = None,
    ) -> None:
        """``identity`` signs the states (None: a passing one, so no retained state is ours)."""
        super().__init__()
        for name in settings.commands:
            if name not in KNOWN_COMMANDS:
                raise ConfigError(
                    f"mqtt.commands: {name!r} is not a command ({', '.join(KNOWN_COMMANDS)})"
                )
        self.settings = settings
        self.gateway_id = gateway_id
        self.meters = list(meters)
        self.outbox = outbox
        self.base = f"{settings.base_topic}/{gateway_id}"
        self.status_topic = f"{self.base}/status"
        self._lock = threading.Lock()
        self._connected = False
        self._fresh_connection = False
        self._ha_online = False
        self._acked: list[int] = []  # paho mids the broker acknowledged
        self._in_flight: dict[int, int] = {}  # paho mid -> outbox row id
        self._handed: set[int] = set()  # outbox row ids paho holds (it resends them itself)
        self._resending: deque[tuple[str, str]] = deque()  # re-send answers: (topic, payload)
        self._resent_in_flight: set[int] = set()  # their paho mids, until acknowledged
        self._commands: list[Command] = []
        self._last_state: dict[str, str] = {}
        self._stopping = False
        self._failures = 0
        self._rejected: list[tuple[int, str]] = []
        self._done_pending: list[int] = []  # acknowledged rows whose deletion must be retried
        self._outbox_dirty = True  # look at the outbox only when something may be waiting
        self._refused: dict[int, float] = {}  # refused row id -> when to offer it again
        self.identity = identity or DatabaseIdentity(secrets.token_hex(16), secrets.token_hex(32))
        self._retained: dict[str, OwnState] = {}  # meter -> our highest state the broker retains
        self._conflicts: list[tuple[str, str]] = []  # (meter, detail) to report as events
        self._said: set[tuple[str, ...]] = set()  # what was logged once already
        # What fails at every pass while it fails: said once, and once when it clears.
        self._removing = Trouble(logger, "removing acknowledged messages")
        self._reading = Trouble(logger, "reading the outbox")
        self._refusing = Trouble(logger, "offering outbox messages", level=logging.WARNING)
        self._connecting = Trouble(logger, "connecting to the broker", level=logging.WARNING)
        self._state_sub_mid: int | None = None
        self._retained_checked_at: float | None = None
        self._states_sent = False  # the states were (re-)sent since the last connect
        self.client = self._make_client()

    # -- paho, and only here -----------------------------------------------------------------

    def _make_client(self) -> paho.Client:
        s = self.settings
        protocol = MQTTProtocolVersion.MQTTv5 if s.protocol == "5" else MQTTProtocolVersion.MQTTv311
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=s.client_id or f"amr-gateway-{self.gateway_id}",
            protocol=protocol,
        )
        client.will_set(self.status_topic, "offline", qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=60)
        client.max_inflight_messages_set(MAX_IN_FLIGHT)
        password = read_password(s.password_file) if s.password_file else None
        log_in(client, s, password, "mqtt")
        client.on_connect = self._guarded("on_connect", self._on_connect)
        client.on_connect_fail = self._guarded("on_connect_fail", self._on_connect_fail)
        client.on_disconnect = self._guarded("on_disconnect", self._on_disconnect)
        client.on_publish = self._guarded("on_publish", self._on_publish)
        client.on_message = self._guarded("on_message", self._on_message)
        client.on_subscribe = self._guarded("on_subscribe", self._on_subscribe)
        return client

    def _guarded(self, name: str, callback: Callable[..., None]) -> Callable[..., None]:
        """Wrap a paho callback: an exception in it is logged, never left to end paho's thread.

        paho lets a callback's exception out of its network loop, which ends the loop: no more
        publishing and no reconnect while counting goes on.
        """

        def guarded(*args: Any) -> None:
            try:
                callback(*args)
            except Exception:
                if self._once("callback", name):
                    logger.exception("MQTT %s failed; ignored, publishing goes on", name)
                else:
                    logger.debug("MQTT %s failed again", name, exc_info=True)

        return guarded

    def _once(self, *key: str) -> bool:
        """Return True the first time ``key`` is seen (for what is logged once per run)."""
        with self._lock:
            if key in self._said:
                return False
            self._said.add(key)
            return True

    def _on_connect(
        self, client: paho.Client, _userdata: Any, _flags: Any, reason: Any, _properties: Any
    ) -> None:
        if reason.is_failure:
            self._connecting.failed(
                "broker %s:%d refused the connection: %s; will keep trying",
                self.settings.host,
                self.settings.port,
                reason,
            )
            return
        self._connecting.cleared()
        self._failures = 0
        logger.info("connected to %s:%d", self.settings.host, self.settings.port)
        prefix = self.settings.discovery_prefix
        if prefix:
            client.subscribe(f"{prefix}/status", qos=1)
        for name in self.settings.commands:
            client.subscribe(f"{self.base}/+/cmd/{name}", qos=1)
        # What the broker retains of our own totals: never publish below it (a fresh database
        # with a reused gateway id would otherwise send Home Assistant's total backwards).
        _, mid = client.subscribe(f"{self.base}/+/state", qos=1)
        with self._lock:
            self._connected = True
            self._fresh_connection = True
            self._state_sub_mid = mid
            self._retained_checked_at = None

    def _on_disconnect(
        self, _client: paho.Client, _userdata: Any, _flags: Any, reason: Any, _properties: Any
    ) -> None:
        with self._lock:
            was = self._connected
            self._connected = False
        if was and not self._stopping:
            logger.warning("disconnected from the broker (%s); reconnecting", reason)

    def _on_connect_fail(self, _client: paho.Client, _userdata: Any) -> None:
        # Said once, then every 60th try, so an absent broker is visible but not noisy.
        if self._failures % 60 == 0:
            # paho calls this inside its `except OSError`: that exception says what went wrong.
            logger.warning("%s", unreachable(self.settings, sys.exc_info()[1]))
        self._failures += 1

    def _on_publish(
        self, _client: paho.Client, _userdata: Any, mid: int, reason: Any, _properties: Any
    ) -> None:
        with self._lock:
            if getattr(reason, "is_failure", False):
                self._rejected.append((mid, str(reason)))  # MQTT 5: kept, not deleted
            else:
                self._acked.append(mid)

    def _on_subscribe(
        self, _client: paho.Client, _userdata: Any, mid: int, _codes: Any, _properties: Any
    ) -> None:
        with self._lock:
            if mid == self._state_sub_mid:
                self._retained_checked_at = time.monotonic()

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        payload = message.payload.decode("utf-8", errors="replace").strip()
        parts = message.topic.split("/")
        if parts[:-2] == self.base.split("/") and parts[-1] == "state":
            self._note_state(parts[-2], payload, retained=bool(message.retain))
            return
        prefix = self.settings.discovery_prefix
        if prefix and message.topic == f"{prefix}/status":
            if payload == "online":
                with self._lock:
                    self._ha_online = True
            return
        if message.retain:
            # A retained command would act again at every connect: commands are live only.
            logger.warning("ignored a retained command on %s", message.topic)
            return
        parts = message.topic.split("/")
        base_parts = self.base.split("/")
        if len(parts) == len(base_parts) + 3 and parts[-2] == "cmd":
            with self._lock:
                self._commands.append(Command(parts[-3], parts[-1], payload))

    def _publish(
        self, topic: str, payload: str, *, qos: int = 1, retain: bool = False
    ) -> int | None:
        """Hand a message to paho; return its mid, or None if paho did not take it.

        Without a connection paho still keeps a QoS 1 message and sends it on reconnect, so
        that counts as taken too.
        """
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == paho.MQTT_ERR_SUCCESS or (qos > 0 and info.rc == paho.MQTT_ERR_NO_CONN):
            return info.mid
        return None

    # -- the interface -----------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; the gateway runs on while the broker is away."""
        try:
            self.client.connect_async(
                self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(f"mqtt.host {self.settings.host}: {exc}") from None
        self.client.loop_start()

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._connected

    def _note_state(self, meter: str, payload: str, *, retained: bool) -> None:
        """Judge a state on a meter's topic: retained and ours, it is a floor; else see below.

        A live one is our own echo, or another gateway publishing with our id right now.
        """
        if meter not in {m.name for m in self.meters}:
            return
        topic = f"{self.base}/{meter}/state"
        verdict = judge_retained_state(payload, meter, self.identity)
        if isinstance(verdict, Malformed):
            if retained and self._once("malformed", meter):
                logger.warning(
                    "%s: ignored a malformed retained state on %s (%s)",
                    meter,
                    topic,
                    verdict.detail,
                )
        elif isinstance(verdict, Conflict):
            # Once per meter and kind (another id, no id, our id unsigned): whoever sends them
            # cannot fill the log or the database by varying the id.
            kind = "another id" if verdict.database_id else verdict.detail
            if self._once("conflict", meter, kind):
                logger.warning(
                    "%s: %s on %s: another database publishes as this gateway (is the gateway "
                    "id unique? a new database?); its total is not taken, this gateway's is "
                    "published",
                    meter,
                    verdict.detail,
                    topic,
                )
                with self._lock:
                    self._conflicts.append((meter, f"{verdict.detail} on {topic}"))
        elif retained:
            with self._lock:
                held = self._retained.get(meter)
                if held is None or verdict.energy_wh > held.energy_wh:
                    self._retained[meter] = verdict

    def retained_state(self, meter: str) -> OwnState | None:
        """Return this database's highest state the broker was found to retain for a meter."""
        with self._lock:
            return self._retained.get(meter)

    def retained_wh(self, meter: str) -> int:
        """Return the highest total of this database the broker retains for a meter (0: none)."""
        state = self.retained_state(meter)
        return 0 if state is None else state.energy_wh

    def take_conflicts(self) -> list[tuple[str, str]]:
        """Return (meter, detail) of each conflict noticed since the last call, once each."""
        with self._lock:
            conflicts, self._conflicts = self._conflicts, []
        return conflicts

    def _states_may_go(self) -> bool:
        """Connected, and the broker's retained totals had their moment to arrive."""
        with self._lock:
            checked = self._retained_checked_at
            connected = self._connected
        return connected and checked is not None and time.monotonic() - checked >= RETAINED_GRACE_S

    def publish_state(self, meter: str, payload: dict[str, Any]) -> None:
        """Publish a meter's retained state (the floor is :meth:`Publisher.publish`'s).

        Held until the broker's retained totals were read after a connect; the last state is
        sent then (and again after every reconnect).
        """
        text = json.dumps(signed_state(payload, meter, self.identity), separators=(",", ":"))
        self._last_state[meter] = text
        if self._states_may_go() and self._states_sent:
            self._publish(f"{self.base}/{meter}/state", text, qos=1, retain=True)

    send_state = publish_state

    def commit(self, batches: Sequence[MeterBatch], now_ns: int, *, stamp: bool = False) -> None:
        """Note that the commit queued messages in the outbox, if it did."""
        if any(b.intervals or b.events or b.reads for b in batches):
            self.outbox_changed()

    def tell(self, meter: str, event: Event) -> None:
        """Publish an event at once, outside the outbox (which is in the failing database)."""
        self.publish_now(meter, "event", event_payload(meter, event, None))

    def publish_now(self, meter: str, kind: str, payload: dict[str, Any]) -> None:
        """Publish a message at once, outside the outbox (when the database itself fails).

        QoS 1 while connected; nothing is kept if the broker is away.
        """
        if self.connected:
            text = json.dumps(payload, separators=(",", ":"))
            self._publish(f"{self.base}/{meter}/{kind}", text, qos=1)

    def pump(self) -> list[Command]:
        """Act on what paho reported; move the outbox on. Returns commands received."""
        with self._lock:
            fresh, self._fresh_connection = self._fresh_connection, False
            ha_online, self._ha_online = self._ha_online, False
            acked, self._acked = self._acked, []
            rejected, self._rejected = self._rejected, []
            commands, self._commands = self._commands, []
            connected = self._connected
        now = time.monotonic()
        for mid, why in rejected:
            row = self._in_flight.pop(mid, None)
            if row is not None:
                # Kept, and offered again after a pause: a broker that refuses (an ACL, a quota)
                # would refuse again at once, many times a second.
                self._handed.discard(row)
                self._refused[row] = now + REFUSED_RETRY_S
                self._refusing.failed(
                    "the broker refused outbox message %d (%s); kept, offered again in %d s",
                    row,
                    why,
                    REFUSED_RETRY_S,
                )
        if self._refused and min(self._refused.values()) <= now:
            self._refused = {row: t for row, t in self._refused.items() if t > now}
            self._outbox_dirty = True
        self._resent_in_flight.difference_update(acked)
        self._resent_in_flight.difference_update(mid for mid, _ in rejected)
        delivered = [self._in_flight.pop(mid) for mid in acked if mid in self._in_flight]
        if delivered:
            self._refusing.cleared()
        self._done_pending += delivered
        if self._done_pending and self.outbox is not None:
            try:
                self.outbox.done(self._done_pending)
            except SinkError as exc:
                self._removing.failed(
                    "could not remove acknowledged messages (will retry): %s", exc
                )
            else:
                self._removing.cleared()
                self._handed.difference_update(self._done_pending)
                self._done_pending = []
                self._outbox_dirty = True  # room in flight again
        if connected and fresh:
            self._publish(self.status_topic, "online", qos=1, retain=True)
            self._send_discovery()
            self._states_sent = False
        if not self._states_sent and self._states_may_go():
            self._states_sent = True
            for meter, text in self._last_state.items():
                held = json.loads(text).get("energy_wh", 0)
                if held >= self.retained_wh(meter):
                    self._publish(f"{self.base}/{meter}/state", text, qos=1, retain=True)
        elif connected and ha_online:
            self._send_discovery()
        if connected and (fresh or self._outbox_dirty):
            self._outbox_dirty = False
            self._drain_outbox()
        accepted = []
        for command in commands:
            if command.name in self.settings.commands and command.meter in {
                m.name for m in self.meters
            }:
                accepted.append(command)
            elif self._once("ignored command"):  # anyone may send them: said once, then DEBUG
                logger.warning("ignored command %s for %s", command.name, command.meter)
            else:
                logger.debug("ignored command %s for %s", command.name, command.meter)
        others = self._queue_resends(accepted)
        if connected and self._resending:
            self._send_resends()
        return others

    def _queue_resends(self, commands: list[Command]) -> list[Command]:
        """Queue the answers to re-send requests (gateway/sinks/resend.py); return the other
        commands."""
        from gateway.sinks.resend import answer_resend

        for command in commands:
            if command.name == "resend" and self.outbox is not None:
                if len(self._resending) >= MAX_RESEND_WAITING:
                    logger.warning(
                        "declined a re-send request for %s: %d answers wait already",
                        command.meter,
                        len(self._resending),
                    )
                    continue
                for kind, text in answer_resend(
                    self.outbox.database, command.meter, command.payload
                ):
                    self._resending.append((f"{self.base}/{command.meter}/{kind}", text))
        return [command for command in commands if command.name != "resend"]

    def _send_resends(self) -> None:
        """Hand paho re-send answers as room in flight allows, after the outbox's own."""
        room = MAX_IN_FLIGHT - len(self._in_flight) - len(self._resent_in_flight)
        while room > 0 and self._resending:
            topic, text = self._resending[0]
            mid = self._publish(topic, text, qos=1)
            if mid is None:
                return  # the connection dropped: the rest go once it is back
            self._resending.popleft()
            self._resent_in_flight.add(mid)
            room -= 1

    def _send_discovery(self) -> None:
        if not self.settings.discovery_prefix:
            return
        for meter in self.meters:
            messages = discovery_messages(
                self.settings.base_topic, self.settings.discovery_prefix, self.gateway_id, meter
            )
            for topic, payload in messages:
                self._publish(topic, json.dumps(payload, separators=(",", ":")), retain=True)

    def _drain_outbox(self) -> None:
        if self.outbox is None:
            return
        room = MAX_IN_FLIGHT - len(self._in_flight)
        if room <= 0:
            return
        try:
            limit = OUTBOX_BATCH + len(self._handed) + len(self._refused)
            messages = self.outbox.head(limit)
        except SinkError as exc:
            self._reading.failed("could not read the outbox (will retry): %s", exc)
            self._outbox_dirty = True
            return
        self._reading.cleared()
        waiting = [m for m in messages if m.id not in self._handed and m.id not in self._refused]
        if len(waiting) > room or len(messages) == limit:
            self._outbox_dirty = True  # more waits than goes now: come back next pass
        for message in waiting:
            if room <= 0:
                break
            topic = f"{self.base}/{message.meter}/{message.kind}"
            mid = self._publish(topic, message.payload, qos=1)
            if mid is None:
                break  # the connection dropped; paho reports it and we try again later
            self._in_flight[mid] = message.id
            self._handed.add(message.id)
            room -= 1

    def outbox_changed(self) -> None:
        """Say new messages were committed to the outbox."""
        self._outbox_dirty = True

    def pending(self) -> int:
        """Return how many outbox messages paho holds unacknowledged."""
        return len(self._in_flight)

    def close(self) -> None:
        """Stop (once)."""
        if not self._stopping:
            self.stop()

    def stop(self, timeout_s: float = 3.0) -> None:
        """Say ``offline`` (retained), give in-flight messages a moment, and disconnect."""
        self._stopping = True
        if self.connected:
            info = self.client.publish(self.status_topic, "offline", qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=timeout_s)
            self.pump()
        self.client.disconnect()
        self.client.loop_stop()
