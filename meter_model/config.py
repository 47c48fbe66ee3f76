"""Configurations of Leviton Series 1000 and 2000 meters, and the model-number parser.

Everything here is read off the manual (sections 2.1 and 3) or SPEC section 1. Where the manual is
silent the rule taken is written beside it. In particular the manual does not say what the letters
K, N and O after the series digit mean: they are kept as ``variant`` and given no meaning, and
whether a meter has the demand display is a separate setting, never derived from the model number.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum, IntEnum

from meter_model.errors import OutOfRangeError, UnknownModelError


class Series(IntEnum):
    """The meter family, from the model number's first digit."""

    S1000 = 1
    S2000 = 2


class Service(Enum):
    """The electrical services the manual lists (Tables 1 and 2)."""

    SINGLE_PHASE_2W = "1-phase 2-wire"
    SINGLE_PHASE_3W = "1-phase 3-wire"
    TWO_PHASE_3W = "2-phase 3-wire"
    WYE_3P4W = "3-phase 4-wire wye"
    DELTA_3P4W = "3-phase 4-wire grounded delta"


@dataclass(frozen=True)
class VoltageRange:
    """An inclusive range of line-to-neutral supply voltage in volts."""

    min_v: float
    max_v: float

    def __str__(self) -> str:
        return f"{self.min_v:g}-{self.max_v:g} V"


@dataclass(frozen=True)
class Line:
    """One voltage input: its nominal line-to-neutral voltage, phase angle and supply range."""

    name: str
    nominal_v: float
    angle_deg: float
    supply: VoltageRange


LOW = VoltageRange(102.0, 138.0)  # 120 V nominal
HIGH = VoltageRange(235.0, 320.0)  # 277 V nominal
HIGH_LEG = VoltageRange(175.0, 240.0)  # grounded delta line 3, the high leg
# Table 2 also lists 295-400 VAC for Series 2000 wye, but no voltage option in the manual uses it,
# so no model number selects it; it is kept here so the table is complete.
WYE_EXTRA = VoltageRange(295.0, 400.0)

SUPPLY_RANGES: dict[Series, tuple[VoltageRange, ...]] = {
    Series.S1000: (LOW, HIGH),
    Series.S2000: (LOW, HIGH, WYE_EXTRA, HIGH_LEG),
}

# Line frequency (Tables 1 and 2): Series 1000 50-60 Hz, Series 2000 60 Hz only.
FREQUENCY_RANGE_HZ: dict[Series, tuple[float, float]] = {
    Series.S1000: (50.0, 60.0),
    Series.S2000: (60.0, 60.0),
}

POWER_FACTOR_MIN = 0.5  # 0.5 to 1.0, leading or lagging
OVERLOAD_FACTOR = 1.10  # maximum primary current: rating + 10 %
CT_SECONDARY_RATED_A = 0.100
CT_SECONDARY_MAX_A = 0.12
CT_BURDEN_OHM = 2.0
ACCURACY_PF1_PCT = 0.5  # ANSI C12.10, 1 % to 100 % of rated current
ACCURACY_PF05_PCT = 0.75
REVERSE_LED_MIN_LOAD_A = 1.0  # section 3.8: the LED needs a load of at least 1 A


def _lines(*specs: tuple[float, float, VoltageRange]) -> tuple[Line, ...]:
    return tuple(
        Line(f"L{i}", nominal, angle, supply) for i, (nominal, angle, supply) in enumerate(specs, 1)
    )


# Phase angles are not in the manual; they follow from the voltages it names. 120/240 is one phase
# centre-tapped (lines 180 degrees apart); 120/208 and 277/480 on three wires are two legs of a wye
# (120 degrees apart, since 208 = 120 * sqrt 3); a wye has ABC rotation at 0, -120, +120 degrees;
# the grounded (high-leg) delta is a centre-tapped 240 V winding, L1 and L2 at 0 and 180 degrees,
# with the high leg L3 at -90 degrees and 120 * sqrt 3 = 208 V to neutral.
_HIGH_LEG_V = 120.0 * math.sqrt(3.0)


