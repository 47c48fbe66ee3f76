"""``amr-gateway collect``: the gateways' messages from the broker into the fleet database.

paho lives here (and in gateway/sinks/mqtt.py): its callbacks run in paho's thread and only
queue what arrived; the main loop takes a batch, stores it in one transaction
(:class:`gateway.fleet.ingest.Ingest`) and only then acknowledges each message (``manual_ack``),
so a collector killed at any instant loses nothing: the broker redelivers what was not
acknowledged, to this collector's persistent session (a stable client id; MQTT 5 session
expiry, or 3.1.1 ``clean_session = false``), and the keys make a redelivery change nothing.

Subscriptions (``amr`` is ``base_topic``, ``G`` the ``share_group``):

- ``$share/G/amr/+/+/interval``, ``/read``, ``/event``: QoS 1, shared by the collectors of G;
- ``amr/+/status`` (QoS 1, retained: online / offline, the last will), ``amr/+/+/state``
  (QoS 0, retained: the latest total) and ``homeassistant/sensor/+/energy/config`` (the
  meter's model), each collector its own.

paho's ``message_callback_add`` never matches ``$share`` filters, so ``on_message`` dispatches.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy.exc import SQLAlchemyError

from gateway.daemon.notify import Notifier
from gateway.daemon.signals import Signals
from gateway.errors import ConfigError, SinkError
from gateway.fleet.config import CollectorSettings, database_url, read_secret
from gateway.fleet.database import FleetDatabase
from gateway.fleet.ingest import (
    BadMessage,
    Incoming,
    Ingest,
    ResendRequest,
    claim_resends,
    parse_message,
    report_gaps,
    store_meter_info,
    store_status,
)
from gateway.fleet.partitions import MONTHS_AHEAD, months_from
from gateway.sinks.failures import first_line
from gateway.sinks.mqtt import log_in

logger = logging.getLogger(__name__)

DATA_KINDS = ("interval", "read", "event")
HOUSEKEEPING_S = 5.0
RETRY_MAX_S = 30.0
MODEL_RE_START, MODEL_RE_END = "(", ")"


class Received(NamedTuple):
    """One message as paho handed it over: what to acknowledge, and what it says."""

    mid: int
    qos: int
    item: Incoming | None = None  # a meter's interval, read or event
    status: tuple[str, str] | None = None  # (gateway, online|offline)
    bad: str | None = None  # why it cannot be stored (acknowledged and dropped)


class Collector:
    """The collector. :meth:`run` until a signal stops it."""

    def __init__(self, settings: CollectorSettings) -> None:
        self.settings = settings
        self.base = settings.base_topic
        # paho's thread appends what arrives, the main loop takes batches (a deque: no lock
        # per message) and is woken by the event when it waits.
        self._arrived: deque[Received] = deque()
        self._wake = threading.Event()
        self._infos: dict[tuple[str, str], dict[str, Any]] = {}  # state / model, latest only
        self._connected = False
        self._stopping = False
        self.stored = 0  # messages committed (for the log line and tests)
        self.last_commit_ns: int | None = None
        # Called on the loop's thread once the database is open and after each commit (the
        # web view's pulse): each must only note what it needs, never block or do I/O.
        self.observers: list[Callable[[Collector], None]] = []
        self.client = self._make_client()

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up (as paho last said)."""
        return self._connected

    def _notify(self) -> None:
        for observer in self.observers:
            observer(self)

    # -- paho, and only here -------------------------------------------------------------

    def _make_client(self) -> paho.Client:
        s = self.settings
        v5 = s.protocol == "5"
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else False,
            manual_ack=True,
        )
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        password = read_secret(s.password_file, "password_file") if s.password_file else None
        log_in(client, s, password, "collector")
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _subscriptions(self) -> list[tuple[str, int]]:
        group, base = self.settings.share_group, self.base
        topics = [(f"$share/{group}/{base}/+/+/{kind}", 1) for kind in DATA_KINDS]
        topics += [(f"{base}/+/status", 1), (f"{base}/+/+/state", 0)]
        if self.settings.discovery_prefix:
            topics.append((f"{self.settings.discovery_prefix}/sensor/+/energy/config", 0))
        return topics

    def _on_connect(
        self, client: paho.Client, _userdata: Any, flags: Any, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            logger.warning(
                "broker %s:%d refused the connection: %s",
                self.settings.host,
                self.settings.port,
                reason,
            )
            return
        self._connected = True
        logger.info(
            "connected to %s:%d as %s (session %s)",
            self.settings.host,
            self.settings.port,
            self.settings.client_id,
            "resumed" if getattr(flags, "session_present", False) else "new",
        )
        client.subscribe(self._subscriptions())

    def _on_disconnect(
        self, _client: paho.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        if self._connected and not self._stopping:
            logger.warning("disconnected from the broker (%s); reconnecting", reason)
        self._connected = False

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        parts = message.topic.split("/")
        base = self.base
        mid, qos = message.mid, message.qos
        if len(parts) == 4 and parts[0] == base and parts[3] in DATA_KINDS:
            try:
                item = parse_message(parts[1], parts[2], parts[3], message.payload)
            except BadMessage as exc:
                self._put(Received(mid, qos, bad=f"{message.topic}: {exc}"))
                return
            self._put(Received(mid, qos, item=item))
        elif len(parts) == 3 and parts[0] == base and parts[2] == "status":
            text = message.payload.decode("utf-8", errors="replace").strip()
            if text in ("online", "offline"):
                self._put(Received(mid, qos, status=(parts[1], text)))
            else:
                self._put(Received(mid, qos, bad=f"{message.topic}: {text[:40]!r}"))
        elif len(parts) == 4 and parts[0] == base and parts[3] == "state":
            try:
                state = json.loads(message.payload)
            except (UnicodeDecodeError, json.JSONDecodeError):
                return
            if isinstance(state, dict):
                self._infos.setdefault((parts[1], parts[2]), {})["state"] = state
        else:
            self._on_discovery(message)

    def _put(self, received: Received) -> None:
        self._arrived.append(received)
        if not self._wake.is_set():
            self._wake.set()

    def _on_discovery(self, message: paho.MQTTMessage) -> None:
        try:
            config = json.loads(message.payload)
            state_topic = str(config["state_topic"]).split("/")
            model = str(config["device"]["model"])
        except (UnicodeDecodeError, ValueError, KeyError, TypeError):
            return
        if len(state_topic) != 4 or state_topic[0] != self.base:
            return
        # discovery says "Series 2000 (2O208-4W)": the model number is in the parentheses
        if MODEL_RE_START in model and model.endswith(MODEL_RE_END):
            model = model[model.rindex(MODEL_RE_START) + 1 : -1]
        self._infos.setdefault((state_topic[1], state_topic[2]), {})["model"] = model

    def _ask(self, requests: list[ResendRequest]) -> None:
        """Ask gateways to re-send what gaps miss (their ``resend`` command, when enabled)."""
        for request in requests:
            topic = f"{self.base}/{request.gateway}/{request.meter}/cmd/resend"
            logger.info("asking %s to re-send %s", topic, request.payload)
            self.client.publish(topic, json.dumps(request.payload), qos=1)

    def _ack(self, batch: list[Received]) -> None:
        for received in batch:
            if received.qos > 0:
                self.client.ack(received.mid, received.qos)

    # -- the loop --------------------------------------------------------------------------

    def start(self) -> None:
        s = self.settings
        properties = None
        kwargs: dict[str, Any] = {}
        if s.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = s.session_expiry_s
            # As many unacknowledged messages in flight as a batch holds (the broker's own
            # max_inflight_messages may lower it).
            properties.ReceiveMaximum = min(65_535, max(s.batch_size * 2, 20))
            kwargs["clean_start"] = False
        try:
            self.client.connect_async(
                s.host, s.port, keepalive=s.keepalive_s, properties=properties, **kwargs
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(f"collector.host {s.host}: {exc}") from None
        self.client.loop_start()

    def _take(self, signals: Signals, first_wait_s: float) -> list[Received]:
        """Take what arrived, up to ``batch_size``: waiting at most ``first_wait_s`` for a first
        message, then at most ``batch_wait_ms`` for the batch to fill."""
        batch: list[Received] = []
        size = self.settings.batch_size
        until = time.monotonic() + first_wait_s
        filling = False
        while True:
            self._wake.clear()  # before looking: what arrives after it sets it again
            arrived = self._arrived
            while arrived and len(batch) < size:
                batch.append(arrived.popleft())
            if len(batch) >= size or signals.stop.is_set():
                return batch
            if batch and not filling:
                filling = True
                until = time.monotonic() + self.settings.batch_wait_ms / 1000
            left = until - time.monotonic()
            if left <= 0:
                return batch
            self._wake.wait(left)

    def _store(self, database: FleetDatabase, ingest: Ingest, batch: list[Received]) -> None:
        now_ns = time.time_ns()
        items = [r.item for r in batch if r.item is not None]
        statuses = [r.status for r in batch if r.status is not None]
        for r in batch:
            if r.bad is not None:
                logger.warning("dropped a message: %s", r.bad)
        if items:
            ingest.ingest(database.engine, items, now_ns)
        if statuses:
            with database.engine.begin() as connection:
                for gateway, status in statuses:
                    store_status(connection, gateway, status, now_ns)

    def _housekeeping(self, database: FleetDatabase, ingest: Ingest) -> None:
        now_ns = time.time_ns()
        infos, self._infos = self._infos, {}
        try:
            ingest.ensure_partitions(database.engine, months_from(now_ns, MONTHS_AHEAD + 1))
            with database.engine.begin() as connection:
                if infos:
                    ids = ingest.meter_ids(connection, infos, now_ns)
                    for key, info in sorted(infos.items()):
                        store_meter_info(
                            connection, ids[key], model=info.get("model"), state=info.get("state")
                        )
                resends = claim_resends(connection, now_ns) if self.settings.resend else []
                for gap in report_gaps(connection, now_ns):
                    logger.warning(
                        "meter %d: %s seq %d..%d missing",
                        gap.meter_id,
                        gap.kind,
                        gap.first_seq,
                        gap.last_seq,
                    )
            if infos:
                ingest.committed(ids)
            self._ask(resends)
            self.last_commit_ns = time.time_ns()  # states and gaps: the pages may change
            self._notify()
        except (SQLAlchemyError, SinkError) as exc:
            logger.error("housekeeping failed (will retry): %s", first_line(exc))
            for key, info in infos.items():  # keep what is newer, or put it back
                self._infos.setdefault(key, {}).update(
                    {k: v for k, v in info.items() if k not in self._infos.get(key, {})}
                )

    def run(self, signals: Signals, notifier: Notifier | None = None) -> int:
        """Collect until SIGTERM / SIGINT; return the exit status."""
        url = database_url(self.settings)
        database = FleetDatabase(url, upgrade=True)
        ingest = Ingest()
        notifier = notifier or Notifier()
        self.start()
        notifier.ready(f"collecting into {database.name}")
        logger.info("collecting into %s", database.name)
        self._notify()
        pending: list[Received] = []
        retry_s = 0.0
        next_housekeeping = next_watchdog = time.monotonic()
        last_report = time.monotonic()
        try:
            while not signals.stop.is_set():
                if time.monotonic() >= next_watchdog:
                    notifier.watchdog()
                    next_watchdog = time.monotonic() + 1.0
                if time.monotonic() >= next_housekeeping:
                    self._housekeeping(database, ingest)
                    next_housekeeping = next_watchdog = time.monotonic() + HOUSEKEEPING_S
                if not pending:
                    pending = self._take(signals, 0.2)
                    if not pending:
                        continue
                try:
                    self._store(database, ingest, pending)
                except (SQLAlchemyError, SinkError) as exc:
                    # Not acknowledged: kept here and tried again; were we killed meanwhile,
                    # the broker would deliver them again.
                    retry_s = min(RETRY_MAX_S, max(0.5, retry_s * 2))
                    logger.error(
                        "could not store %d messages (retrying in %.1f s): %s",
                        len(pending),
                        retry_s,
                        first_line(exc),
                    )
                    signals.wait(retry_s)
                    continue
                retry_s = 0.0
                self._ack(pending)
                self.stored += len(pending)
                self.last_commit_ns = time.time_ns()
                self._notify()
                pending = []
                if time.monotonic() - last_report >= 60:
                    logger.info("%d messages stored so far", self.stored)
                    last_report = time.monotonic()
            # What discovery and retained states said since the last round is kept too: a run
            # shorter than one round would otherwise store no meter's model.
            self._housekeeping(database, ingest)
        finally:
            self._stopping = True
            notifier.stopping()
            self.client.disconnect()
            self.client.loop_stop()
            database.close()
        logger.info("stopped; %d messages stored", self.stored)
        return 0
