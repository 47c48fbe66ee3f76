"""The software model of a Leviton Series 1000/2000 kWh meter: pure, deterministic, no I/O.

Names are imported on first use, so a command that needs only ``meter_model.demand`` does not
pay for the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "MeterConfig": "config",
    "ModelNumber": "config",
    "Series": "config",
    "Service": "config",
    "parse_model_number": "config",
    "DemandMeter": "demand",
    "DemandSettings": "demand",
    "Peak": "demand",
    "SubInterval": "demand",
    "LcdFrame": "display",
    "LcdItem": "display",
    "Accuracy": "electrical",
    "CtInstall": "electrical",
    "Inputs": "electrical",
    "LineLoad": "electrical",
    "balanced_inputs": "electrical",
    "measure": "electrical",
    "MeterModelError": "errors",
    "OutOfRangeError": "errors",
    "UnknownModelError": "errors",
    "Meter": "meter",
    "CHANNEL_10": "outputs",
    "CHANNEL_1K": "outputs",
    "Edge": "outputs",
    "ProfileEdges": "outputs",
    "profile_edges": "outputs",
    "split_steps": "outputs",
}

__all__ = [
    "CHANNEL_1K",
    "CHANNEL_10",
    "Accuracy",
    "CtInstall",
    "DemandMeter",
    "DemandSettings",
    "Edge",
    "Inputs",
    "LcdFrame",
    "LcdItem",
    "LineLoad",
    "Meter",
    "MeterConfig",
    "MeterModelError",
    "ModelNumber",
    "OutOfRangeError",
    "Peak",
    "ProfileEdges",
    "Series",
    "Service",
    "SubInterval",
    "UnknownModelError",
    "balanced_inputs",
    "measure",
    "parse_model_number",
    "profile_edges",
    "split_steps",
]

if TYPE_CHECKING:
    from meter_model.config import MeterConfig, ModelNumber, Series, Service, parse_model_number
    from meter_model.demand import DemandMeter, DemandSettings, Peak, SubInterval
    from meter_model.display import LcdFrame, LcdItem
    from meter_model.electrical import (
        Accuracy,
        CtInstall,
        Inputs,
        LineLoad,
        balanced_inputs,
        measure,
    )
    from meter_model.errors import MeterModelError, OutOfRangeError, UnknownModelError
    from meter_model.meter import Meter
    from meter_model.outputs import (
        CHANNEL_1K,
        CHANNEL_10,
        Edge,
        ProfileEdges,
        profile_edges,
        split_steps,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'meter_model' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"meter_model.{module}"), name)
    globals()[name] = value
    return value