@dataclass(frozen=True)
class VoltageOption:
    """A service voltage such as ``120/208``: its service type and its lines."""

    name: str
    service: Service
    lines: tuple[Line, ...]


VOLTAGE_OPTIONS: dict[Series, dict[str, tuple[VoltageOption, ...]]] = {
    Series.S1000: {
        "120": (VoltageOption("120", Service.SINGLE_PHASE_2W, _lines((120.0, 0.0, LOW))),),
        "277": (VoltageOption("277", Service.SINGLE_PHASE_2W, _lines((277.0, 0.0, HIGH))),),
        "240": (
            VoltageOption(
                "120/240", Service.SINGLE_PHASE_3W, _lines((120.0, 0.0, LOW), (120.0, 180.0, LOW))
            ),
        ),
        "208": (
            VoltageOption(
                "120/208", Service.TWO_PHASE_3W, _lines((120.0, 0.0, LOW), (120.0, -120.0, LOW))
            ),
        ),
        "480": (
            VoltageOption(
                "277/480", Service.TWO_PHASE_3W, _lines((277.0, 0.0, HIGH), (277.0, -120.0, HIGH))
            ),
        ),
    },
    Series.S2000: {
        # The first option for a code is the default; -4W with 208 is also the grounded delta.
        "208": (
            VoltageOption(
                "120/208",
                Service.WYE_3P4W,
                _lines((120.0, 0.0, LOW), (120.0, -120.0, LOW), (120.0, 120.0, LOW)),
            ),
            VoltageOption(
                "120/208",
                Service.DELTA_3P4W,
                _lines((120.0, 0.0, LOW), (120.0, 180.0, LOW), (_HIGH_LEG_V, -90.0, HIGH_LEG)),
            ),
        ),
        "480": (
            VoltageOption(
                "277/480",
                Service.WYE_3P4W,
                _lines((277.0, 0.0, HIGH), (277.0, -120.0, HIGH), (277.0, 120.0, HIGH)),
            ),
        ),
    },
}

# Wires per service: the "-4W" style suffix of a model number must agree when present.
WIRES: dict[Service, int] = {
    Service.SINGLE_PHASE_2W: 2,
    Service.SINGLE_PHASE_3W: 3,
    Service.TWO_PHASE_3W: 3,
    Service.WYE_3P4W: 4,
    Service.DELTA_3P4W: 4,
}

# The manual covers "Models beginning with 1K, 1N, 1O, 2K, 2N and 2O". A suffix may follow the
# wire count only: "2O208-4X" is a mistyped wire count, not a suffix.
_MODEL_RE = re.compile(
    r"^(?P<series>[12])(?P<variant>[KNO])(?P<voltage>\d{3})"
    r"(?:-(?P<wires>\d+)W(?P<suffix>(?:-[A-Z0-9]+)*))?$"
)
# Letters and digits that look alike, by what the position expects.
_AS_DIGIT = str.maketrans("OQDILSZB", "00011528")
_AS_LETTER = str.maketrans("0", "O")


@dataclass(frozen=True)
class ModelNumber:
    """A parsed model number; ``variant`` and ``suffix`` are kept, not interpreted."""

    text: str
    series: Series
    variant: str
    voltage_code: str
    wires: int | None
    suffix: str


def parse_model_number(text: str) -> ModelNumber:
    """Parse a model number such as ``2O208-4W``; raise UnknownModelError if it is not one."""
    normalized = text.strip().upper()
    match = _MODEL_RE.match(normalized)
    if match is None:
        raise UnknownModelError(
            text,
            "expected a series digit 1 or 2, a letter K, N or O, a three-digit voltage code and an "
            "optional wire count such as -4W (e.g. 2O208-4W)" + _did_you_mean(normalized),
        )
    series = Series(int(match["series"]))
    code = match["voltage"]
    if code not in VOLTAGE_OPTIONS[series]:
        known = ", ".join(sorted(VOLTAGE_OPTIONS[series]))
        raise UnknownModelError(
            text, f"voltage code {code} is not a Series {series.value}000 option ({known})"
        )
    wires = int(match["wires"]) if match["wires"] else None
    if wires is not None and all(WIRES[o.service] != wires for o in VOLTAGE_OPTIONS[series][code]):
        raise UnknownModelError(
            text, f"a Series {series.value}000 {code} V meter is not a {wires}-wire meter"
        )
    return ModelNumber(normalized, series, match["variant"], code, wires, match["suffix"] or "")


