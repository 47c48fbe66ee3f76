"""What the daemon prints: one reading line per meter (and, while it fails, the database's).

Every ``report_interval_s``, at start and at stop; a paced source that cannot keep up with its
speed says by how much.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TextIO

from gateway.core.meter import Reading
from gateway.pipeline import MeterPipeline
from gateway.timefmt import NS_PER_S, NS_PER_US, format_iso
from meter_model.units import lcd_kwh, round_kw

__all__ = ["format_behind", "format_reading", "print_report"]


def format_behind(behind_ns: int, asked_ns: int) -> str:
    """Return what a reading line adds for a paced source that cannot keep up ('' on pace)."""
    if behind_ns <= 0 or asked_ns <= 0:
        return ""
    seconds = behind_ns // NS_PER_S
    days, rest = divmod(seconds, 86_400)
    span = f"{days} d " if days else ""
    span += f"{rest // 3600:02d}:{rest // 60 % 60:02d}:{rest % 60:02d}"
    reached = (asked_ns - behind_ns) / asked_ns
    return f"; running behind its speed by {span} of source time (at {reached:.1%} of it)"


def format_reading(reading: Reading) -> str:
    """Return one human-readable line for a reading."""
    peak = "-"
    if reading.peak is not None:
        window_end = format_iso(reading.peak.window_end_us * NS_PER_US)
        peak = f"{round_kw(reading.peak.demand_kw)} kW (window ending {window_end})"
        if reading.peak_since_ns is not None:
            peak += f" since {format_iso(reading.peak_since_ns, 0)}"
    return (
        f"{format_iso(reading.t_ns, 0)} {reading.meter}: "
        f"{reading.energy_wh / 1000:.3f} kWh (LCD {lcd_kwh(reading.energy_wh)}), "
        f"power {reading.power_kw:.2f} kW, demand {round_kw(reading.demand_kw)} kW, peak {peak}, "
        f"edges 10={reading.edges['10']} 1K={reading.edges['1K']}"
    )


def print_report(out: TextIO, meters: Iterable[MeterPipeline], storage_error: str | None) -> None:
    """Print each meter's reading line, and that the database fails while it does."""
    for pipeline in meters:
        line = format_reading(pipeline.core.reading(pipeline.now_ns))
        print(line + format_behind(*pipeline.behind), file=out, flush=True)
    if storage_error is not None:
        print(f"not committed: {storage_error}; counting in memory", file=out)
