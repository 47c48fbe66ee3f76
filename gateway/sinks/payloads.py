"""What the gateway publishes, as plain dicts (SPEC section 5): pure, no I/O, no paho.

- :func:`state_payload`: a meter's retained state; :func:`signed_state` adds this database's
  identity to it, and :func:`judge_retained_state` says what a state found on the broker is;
- :func:`interval_payload` and :func:`event_payload`: the outbox's messages, numbered by ``seq``;
- :func:`read_payload`: a billing read, as ``amr/<gw>/<meter>/read`` and ``bill`` show it, with
  :func:`peak_kw`, a stored peak's demand;
- :func:`discovery_messages`: Home Assistant's discovery configuration of one meter.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from gateway import __version__
from gateway.core.events import Event
from gateway.core.intervals import Interval
from gateway.core.meter import Reading
from gateway.timefmt import NS_PER_US, format_iso, parse_time_ns
from meter_model.units import lcd_kwh, round_kw


@dataclass(frozen=True)
class MeterInfo:
    """What discovery says about a meter."""

    name: str
    model: str


def state_payload(
    reading: Reading, energy_wh: int, quality: str, energy_time_ns: int | None
) -> dict[str, Any]:
    """Return a meter's state message.

    ``energy_wh`` is the total it may show (the committed one, floored: see
    :mod:`gateway.sinks.publisher`) and ``energy_time_ns`` the meter's time that total is for,
    which lags ``time`` (the reading's, for power and demand) by up to a commit interval; None
    when not known.
    """
    peak = reading.peak
    return {
        "time": format_iso(reading.t_ns),
        "energy_wh": energy_wh,
        "energy_time": None if energy_time_ns is None else format_iso(energy_time_ns),
        "energy_kwh": energy_wh / 1000,
        "power_kw": round(reading.power_kw, 3),
        "demand_kw": float(round_kw(reading.demand_kw)),
        "peak_demand_kw": float(round_kw(peak.demand_kw)) if peak else 0.0,
        "peak_demand_end": format_iso(peak.window_end_us * NS_PER_US) if peak else None,
        # Since when the peak was measured: counting's start or the last reset (a billing
        # read, the key switch, an MQTT command), so two peaks can be compared.
        "peak_demand_since": None
        if reading.peak_since_ns is None
        else format_iso(reading.peak_since_ns),
        "lcd_kwh": lcd_kwh(energy_wh),
        "quality": quality,
    }


# The most a state can say: nine LCD digits of kWh. Anything more is absurd, not a total.
MAX_STATE_WH = 999_999_999_999
MAX_STATE_CHARS = 4096  # ours are about 300; a longer one is not a state of ours
_HEX_ID = re.compile(r"[0-9a-f]{32}", re.ASCII)


@dataclass(frozen=True)
class DatabaseIdentity:
    """Who published a state: ``database_id`` is public, ``secret`` never leaves the database."""

    database_id: str
    secret: str  # hex


@dataclass(frozen=True)
class OwnState:
    """A retained state this database published: a floor for what it publishes next."""

    energy_wh: int
    energy_time: str | None  # as published (the signature covers it)


@dataclass(frozen=True)
class Conflict:
    """A well-formed state some other database published on this meter's topic."""

    database_id: str | None
    detail: str


@dataclass(frozen=True)
class Malformed:
    """Not a state at all (or an absurd one): ignored."""

    detail: str


def _signature(identity: DatabaseIdentity, meter: str, energy_wh: int, time: Any) -> str:
    message = f"{identity.database_id}\n{meter}\n{energy_wh}\n{time}".encode()
    return hmac.new(bytes.fromhex(identity.secret), message, hashlib.sha256).hexdigest()[:32]


def signed_state(payload: dict[str, Any], meter: str, identity: DatabaseIdentity) -> dict[str, Any]:
    """Return a state message with the database's id and its signature of the total added.

    The signature covers the meter, the total and its time: a copy on another meter's topic,
    or with another number, is not this database's.
    """
    energy_wh, energy_time = payload["energy_wh"], payload.get("energy_time")
    return {
        **payload,
        "database_id": identity.database_id,
        "signature": _signature(identity, meter, energy_wh, energy_time),
    }


def judge_retained_state(
    text: str, meter: str, identity: DatabaseIdentity
) -> OwnState | Conflict | Malformed:
    """Say what a state found on a meter's state topic is: ours, another's, or no state.

    Anything may arrive there (anyone who may publish on the broker can put it there), so
    nothing here raises, and nothing but a state this database signed is ever taken as ours.
    """
    if len(text) > MAX_STATE_CHARS:
        return Malformed(f"{len(text)} characters")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return Malformed("not JSON")
    if not isinstance(data, dict):
        return Malformed("not a JSON object")
    energy_wh = data.get("energy_wh")
    # bool is an int to Python; 1e400 is a float (inf), which int() cannot take.
    if type(energy_wh) is not int or not 0 <= energy_wh <= MAX_STATE_WH:
        return Malformed(f"energy_wh is not a whole number of Wh from 0 to {MAX_STATE_WH}")
    database_id = data.get("database_id")
    if database_id is None:
        return Conflict(None, "a state with no database_id (another gateway, or an older one)")
    if not isinstance(database_id, str) or not _HEX_ID.fullmatch(database_id):
        return Malformed("database_id is not 32 hexadecimal digits")
    if database_id != identity.database_id:
        return Conflict(database_id, f"a state of another database ({database_id})")
    energy_time = data.get("energy_time")
    signature = data.get("signature")
    expected = _signature(identity, meter, energy_wh, energy_time)
    if not isinstance(signature, str) or not hmac.compare_digest(signature, expected):
        return Conflict(None, "a state that carries this database's id but is not signed by it")
    return OwnState(energy_wh, energy_time)


def energy_time_ns(state: OwnState) -> int | None:
    """Return the time an own state's total is for (None: it did not say)."""
    if not isinstance(state.energy_time, str):
        return None
    try:
        return parse_time_ns(state.energy_time)
    except ValueError:
        return None


def interval_payload(interval: Interval, seq: int) -> dict[str, Any]:
    """Return the message of a closed interval."""
    return {
        "meter": interval.meter,
        "start": format_iso(interval.start_ns),
        "end": format_iso(interval.end_ns),
        "energy_wh": interval.energy_wh,
        "edges": interval.edges,
        "demand_kw": float(round_kw(interval.demand_kw)),
        "quality": interval.quality,
        "seq": seq,
    }


def event_payload(meter: str, item: Event, seq: int | None) -> dict[str, Any]:
    """Return the message of an event (``seq`` None: sent at once, outside the outbox)."""
    return {
        "meter": meter,
        "time": format_iso(item.t_ns),
        "kind": str(item.kind),
        "channel": item.channel,
        "detail": item.detail,
        "missed_wh": item.missed_wh,
        "seq": seq,
    }


def discovery_messages(
    base_topic: str, discovery_prefix: str, gateway_id: str, meter: MeterInfo
) -> list[tuple[str, dict[str, Any]]]:
    """Return the Home Assistant discovery topics and payloads for one meter.

    One device per meter; energy works in the Energy dashboard as published (device class
    energy, state class total_increasing, kWh). ``default_entity_id`` replaces the deprecated
    ``object_id``; releases that do not know it drop it (unknown top-level keys are removed),
    whereas an unknown key inside ``device`` or ``origin`` makes them drop the whole config:
    every key here is one that Home Assistant 2024.1, the oldest supported, accepts (checked
    with its own schema by tests/integration/test_ha_discovery.py).
    """
    base = f"{base_topic}/{gateway_id}"
    # Gateway ids and meter names are [A-Za-z0-9_-], valid in a node id as they are, and kept
    # as they are so that distinct names never collide; entity ids are slugs (lower case, _).
    node = f"amr_{gateway_id}_{meter.name}"
    slug = node.lower().replace("-", "_")
    # No model_id (2024.8+; older releases reject the config): the model number goes in
    # "model", which every release shows as "Series 2000 (2O208-4W) by Leviton", the way
    # 2024.8+ shows a model and its model_id.
    device = {
        "identifiers": [f"amr-gateway_{gateway_id}_{meter.name}"],
        "name": f"Meter {meter.name}",
        "manufacturer": "Leviton",
        "model": f"Series {meter.model[:1]}000 ({meter.model})",
    }
    common = {
        "state_topic": f"{base}/{meter.name}/state",
        "availability_topic": f"{base}/status",
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device,
        "origin": {"name": "amr-gateway", "sw_version": __version__},
        "has_entity_name": True,
    }
    sensors: list[tuple[str, str, dict[str, Any]]] = [
        (
            "energy",
            "Energy",
            {
                "device_class": "energy",
                "state_class": "total_increasing",
                "unit_of_measurement": "kWh",
                "suggested_display_precision": 3,
                "value_template": "{{ value_json.energy_kwh }}",
            },
        ),
        (
            "power",
            "Power",
            {
                "device_class": "power",
                "state_class": "measurement",
                "unit_of_measurement": "kW",
                "suggested_display_precision": 2,
                "value_template": "{{ value_json.power_kw }}",
            },
        ),
        (
            "demand",
            "Demand",
            {
                "device_class": "power",
                "state_class": "measurement",
                "unit_of_measurement": "kW",
                "suggested_display_precision": 2,
                "value_template": "{{ value_json.demand_kw }}",
            },
        ),
        (
            "peak_demand",
            "Peak demand",
            {
                "device_class": "power",
                "state_class": "measurement",
                "unit_of_measurement": "kW",
                "suggested_display_precision": 2,
                "value_template": "{{ value_json.peak_demand_kw }}",
            },
        ),
        (
            "quality",
            "Quality",
            {
                "entity_category": "diagnostic",
                "icon": "mdi:check-decagram",
                "value_template": "{{ value_json.quality }}",
            },
        ),
    ]
    messages = []
    for key, name, extra in sensors:
        unique = f"{node}_{key}"
        payload = {
            **common,
            "name": name,
            "unique_id": unique,
            "default_entity_id": f"sensor.{slug}_{key}",
            **extra,
        }
        messages.append((f"{discovery_prefix}/sensor/{node}/{key}/config", payload))
    return messages


def peak_kw(energy_wh: int | None, window_s: int) -> Fraction | None:
    """Return a window's demand in kW, exactly: its energy over its length."""
    return None if energy_wh is None else Fraction(energy_wh * 3600, window_s * 1000)


def read_payload(
    meter: str, columns: dict[str, Any], seq: int, reconciliation: dict[str, Any] | None
) -> dict[str, Any]:
    """Return a read as ``amr/<gw>/<meter>/read`` and ``bill --format json`` show it."""
    demand = peak_kw(columns["peak_window_energy_wh"], columns["peak_window_s"])
    end_ns = columns["peak_window_end_ns"]
    low, high = columns["estimate_low_wh"], columns["estimate_high_wh"]
    return {
        "meter": meter,
        "period": columns["period"],
        "start": format_iso(columns["start_ns"]),
        "end": format_iso(columns["t_ns"]),
        "register_wh": columns["register_wh"],
        "lcd_kwh": columns["register_wh"] // 1000,
        "energy_wh": columns["energy_wh"],
        "energy_kwh": columns["energy_wh"] / 1000,
        "edges": columns["edges"],
        "register": columns["register_channel"],
        "peak_demand_kw": None if demand is None else float(round_kw(demand)),
        "peak_demand_end": None if end_ns is None else format_iso(end_ns),
        "peak_partial": columns["peak_partial"],
        "peak_reset": demand is not None,
        "quality": columns["quality"],
        "gap_minutes": round(columns["gap_s"] / 60, 1),
        "glitches": columns["glitches"],
        "inferred_edges": columns["inferred"],
        "mismatches": columns["mismatches"],
        "estimated_energy_wh": None
        if low is None
        else {"low": low, "high": high, "from": columns["estimate_from"]},
        "last_reconciliation": reconciliation,
        "seq": seq,
    }
