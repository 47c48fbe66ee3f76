"""What the meter measures: per-line loads, CT installation, and active power from phasors.

Each metering element k multiplies the voltage on its own voltage input (line k) by the current
through CT k. If CT k sits on line j, it carries line j's current, which lags (or leads) line j's
voltage by the load's power-factor angle. Hence the manual's symptoms (section 5, Troubleshooting):

- a reversed CT subtracts its element's power, so registration falls;
- a CT on the wrong line multiplies by a voltage 120 or 180 degrees away, so registration falls;
- the reverse-phase LED lights when the net power runs backwards with at least 1 A of load, so one
  reversed CT on a balanced three-phase load registers a third of the load with the LED dark.

Modelling rules where the manual is silent (also in docs/meter-model.md):

- "1 A of load" is the largest primary current on any line.
- A line below its supply range leaves the meter unpowered (it is self-powered and the manual
  does not say which line feeds it, so any line dropping out stops it); above the range is an
  error, as is a negative voltage.
- The registration error of a unit is given at PF 1.0 and PF 0.5 and interpolated linearly in
  between; each element's error follows its own power factor.
- Power is rounded to the milliwatt; energy is then integrated exactly.
"""

from __future__ import annotations

import cmath
import math
from dataclasses import dataclass, field

from meter_model.config import (
    ACCURACY_PF05_PCT,
    ACCURACY_PF1_PCT,
    POWER_FACTOR_MIN,
    REVERSE_LED_MIN_LOAD_A,
    MeterConfig,
)
from meter_model.errors import OutOfRangeError


@dataclass(frozen=True)
class LineLoad:
    """The load on one line: voltage to neutral, primary current and its power factor."""

    voltage_v: float
    current_a: float = 0.0
    power_factor: float = 1.0
    leading: bool = False


@dataclass(frozen=True)
class CtInstall:
    """Where CT k sits: on which line (1-based) and whether it is turned the wrong way."""

    line: int
    reversed: bool = False


@dataclass(frozen=True)
class Inputs:
    """Everything the meter sees at one moment. ``cts`` defaults to CT k on line k, oriented."""

    lines: tuple[LineLoad, ...]
    cts: tuple[CtInstall, ...] | None = None
    frequency_hz: float = 60.0


@dataclass(frozen=True)
class Accuracy:
    """A unit's registration error in percent, inside the ANSI C12.10 class of the manual."""

    error_pf1_pct: float = 0.0
    error_pf05_pct: float = 0.0

    def __post_init__(self) -> None:
        for name, value, limit in (
            ("registration error at PF 1.0", self.error_pf1_pct, ACCURACY_PF1_PCT),
            ("registration error at PF 0.5", self.error_pf05_pct, ACCURACY_PF05_PCT),
        ):
            if not -limit <= value <= limit:
                raise OutOfRangeError(name, f"{value} %", f"-{limit} % to +{limit} %")

    def error_pct(self, power_factor: float) -> float:
        """Return the error at a power factor, interpolated linearly between PF 0.5 and 1.0."""
        pf = min(max(power_factor, POWER_FACTOR_MIN), 1.0)
        weight = (1.0 - pf) / (1.0 - POWER_FACTOR_MIN)
        return self.error_pf1_pct + weight * (self.error_pf05_pct - self.error_pf1_pct)


@dataclass(frozen=True)
class Measurement:
    """What the meter makes of its inputs."""

    powered: bool
    element_power_w: tuple[float, ...]
    registered_power_mw: int  # what the register integrates: never negative
    reverse_led: bool
    net_power_w: float = field(default=0.0)


