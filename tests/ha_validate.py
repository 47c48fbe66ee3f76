"""Validate MQTT discovery messages the way Home Assistant does; runs INSIDE a Home Assistant venv.

tests/integration/test_ha_discovery.py runs this script with the interpreter of a venv that has
one ``homeassistant`` release installed, and passes the messages on standard input as JSON::

    {"discovery_prefix": "homeassistant", "messages": [{"topic": "...", "payload": "..."}]}

where each payload is the text published on the topic. For every message it follows the steps
of ``homeassistant/components/mqtt/discovery.py`` (topic match, abbreviations, ``~``, origin)
and then the sensor platform's own ``DISCOVERY_SCHEMA``, which is where Home Assistant drops a
config whole; then it applies the checks the sensor entity makes at run time (device class
against unit and state class, with ``homeassistant.components.sensor``'s tables) and the
entity-name rules of the MQTT entity, and checks that no two messages would make the same
entity. Whatever Home Assistant logs at WARNING or above while validating counts too.

It prints one JSON object: ``{"ha_version", "checked", "errors": [{"topic", "error"}],
"entities": [{"topic", "entity_id", "config"}]}`` and exits 0 when there is no error, 1 when
there is one, 2 on a bad input. Every error is reported, not only the first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import tempfile
from typing import Any

# Some releases (2024.1) have an import cycle websocket_api -> http -> persistent_notification
# -> websocket_api that Home Assistant's start-up never trips over: enter it where it does.
import homeassistant.components.persistent_notification  # noqa: F401
import voluptuous as vol
from homeassistant.components import sensor as ha_sensor
from homeassistant.components.mqtt import discovery
from homeassistant.components.mqtt import sensor as mqtt_sensor
from homeassistant.components.mqtt.abbreviations import (
    ABBREVIATIONS,
    DEVICE_ABBREVIATIONS,
    ORIGIN_ABBREVIATIONS,
)
from homeassistant.const import __version__ as HA_VERSION
from homeassistant.core import HomeAssistant
from homeassistant.helpers import frame
from homeassistant.util import slugify
from homeassistant.util.json import json_loads_object

PLATFORM = "sensor"


class _Collect(logging.Handler):
    """Keep what Home Assistant logs at WARNING or above."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(f"{record.name}: {record.getMessage()}")


def _expand(mapping: dict[str, Any], table: dict[str, str]) -> None:
    for key in list(mapping):
        mapping[table.get(key, key)] = mapping.pop(key)


def _expand_abbreviations(payload: dict[str, Any]) -> None:
    """discovery.py's abbreviation step (a function of its own in later releases)."""
    if hasattr(discovery, "_replace_all_abbreviations"):
        discovery._replace_all_abbreviations(payload)
        return
    _expand(payload, ABBREVIATIONS)
    if isinstance(payload.get("device"), dict):
        _expand(payload["device"], DEVICE_ABBREVIATIONS)
    if isinstance(payload.get("origin"), dict):
        _expand(payload["origin"], ORIGIN_ABBREVIATIONS)
    availability = payload.get("availability")
    for item in availability if isinstance(availability, list) else [availability]:
        if isinstance(item, dict):
            _expand(item, ABBREVIATIONS)


def _replace_topic_base(payload: dict[str, Any]) -> None:
    """discovery.py's ``~`` step."""
    if "~" not in payload:
        return
    if hasattr(discovery, "_replace_topic_base"):
        discovery._replace_topic_base(payload)
        return
    base = payload.pop("~")
    for key, value in payload.items():
        if isinstance(value, str) and value and key.endswith("topic"):
            if value[0] == "~":
                payload[key] = f"{base}{value[1:]}"
            if value[-1] == "~":
                payload[key] = f"{value[:-1]}{base}"


def _schema_errors(err: vol.Invalid) -> list[str]:
    errors = err.errors if isinstance(err, vol.MultipleInvalid) else [err]
    out = []
    for e in errors:
        path = ".".join(str(p) for p in e.path) or "<config>"
        out.append(f"DISCOVERY_SCHEMA rejects the config: {e.msg} @ {path}")
    return out


def _sensor_checks(config: dict[str, Any]) -> list[str]:
    """What the sensor entity checks at run time, with homeassistant.components.sensor's tables."""
    errors = []
    device_class = config.get("device_class")
    unit = config.get("unit_of_measurement")
    state_class = config.get("state_class")
    if device_class in ha_sensor.NON_NUMERIC_DEVICE_CLASSES and (unit or state_class):
        errors.append(f"device class {device_class} is not numeric: no unit or state class")
    units = ha_sensor.DEVICE_CLASS_UNITS.get(device_class) if device_class else None
    if units is not None and unit not in units:
        errors.append(
            f"unit {unit!r} is not valid for device class {device_class}: "
            f"one of {sorted(u for u in units if u is not None)}"
        )
    classes = ha_sensor.DEVICE_CLASS_STATE_CLASSES.get(device_class) if device_class else None
    if state_class and classes is not None and state_class not in classes:
        errors.append(
            f"state class {state_class} is impossible for device class {device_class}: "
            f"one of {sorted(str(c) for c in classes)}"
        )
    if config.get("suggested_display_precision") is not None and not (unit or state_class):
        errors.append("suggested_display_precision on a sensor that is not numeric")
    return errors


