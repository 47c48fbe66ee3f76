"""The software model of a Leviton Series 1000/2000 kWh meter: pure, deterministic, no I/O."""

from meter_model.config import MeterConfig, ModelNumber, Series, Service, parse_model_number
from meter_model.demand import DemandMeter, DemandSettings, Peak, SubInterval
from meter_model.display import LcdFrame, LcdItem
from meter_model.electrical import Accuracy, CtInstall, Inputs, LineLoad, balanced_inputs, measure
from meter_model.errors import MeterModelError, OutOfRangeError, UnknownModelError
from meter_model.meter import Meter
from meter_model.outputs import CHANNEL_1K, CHANNEL_10, Edge, ProfileEdges, profile_edges

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
]
