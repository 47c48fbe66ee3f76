"""A Leviton Series 1000/2000 meter: inputs in, register, outputs, LEDs and LCD out.

Pure and deterministic: the caller passes every time in, as integer microseconds since the Unix
epoch, and the meter never reads a clock. Between two calls the inputs are constant, so the
register and the edge times are exact (see :mod:`meter_model.outputs`).
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from meter_model.config import MeterConfig
from meter_model.demand import DemandMeter, DemandSettings, Peak
from meter_model.display import LcdFrame, LcdItem, display_period, key_turn_honoured
from meter_model.electrical import (
    Accuracy,
    Inputs,
    LineLoad,
    Measurement,
    balanced_inputs,
    measure,
)
from meter_model.outputs import EDGE_10_NJ, Edge, segment_edges
from meter_model.units import EDGES_10_PER_1K, NJ_PER_WH, round_kw

NJ_PER_J = 10**9


class Meter:
    """One meter. ``advance`` moves it in time and returns the edges its outputs made."""

    def __init__(
        self,
        config: MeterConfig,
        *,
        start_us: int,
        accuracy: Accuracy | None = None,
        demand: DemandSettings | None = None,
        energy_nj: int = 0,
    ) -> None:
        if energy_nj < 0:
            raise ValueError("a register cannot hold negative energy")
        self.config = config
        self.accuracy = accuracy or Accuracy()
        self._t_us = start_us
        self._power_on_us = start_us
        self._energy_nj = energy_nj
        idle = Inputs(
            tuple(LineLoad(line.nominal_v) for line in config.lines),
            frequency_hz=config.frequency_range_hz[1],
        )
        self._measurement = measure(config, idle, self.accuracy)
        self._demand = DemandMeter(demand or DemandSettings(), Fraction(1, NJ_PER_J), start_us)

    # -- time and inputs -------------------------------------------------------------------

    @property
    def t_us(self) -> int:
        return self._t_us

    def apply(self, t_us: int, inputs: Inputs) -> list[Edge]:
        """Advance to ``t_us``, then let ``inputs`` hold from there on; return the edges made."""
        measurement = measure(self.config, inputs, self.accuracy)
        edges = self.advance(t_us)
        if measurement.powered and not self._measurement.powered:
            self._power_on_us = t_us  # the LCD cycle restarts at power-up
        self._measurement = measurement
        return edges

    def apply_power_kw(self, t_us: int, power_kw: float, power_factor: float = 1.0) -> list[Edge]:
        """Apply a balanced load of ``power_kw`` at nominal voltage from ``t_us`` on."""
        return self.apply(t_us, balanced_inputs(self.config, power_kw, power_factor))

    def advance(self, t_us: int) -> list[Edge]:
        """Let the present inputs run until ``t_us``; return the edges made, in time order."""
        if t_us < self._t_us:
            raise ValueError(f"time runs backwards: {t_us} us < {self._t_us} us")
        power_mw = self._measurement.registered_power_mw
        s_us = self._demand.settings.sub_interval_us
        edges: list[Edge] = []
        while self._t_us < t_us:
            stop = min(t_us, (self._t_us // s_us + 1) * s_us)
            edges.extend(segment_edges(self._t_us, self._energy_nj, power_mw, stop))
            energy = power_mw * (stop - self._t_us)
            self._demand.add(self._t_us, energy)
            if not self._measurement.powered:
                # After add, which closed the earlier sub-intervals: mark this step's own.
                self._demand.mark_gap()  # the meter itself was dark
            self._energy_nj += energy
            self._t_us = stop
        self._demand.close_through(t_us)
        return edges

    # -- what the meter shows --------------------------------------------------------------

    @property
    def measurement(self) -> Measurement:
        return self._measurement

    @property
    def energy_nj(self) -> int:
        return self._energy_nj

    @property
    def energy_wh(self) -> Fraction:
        return Fraction(self._energy_nj, NJ_PER_WH)

    @property
    def edges_10(self) -> int:
        return self._energy_nj // EDGE_10_NJ

    @property
    def edges_1k(self) -> int:
        return self.edges_10 // EDGES_10_PER_1K

    @property
    def level_10(self) -> int:
        """Return the `10` output level, which the 10 Wh LED mirrors."""
        return self.edges_10 & 1

    @property
    def level_1k(self) -> int:
        """Return the `1K` output level, which the 1 kWh LED mirrors."""
        return self.edges_1k & 1

    @property
    def reverse_led(self) -> bool:
        return self._measurement.reverse_led

    @property
    def lcd_kwh(self) -> int:
        """Return total kWh as the LCD shows it: truncated, never reset."""
        return self._energy_nj // (1000 * NJ_PER_WH)

    @property
    def instantaneous_demand_kw(self) -> Fraction:
        return self._demand.instantaneous_kw()

    @property
    def peak(self) -> Peak | None:
        return self._demand.peak

    @property
    def demand(self) -> DemandMeter:
        return self._demand

    def display(self) -> LcdFrame | None:
        """Return what the LCD shows now, or None while the meter is unpowered."""
        if not self._measurement.powered:
            return None
        period = display_period(self._power_on_us, self._t_us, self.config.has_demand)
        value: int | Decimal | None
        if period.item is LcdItem.KWH:
            value = self.lcd_kwh
        elif period.item is LcdItem.DEMAND:
            value = round_kw(self.instantaneous_demand_kw)
        elif period.item is LcdItem.PEAK:
            peak = self._demand.peak
            value = round_kw(peak.demand_kw if peak else Fraction(0))
        else:
            value = None
        return LcdFrame(period.item, value)

    def turn_key(self, right_us: int, back_us: int) -> tuple[bool, list[Edge]]:
        """Turn the key switch right at ``right_us`` and back at ``back_us``.

        Advances the meter to ``back_us``; returns whether the peak was reset, and the edges
        made meanwhile.
        """
        if back_us < right_us:
            raise ValueError("the key comes back after it goes right")
        edges = self.advance(back_us)
        honoured = self._measurement.powered and key_turn_honoured(
            self._power_on_us, right_us, back_us, self.config.has_demand
        )
        if honoured:
            self._demand.reset_peak()
        return honoured, edges