def _name_checks(config: dict[str, Any]) -> list[str]:
    """The MQTT entity's name rules (it logs and raises a repair issue otherwise)."""
    name = config.get("name")
    device_name = (config.get("device") or {}).get("name")
    if not isinstance(name, str) or not device_name:
        return []
    if name == device_name:
        return [f"entity name {name!r} is the device name"]
    if name.startswith(device_name):
        return [f"entity name {name!r} starts with the device name {device_name!r}"]
    return []


def _entity_id(config: dict[str, Any]) -> str:
    """The entity id this release would give the entity (before any _2 suffix)."""
    if config.get("default_entity_id"):  # kept by the schema only where it is known
        return str(config["default_entity_id"])
    if config.get("object_id"):
        return f"{PLATFORM}.{slugify(config['object_id'])}"
    device_name = (config.get("device") or {}).get("name")
    name = config.get("name")
    parts = [p for p in (device_name, name) if p]
    return f"{PLATFORM}.{slugify(' '.join(parts)) or 'unnamed_device'}"


def validate(prefix: str, messages: list[dict[str, str]]) -> dict[str, Any]:
    collect = _Collect()
    logging.getLogger("homeassistant").addHandler(collect)
    errors: list[dict[str, str]] = []
    entities: list[dict[str, Any]] = []
    seen_hashes: dict[tuple[str, str], str] = {}
    seen_unique: dict[str, str] = {}
    seen_entity: dict[str, str] = {}
    checked = 0
    for message in messages:
        topic, text = message["topic"], message["payload"]

        def fail(error: str, topic: str = topic) -> None:
            errors.append({"topic": topic, "error": error})

        collect.records.clear()
        if not topic.startswith(f"{prefix}/"):
            fail(f"topic is not under the discovery prefix {prefix!r}")
            continue
        match = discovery.TOPIC_MATCHER.match(topic[len(prefix) + 1 :])
        if match is None:
            fail("topic does not match Home Assistant's discovery topic pattern")
            continue
        component, node_id, object_id = match.groups()
        if component != PLATFORM:
            fail(f"component {component!r}: this check covers {PLATFORM} only")
            continue
        try:
            payload: dict[str, Any] = json_loads_object(text)
        except ValueError as exc:
            fail(f"payload is not a JSON object: {exc}")
            continue
        _expand_abbreviations(payload)
        if "origin" in payload:
            try:
                discovery.MQTT_ORIGIN_INFO_SCHEMA(payload["origin"])
            except vol.Invalid as exc:
                fail(f"origin rejected (the whole message is dropped): {exc}")
                continue
        _replace_topic_base(payload)
        payload["platform"] = "mqtt"
        checked += 1
        try:
            config = mqtt_sensor.DISCOVERY_SCHEMA(payload)
        except vol.Invalid as exc:
            for error in _schema_errors(exc):
                fail(error)
            continue
        for error in [*_sensor_checks(config), *_name_checks(config)]:
            fail(error)
        for record in collect.records:
            fail(f"Home Assistant logged: {record}")
        discovery_hash = (component, f"{node_id} {object_id}" if node_id else object_id)
        entity_id = _entity_id(config)
        for key, seen, what in (
            (discovery_hash, seen_hashes, "discovery id"),
            (config.get("unique_id"), seen_unique, "unique_id"),
            (entity_id, seen_entity, "entity id"),
        ):
            if key is None:
                continue
            if key in seen:
                fail(f"{what} {key} is also the one of {seen[key]}")
            seen[key] = topic
        entities.append(
            {
                "topic": topic,
                "entity_id": entity_id,
                "config": json.loads(json.dumps(config, default=str)),
            }
        )
    return {"ha_version": HA_VERSION, "checked": checked, "errors": errors, "entities": entities}


async def _validate_in_hass(prefix: str, messages: list[dict[str, str]]) -> dict[str, Any]:
    """Validate in the event loop of a (never started) Home Assistant, as discovery does.

    Later releases validate a template against the running instance and complain without one.
    """
    with tempfile.TemporaryDirectory() as config_dir:
        hass = HomeAssistant(config_dir)
        if hasattr(frame, "async_setup"):
            frame.async_setup(hass)
        return validate(prefix, messages)


def main() -> int:
    try:
        request = json.load(sys.stdin)
        prefix = request["discovery_prefix"]
        messages = request["messages"]
    except (ValueError, KeyError, TypeError) as exc:
        print(json.dumps({"error": f"bad input: {exc}"}))
        return 2
    result = asyncio.run(_validate_in_hass(prefix, messages))
    print(json.dumps(result))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
