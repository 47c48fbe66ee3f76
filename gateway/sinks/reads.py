"""Billing reads in the database: written with the commit that carries them, queued for MQTT
(``amr/<gw>/<meter>/read``, QoS 1, through the outbox) and read back for ``bill`` and
``status``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway.core.reads import MeterRead
from gateway.sinks.database import Database
from gateway.sinks.outbox import outbox_row
from gateway.sinks.schema import LcdReadingRow, MeterReadRow, MeterRow
from gateway.timefmt import NS_PER_US, format_iso
from meter_model.units import round_kw


def peak_kw(energy_wh: int | None, window_s: int) -> Fraction | None:
    """Return a window's demand in kW, exactly: its energy over its length."""
    return None if energy_wh is None else Fraction(energy_wh * 3600, window_s * 1000)


def read_columns(read: MeterRead) -> dict[str, Any]:
    """Return a read as the meter_reads row holds it (the peak as its window's energy)."""
    peak = read.peak
    window_wh = None
    if peak is not None:
        window_wh = peak.demand_kw * read.peak_window_s * 1000 / 3600
        assert window_wh.denominator == 1  # integer Wh over the window
    low, high = read.estimate_wh or (None, None)
    return {
        "period": read.period,
        "start_ns": read.start_ns,
        "t_ns": read.t_ns,
        "register_channel": read.register_channel,
        "register_wh": read.register_wh,
        "energy_wh": read.energy_wh,
        "edges": read.edges,
        "peak_window_energy_wh": None if window_wh is None else int(window_wh),
        "peak_window_s": read.peak_window_s,
        "peak_window_end_ns": None if peak is None else peak.window_end_us * NS_PER_US,
        "peak_partial": None if peak is None else peak.partial,
        "quality": read.quality,
        "gap_s": read.gap_s,
        "glitches": read.glitches,
        "inferred": read.inferred,
        "mismatches": read.mismatches,
        "estimate_low_wh": low,
        "estimate_high_wh": high,
        "estimate_from": read.estimate_from,
    }


def reconciliation_summary(row: LcdReadingRow | None) -> dict[str, Any] | None:
    """Return the last LCD reading before a read: the LCD truncates, so N kWh on it means the
    meter held N000..N999 Wh while the gateway had counted ``register_wh``."""
    if row is None:
        return None
    low = row.lcd_kwh * 1000 - row.register_wh
    return {
        "time": format_iso(row.t_ns),
        "lcd_kwh": row.lcd_kwh,
        "register_wh": row.register_wh,
        "offset_wh": [low, low + 999],
    }


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


def _last_lcd(session: Session, meter_id: int, t_ns: int) -> LcdReadingRow | None:
    return session.scalar(
        select(LcdReadingRow)
        .where(LcdReadingRow.meter_id == meter_id, LcdReadingRow.t_ns <= t_ns)
        .order_by(LcdReadingRow.t_ns.desc(), LcdReadingRow.id.desc())
        .limit(1)
    )


def write_reads(
    session: Session,
    meter_id: int,
    meter: str,
    reads: Sequence[MeterRead],
    now_ns: int,
    *,
    outbox: bool,
) -> int:
    """Insert reads (and their outbox messages) in the caller's transaction; return the
    statement count. ``seq`` counts a meter's reads, 1, 2, ... (also the message's)."""
    if not reads:
        return 0
    last = session.scalar(
        select(func.max(MeterReadRow.seq)).where(MeterReadRow.meter_id == meter_id)
    )
    seq = int(last or 0)
    statements = 1
    for read in reads:
        seq += 1
        columns = read_columns(read)
        session.add(MeterReadRow(meter_id=meter_id, seq=seq, **columns))
        statements += 1
        if outbox:
            lcd = reconciliation_summary(_last_lcd(session, meter_id, read.t_ns))
            payload = read_payload(meter, columns, seq, lcd)
            session.add(outbox_row(meter_id, "read", seq, payload, now_ns))
            statements += 2
    return statements


@dataclass(frozen=True)
class StoredRead:
    meter: str
    columns: dict[str, Any]
    seq: int
    reconciliation: dict[str, Any] | None

    def payload(self) -> dict[str, Any]:
        return read_payload(self.meter, self.columns, self.seq, self.reconciliation)


def stored_reads(
    database: Database, meter: str | None = None, period: str | None = None
) -> list[StoredRead]:
    """Return the stored reads, by meter and time, optionally of one meter or period."""
    query = select(MeterRow.name, MeterReadRow).join(MeterRow, MeterRow.id == MeterReadRow.meter_id)
    if meter is not None:
        query = query.where(MeterRow.name == meter)
    if period is not None:
        query = query.where(MeterReadRow.period == period)
    query = query.order_by(MeterRow.name, MeterReadRow.t_ns)
    with database.reading() as session:
        result = []
        for name, row in session.execute(query).all():
            columns = {key: getattr(row, key) for key in _READ_COLUMNS}
            lcd = reconciliation_summary(_last_lcd(session, row.meter_id, row.t_ns))
            result.append(StoredRead(name, columns, row.seq, lcd))
        return result


_READ_COLUMNS = (
    "period",
    "start_ns",
    "t_ns",
    "register_channel",
    "register_wh",
    "energy_wh",
    "edges",
    "peak_window_energy_wh",
    "peak_window_s",
    "peak_window_end_ns",
    "peak_partial",
    "quality",
    "gap_s",
    "glitches",
    "inferred",
    "mismatches",
    "estimate_low_wh",
    "estimate_high_wh",
    "estimate_from",
)
