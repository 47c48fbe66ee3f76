"""The fleet database read back: gateways, meters, intervals, reads and open gaps."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from gateway.fleet.schema import (
    FleetEventRow,
    FleetGapRow,
    FleetGatewayRow,
    FleetIntervalRow,
    FleetMeterRow,
    FleetReadRow,
)


@dataclass(frozen=True)
class FleetMeter:
    id: int
    gateway: str
    meter: str
    model: str | None
    energy_wh: int | None
    state: dict[str, Any] | None
    first_ns: int
    last_ns: int
    last_interval_end_ns: int | None
    interval_s: int | None


@dataclass(frozen=True)
class StoredInterval:
    start_ns: int
    end_ns: int
    energy_wh: int
    edges: int
    quality: str


def _where_meter(query: Any, gateway: str | None, meter: str | None) -> Any:
    if gateway is not None:
        query = query.where(FleetMeterRow.gateway == gateway)
    if meter is not None:
        query = query.where(FleetMeterRow.meter == meter)
    return query


def gateways(engine: Engine) -> dict[str, tuple[str, int]]:
    """Return each gateway's last status and since when."""
    with engine.connect() as connection:
        rows = connection.execute(select(FleetGatewayRow)).all()
    return {row.gateway: (row.status, row.since_ns) for row in rows}


def meters(
    engine: Engine, gateway: str | None = None, meter: str | None = None
) -> list[FleetMeter]:
    query = _where_meter(select(FleetMeterRow), gateway, meter).order_by(
        FleetMeterRow.gateway, FleetMeterRow.meter
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return [
        FleetMeter(
            row.id,
            row.gateway,
            row.meter,
            row.model,
            row.energy_wh,
            json.loads(row.state) if row.state else None,
            row.first_ns,
            row.last_ns,
            row.last_interval_end_ns,
            row.interval_s,
        )
        for row in rows
    ]


def open_gaps(engine: Engine) -> dict[int, list[Any]]:
    """Return the open gaps per meter id."""
    query = (
        select(FleetGapRow)
        .where(FleetGapRow.closed_ns.is_(None))
        .order_by(FleetGapRow.meter_id, FleetGapRow.kind, FleetGapRow.first_seq)
    )
    result: dict[int, list[Any]] = {}
    with engine.connect() as connection:
        for row in connection.execute(query):
            result.setdefault(row.meter_id, []).append(row)
    return result


def recent_events(
    engine: Engine, gateway: str | None, since_ns: int, kinds: frozenset[str]
) -> dict[int, list[dict[str, Any]]]:
    """Return the gateways' own events of ``kinds`` at or after ``since_ns`` per meter id, as
    published (their JSON), oldest first."""
    query = (
        select(FleetEventRow.meter_id, FleetEventRow.payload)
        .join(FleetMeterRow, FleetMeterRow.id == FleetEventRow.meter_id)
        .where(
            FleetEventRow.origin == "gateway",
            FleetEventRow.t_ns >= since_ns,
            FleetEventRow.kind.in_(sorted(kinds)),
        )
    )
    query = _where_meter(query, gateway, None).order_by(
        FleetEventRow.meter_id, FleetEventRow.t_ns, FleetEventRow.id
    )
    result: dict[int, list[dict[str, Any]]] = {}
    with engine.connect() as connection:
        for meter_id, payload in connection.execute(query):
            result.setdefault(meter_id, []).append(json.loads(payload))
    return result


def reads(
    engine: Engine,
    gateway: str | None = None,
    meter: str | None = None,
    period: str | None = None,
) -> list[tuple[str, str, dict[str, Any]]]:
    """Return (gateway, meter, read payload) by gateway, meter and read time."""
    query = select(FleetMeterRow.gateway, FleetMeterRow.meter, FleetReadRow.payload).join(
        FleetMeterRow, FleetMeterRow.id == FleetReadRow.meter_id
    )
    query = _where_meter(query, gateway, meter)
    if period is not None:
        query = query.where(FleetReadRow.period == period)
    query = query.order_by(FleetMeterRow.gateway, FleetMeterRow.meter, FleetReadRow.t_ns)
    with engine.connect() as connection:
        return [(g, m, json.loads(p)) for g, m, p in connection.execute(query)]


def periods(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        rows = connection.execute(select(FleetReadRow.period).distinct()).all()
    return sorted(row[0] for row in rows)


def intervals(
    engine: Engine,
    gateway: str | None,
    meter: str | None,
    start_ns: int | None,
    end_ns: int | None,
) -> list[tuple[str, str, Any]]:
    """Return (gateway, meter, interval row) in ``[start, end]``, by gateway, meter, start."""
    i = FleetIntervalRow
    query = select(
        FleetMeterRow.gateway,
        FleetMeterRow.meter,
        i.start_ns,
        i.end_ns,
        i.energy_wh,
        i.edges,
        i.quality,
    ).join(FleetMeterRow, FleetMeterRow.id == FleetIntervalRow.meter_id)
    query = _where_meter(query, gateway, meter)
    if start_ns is not None:
        query = query.where(FleetIntervalRow.start_ns >= start_ns)
    if end_ns is not None:
        query = query.where(FleetIntervalRow.end_ns <= end_ns)
    query = query.order_by(FleetMeterRow.gateway, FleetMeterRow.meter, FleetIntervalRow.start_ns)
    with engine.connect() as connection:
        return [
            (row.gateway, row.meter, StoredInterval(*row[2:])) for row in connection.execute(query)
        ]
