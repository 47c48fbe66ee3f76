"""The MQTT outbox: interval and event messages waiting in the database for the broker's PUBACK.

The store queues a message (:func:`outbox_row`) in the same transaction as the interval or event
it tells of, so a message exists exactly when its data does. The publisher reads the oldest
waiting ones (:meth:`Outbox.head`) and removes each only once the broker acknowledged it
(:meth:`Outbox.done`): a broker outage or a restart loses nothing, and order holds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select

from gateway.sinks.database import Database
from gateway.sinks.schema import MeterRow, OutboxRow


@dataclass(frozen=True)
class Message:
    """A waiting message: its row id, meter, kind (``interval``, ``event``) and JSON text."""

    id: int
    meter: str
    kind: str
    seq: int
    payload: str


def outbox_row(
    meter_id: int, kind: str, seq: int, payload: dict[str, Any], now_ns: int
) -> OutboxRow:
    """Return a message to queue: ``seq`` counts per meter and kind, without gaps."""
    return OutboxRow(
        meter_id=meter_id, kind=kind, seq=seq, payload=json.dumps(payload), created_ns=now_ns
    )


class Outbox:
    """The waiting messages of one database."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def head(self, limit: int = 100) -> list[Message]:
        """Return the oldest waiting messages, in order."""
        query = (
            select(OutboxRow, MeterRow.name)
            .join(MeterRow, MeterRow.id == OutboxRow.meter_id)
            .order_by(OutboxRow.id)
            .limit(limit)
        )
        with self.database.reading() as session:
            return [
                Message(row.id, name, row.kind, row.seq, row.payload)
                for row, name in session.execute(query).all()
            ]

    def done(self, ids: Sequence[int]) -> None:
        """Remove messages the broker acknowledged."""
        if not ids:
            return
        with self.database.transaction() as session:
            session.execute(delete(OutboxRow).where(OutboxRow.id.in_(list(ids))))

    def count(self) -> int:
        """Return how many messages wait."""
        with self.database.reading() as session:
            return int(session.scalar(select(func.count()).select_from(OutboxRow)) or 0)