def validate(config: MeterConfig, inputs: Inputs) -> None:
    """Raise OutOfRangeError naming the first quantity outside what the meter allows."""
    lines = config.lines
    if len(inputs.lines) != len(lines):
        raise OutOfRangeError(
            "number of lines", len(inputs.lines), f"{len(lines)} for {config.service.value}"
        )
    low_hz, high_hz = config.frequency_range_hz
    if not low_hz <= inputs.frequency_hz <= high_hz:
        allowed = f"{low_hz:g} Hz" if low_hz == high_hz else f"{low_hz:g}-{high_hz:g} Hz"
        raise OutOfRangeError("line frequency", f"{inputs.frequency_hz:g} Hz", allowed)
    for line, load in zip(lines, inputs.lines, strict=True):
        if not 0.0 <= load.voltage_v <= line.supply.max_v:
            raise OutOfRangeError(
                f"{line.name} voltage", f"{load.voltage_v:g} V", f"0-{line.supply.max_v:g} V"
            )
        if not 0.0 <= load.current_a <= config.max_current_a:
            raise OutOfRangeError(
                f"{line.name} current",
                f"{load.current_a:g} A",
                f"0-{config.max_current_a:g} A (CT rating {config.ct_rating_a:g} A + 10 %)",
            )
        if not POWER_FACTOR_MIN <= load.power_factor <= 1.0:
            raise OutOfRangeError(
                f"{line.name} power factor", f"{load.power_factor:g}", "0.5-1.0 leading or lagging"
            )
    if inputs.cts is not None:
        if len(inputs.cts) != len(lines):
            raise OutOfRangeError("number of CTs", len(inputs.cts), f"{len(lines)}")
        for k, ct in enumerate(inputs.cts, 1):
            if not 1 <= ct.line <= len(lines):
                raise OutOfRangeError(f"CT{k} line", ct.line, f"1-{len(lines)}")


def measure(config: MeterConfig, inputs: Inputs, accuracy: Accuracy = Accuracy()) -> Measurement:
    """Return the meter's view of ``inputs``: element powers, registration and the LED."""
    validate(config, inputs)
    lines = config.lines
    powered = all(
        load.voltage_v >= line.supply.min_v for line, load in zip(lines, inputs.lines, strict=True)
    )
    if not powered:
        return Measurement(False, tuple(0.0 for _ in lines), 0, False, 0.0)
    cts = inputs.cts or tuple(CtInstall(k) for k in range(1, len(lines) + 1))

    def current_phasor(j: int) -> complex:
        load = inputs.lines[j]
        phi = math.acos(load.power_factor)
        angle = math.radians(lines[j].angle_deg) + (phi if load.leading else -phi)
        return cmath.rect(load.current_a, angle)

    element_w: list[float] = []
    registered_w = 0.0
    for k, ct in enumerate(cts):
        voltage = cmath.rect(inputs.lines[k].voltage_v, math.radians(lines[k].angle_deg))
        current = current_phasor(ct.line - 1)
        if ct.reversed:
            current = -current
        power_w = (voltage * current.conjugate()).real
        element_w.append(power_w)
        apparent = abs(voltage) * abs(current)
        pf = abs(power_w) / apparent if apparent > 0 else 1.0
        registered_w += power_w * (1.0 + accuracy.error_pct(pf) / 100.0)
    net_w = sum(element_w)
    load_a = max(load.current_a for load in inputs.lines)
    # Judge the direction at the milliwatt, like the register, so float noise around a net of
    # exactly 0 W (e.g. two CTs swapped on a balanced load) does not light the LED.
    reverse = round(net_w * 1000.0) < 0 and load_a >= REVERSE_LED_MIN_LOAD_A
    # The register never runs backwards: negative net power registers nothing.
    registered_mw = max(0, round(registered_w * 1000.0))
    return Measurement(True, tuple(element_w), registered_mw, reverse, net_w)


def balanced_inputs(config: MeterConfig, power_kw: float, power_factor: float = 1.0) -> Inputs:
    """Return nominal-voltage inputs carrying ``power_kw`` as equal currents on every line."""
    if power_kw < 0 or not math.isfinite(power_kw):
        raise OutOfRangeError("power", f"{power_kw} kW", "0 kW or more")
    if not POWER_FACTOR_MIN <= power_factor <= 1.0:  # also keeps PF 0 from dividing by zero
        raise OutOfRangeError("power factor", f"{power_factor:g}", "0.5-1.0 leading or lagging")
    volts = sum(line.nominal_v for line in config.lines)
    current_a = power_kw * 1000.0 / (volts * power_factor) if power_kw else 0.0
    if current_a > config.max_current_a:
        raise OutOfRangeError(
            "power",
            f"{power_kw:g} kW",
            f"0-{config.nominal_max_power_kw:g} kW for {config.model.text} with "
            f"{config.ct_rating_a:g} A CTs (rating + 10 %)",
        )
    freq = config.frequency_range_hz[1]
    return Inputs(
        tuple(LineLoad(line.nominal_v, current_a, power_factor) for line in config.lines),
        frequency_hz=freq,
    )