def model_numbers() -> list[str]:
    """Return every model number the manual's tables allow, with its wire count."""
    return [
        f"{series.value}{variant}{code}-{WIRES[option.service]}W"
        for series, codes in VOLTAGE_OPTIONS.items()
        for code, options in codes.items()
        for option in options
        for variant in "KNO"
    ]


def _did_you_mean(text: str) -> str:
    """Return "; did you mean MODEL?" for the closest valid model number, or ""."""
    import difflib

    valid = sorted(set(model_numbers()))
    # Letter O for digit 0 and the like first: "20208-4W" is "2O208-4W".
    head = text[:1].translate(_AS_DIGIT) + text[1:2].translate(_AS_LETTER)
    repaired = head + text[2:5].translate(_AS_DIGIT) + text[5:]
    if repaired != text:
        try:
            return f"; did you mean {parse_model_number(repaired).text}?"
        except UnknownModelError:
            pass
    close = difflib.get_close_matches(repaired, valid, n=3, cutoff=0.6)
    # Among equally close ones, keep the letter that was typed (K, N and O share the tables).
    close.sort(
        key=lambda m: (-difflib.SequenceMatcher(None, repaired, m).ratio(), m[1] != repaired[1:2])
    )
    return f"; did you mean {close[0]}?" if close else ""


@dataclass(frozen=True)
class MeterConfig:
    """One meter as installed: its model, service, CT rating and display option."""

    model: ModelNumber
    voltage: VoltageOption
    ct_rating_a: float
    has_demand: bool = True

    @classmethod
    def from_model(
        cls,
        model: str,
        *,
        ct_rating_a: float = 200.0,
        service: Service | None = None,
        has_demand: bool = True,
    ) -> MeterConfig:
        """Build a configuration from a model number and the installed CTs' primary rating.

        ``service`` picks between services sharing a model number (a Series 2000 120/208 meter
        is wye unless the grounded delta is asked for).
        """
        parsed = parse_model_number(model)
        options = VOLTAGE_OPTIONS[parsed.series][parsed.voltage_code]
        if parsed.wires is not None:
            options = tuple(o for o in options if WIRES[o.service] == parsed.wires)
        if service is not None:
            options = tuple(o for o in options if o.service is service)
            if not options:
                raise UnknownModelError(model, f"a {parsed.text} meter is not for {service.value}")
        if not ct_rating_a > 0 or not math.isfinite(ct_rating_a):
            raise OutOfRangeError("CT rating", f"{ct_rating_a} A", "a positive primary current")
        return cls(parsed, options[0], float(ct_rating_a), has_demand)

    @property
    def series(self) -> Series:
        return self.model.series

    @property
    def service(self) -> Service:
        return self.voltage.service

    @property
    def lines(self) -> tuple[Line, ...]:
        return self.voltage.lines

    @property
    def max_current_a(self) -> float:
        """Return the largest primary current the meter accepts: rating + 10 %."""
        return self.ct_rating_a * OVERLOAD_FACTOR

    @property
    def frequency_range_hz(self) -> tuple[float, float]:
        return FREQUENCY_RANGE_HZ[self.series]

    @property
    def max_power_kw(self) -> float:
        """Return the largest active power the meter can see: every line at its supply maximum
        carrying its maximum current at unity power factor."""
        return sum(line.supply.max_v for line in self.lines) * self.max_current_a / 1000.0

    @property
    def nominal_max_power_kw(self) -> float:
        """Return the power of a balanced unity-PF load at nominal voltage and max current."""
        return sum(line.nominal_v for line in self.lines) * self.max_current_a / 1000.0
