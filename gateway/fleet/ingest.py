"""One batch of the gateways' messages into the fleet database, in one transaction.

Exactly once, whatever the broker redelivers and in whatever order: intervals are keyed by
(meter, start) and a later version of an interval (a higher ``seq``: the gateway re-closed it)
replaces an earlier one, never the reverse; reads and the gateways' events are keyed by
(meter, seq). A meter's ``seq`` per kind should come 1, 2, 3...; a jump opens a gap
(``fleet_gaps``), which the missing messages close when they arrive (late, redelivered, or
re-sent by the gateway on request). Two collectors may take turns on one meter's messages
(a shared subscription): the high-water row is locked for the transaction, so the bookkeeping
holds, and a gap opened because the other collector has not committed yet closes moments later
(it is reported as an event only if it stays open, see :func:`report_gaps`).
"""

from __future__ import annotations

import functools
import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, case, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from gateway.fleet.partitions import create_partitions, month_of
from gateway.fleet.schema import (
    FleetEventRow,
    FleetGapRow,
    FleetGatewayRow,
    FleetIntervalRow,
    FleetMeterRow,
    FleetReadRow,
    FleetSeqRow,
)
from gateway.timefmt import NS_PER_S, format_iso, parse_time_ns

logger = logging.getLogger(__name__)

KINDS = ("interval", "read", "event")
GAP_GRACE_S = 30  # a gap open longer than this becomes an event (collectors' turns are quicker)

# Every meter of a fleet closes its intervals at the same quarter hours: a time string is
# parsed once, not once per message (a bad one raises every time, exceptions are not cached).
_time_ns = functools.lru_cache(maxsize=4096)(parse_time_ns)


class BadMessage(ValueError):
    """A message that cannot be stored (malformed JSON, a missing key): logged and dropped."""


@dataclass(frozen=True)
class Incoming:
    """A message of a gateway's meter: ``kind`` interval, read or event, its JSON decoded."""

    gateway: str
    meter: str
    kind: str
    payload: dict[str, Any]
    columns: dict[str, Any]  # what the row holds, checked and converted once (times in ns)

    @property
    def seq(self) -> int | None:
        seq = self.payload.get("seq")
        return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def parse_message(gateway: str, meter: str, kind: str, raw: bytes | bytearray) -> Incoming:
    """Decode and check a message; raise :class:`BadMessage` naming what is wrong."""
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadMessage(f"not JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise BadMessage("not a JSON object")
    item = Incoming(gateway, meter, kind, payload, {})
    try:
        if kind == "interval":
            item.columns.update(_interval_values(item))
        elif kind == "read":
            item.columns.update(_read_values(item))
        else:
            item.columns["t_ns"] = _time_ns(str(payload["time"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise BadMessage(f"{kind}: {type(exc).__name__} {exc}") from None
    if kind != "event" and item.seq is None:
        raise BadMessage(f"{kind}: no integer seq")
    return item


def _int(payload: dict[str, Any], key: str) -> int:
    value = payload[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{key} is not an integer")
    return value


def _interval_values(item: Incoming) -> dict[str, Any]:
    p = item.payload
    start_ns, end_ns = _time_ns(str(p["start"])), _time_ns(str(p["end"]))
    if end_ns <= start_ns:
        raise ValueError("end is not after start")
    return {
        "start_ns": start_ns,
        "end_ns": end_ns,
        "energy_wh": _int(p, "energy_wh"),
        "edges": _int(p, "edges"),
        "seq": _int(p, "seq"),
        "quality": str(p["quality"])[:16],
    }


def _read_values(item: Incoming) -> dict[str, Any]:
    p = item.payload
    return {"seq": _int(p, "seq"), "period": str(p["period"])[:7], "t_ns": _time_ns(p["end"])}


def _insert(connection: Connection, table: Any) -> Any:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


class Ingest:
    """Stores batches in one database; remembers meter ids and the partitions it made."""

    def __init__(self) -> None:
        self._meter_ids: dict[tuple[str, str], int] = {}
        self._months: set[tuple[int, int]] = set()

    # -- the meters ------------------------------------------------------------------------

    def meter_ids(
        self, connection: Connection, keys: Iterable[tuple[str, str]], now_ns: int
    ) -> dict[tuple[str, str], int]:
        """Return the id of every (gateway, meter), registering new ones (in the transaction:
        remember them only with :meth:`committed`)."""
        wanted = set(keys)
        found = {key: self._meter_ids[key] for key in wanted if key in self._meter_ids}
        missing = sorted(wanted - set(found))
        if missing:
            connection.execute(
                _insert(connection, FleetMeterRow).on_conflict_do_nothing(),
                [
                    {"gateway": g, "meter": m, "first_ns": now_ns, "last_ns": now_ns}
                    for g, m in missing
                ],
            )
            gateways = {g for g, _ in missing}
            rows = connection.execute(
                select(FleetMeterRow.gateway, FleetMeterRow.meter, FleetMeterRow.id).where(
                    FleetMeterRow.gateway.in_(gateways)
                )
            )
            for gateway, meter, meter_id in rows:
                if (gateway, meter) in wanted:
                    found[(gateway, meter)] = meter_id
        return found

    def ensure_partitions(self, engine: Engine, months: Iterable[tuple[int, int]]) -> None:
        """Create the monthly partitions intervals need, in a transaction of their own."""
        wanted = set(months) - self._months
        if wanted:
            with engine.begin() as connection:
                made = create_partitions(connection, wanted)
            if made:
                logger.info("created partitions %s", ", ".join(made))
            self._months |= wanted

    def committed(self, ids: dict[tuple[str, str], int]) -> None:
        """Remember meter ids whose transaction committed."""
        self._meter_ids.update(ids)

    def ingest(self, engine: Engine, items: Sequence[Incoming], now_ns: int) -> None:
        """Store a batch in one transaction, committed when this returns."""
        self.ensure_partitions(engine, self.months(items))
        with engine.begin() as connection:
            ids = self.store(connection, items, now_ns)
        self._meter_ids.update(ids)  # only now: the transaction is in the database

    # -- a batch ---------------------------------------------------------------------------

    @staticmethod
    def months(items: Sequence[Incoming]) -> set[tuple[int, int]]:
        return {month_of(i.columns["start_ns"]) for i in items if i.kind == "interval"}

    def store(
        self, connection: Connection, items: Sequence[Incoming], now_ns: int
    ) -> dict[tuple[str, str], int]:
        """Store ``items`` in the caller's transaction; return the meter ids it used."""
        ids = self.meter_ids(connection, {(i.gateway, i.meter) for i in items}, now_ns)
        by_group: dict[tuple[int, str], list[int]] = defaultdict(list)
        intervals: dict[tuple[int, int], dict[str, Any]] = {}
        reads: dict[tuple[int, int], dict[str, Any]] = {}
        events: list[dict[str, Any]] = []
        last_end: dict[int, tuple[int, int]] = {}
        for item in items:
            meter_id = ids[(item.gateway, item.meter)]
            if item.seq is not None:
                by_group[(meter_id, item.kind)].append(item.seq)
            if item.kind == "interval":
                values = item.columns
                key = (meter_id, values["start_ns"])
                if key not in intervals or intervals[key]["seq"] < values["seq"]:
                    intervals[key] = {"meter_id": meter_id, "received_ns": now_ns, **values}
                end = values["end_ns"]
                length_s = (end - values["start_ns"]) // NS_PER_S
                if meter_id not in last_end or last_end[meter_id][0] < end:
                    last_end[meter_id] = (end, length_s)
            elif item.kind == "read":
                values = item.columns
                reads[(meter_id, values["seq"])] = {
                    "meter_id": meter_id,
                    "payload": json.dumps(item.payload, separators=(",", ":")),
                    **values,
                }
            else:
                events.append(
                    {
                        "meter_id": meter_id,
                        "seq": item.seq,
                        "t_ns": item.columns["t_ns"],
                        "kind": str(item.payload.get("kind", ""))[:24],
                        "origin": "gateway",
                        "payload": json.dumps(item.payload, separators=(",", ":")),
                    }
                )
        if intervals:
            self._upsert_intervals(connection, list(intervals.values()))
        if reads:
            connection.execute(
                _insert(connection, FleetReadRow).on_conflict_do_nothing(), list(reads.values())
            )
        numbered = [e for e in events if e["seq"] is not None]
        if numbered:
            connection.execute(
                _insert(connection, FleetEventRow).on_conflict_do_nothing(
                    index_elements=["meter_id", "seq"]
                ),
                numbered,
            )
        loose = [e for e in events if e["seq"] is None]
        if loose:  # sent outside the outbox (the gateway's database failing): no key to keep
            connection.execute(_insert(connection, FleetEventRow), loose)
        # The rows two collectors share (a meter's seq rows, locked in meter order, and the
        # meter's row) last: they are held from here to the commit, not for the whole batch.
        self._track_seqs(connection, by_group, now_ns)
        self._touch_meters(connection, set(ids.values()), last_end, now_ns)
        return ids

    @staticmethod
    def _upsert_intervals(connection: Connection, rows: list[dict[str, Any]]) -> None:
        """Insert intervals; a higher ``seq`` replaces a stored one, a lower one changes nothing."""
        if connection.dialect.name == "postgresql":
            # One statement whatever the batch size, compiled once: arrays unnested.
            connection.execute(
                text(
                    "INSERT INTO fleet_intervals (meter_id, start_ns, end_ns, energy_wh, edges, "
                    "seq, received_ns, quality) SELECT * FROM unnest(CAST(:m AS integer[]), "
                    "CAST(:s AS bigint[]), CAST(:e AS bigint[]), CAST(:wh AS bigint[]), "
                    "CAST(:n AS bigint[]), CAST(:q AS bigint[]), CAST(:r AS bigint[]), "
                    "CAST(:k AS varchar[])) ON CONFLICT (meter_id, start_ns) DO UPDATE SET "
                    "end_ns = excluded.end_ns, energy_wh = excluded.energy_wh, "
                    "edges = excluded.edges, seq = excluded.seq, "
                    "received_ns = excluded.received_ns, quality = excluded.quality "
                    "WHERE fleet_intervals.seq < excluded.seq"
                ),
                {
                    "m": _array(r["meter_id"] for r in rows),
                    "s": _array(r["start_ns"] for r in rows),
                    "e": _array(r["end_ns"] for r in rows),
                    "wh": _array(r["energy_wh"] for r in rows),
                    "n": _array(r["edges"] for r in rows),
                    "q": _array(r["seq"] for r in rows),
                    "r": _array(r["received_ns"] for r in rows),
                    "k": _text_array(r["quality"] for r in rows),
                },
            )
            return
        stmt = _insert(connection, FleetIntervalRow)
        excluded = stmt.excluded
        stmt = stmt.on_conflict_do_update(
            index_elements=["meter_id", "start_ns"],
            set_={
                column: getattr(excluded, column)
                for column in ("end_ns", "energy_wh", "edges", "seq", "received_ns", "quality")
            },
            where=FleetIntervalRow.seq < excluded.seq,
        )
        connection.execute(stmt, rows)

    def _touch_meters(
        self,
        connection: Connection,
        meter_ids: set[int],
        last_end: dict[int, tuple[int, int]],
        now_ns: int,
    ) -> None:
        quiet = sorted(meter_ids - set(last_end))
        if quiet:
            connection.execute(
                update(FleetMeterRow).where(FleetMeterRow.id.in_(quiet)).values(last_ns=now_ns)
            )
        if not last_end:
            return
        rows = [(meter_id, e, length) for meter_id, (e, length) in sorted(last_end.items())]
        end = FleetMeterRow.last_interval_end_ns
        if connection.dialect.name == "postgresql":
            # One statement for the batch, not one per meter.
            connection.execute(
                text(
                    "UPDATE fleet_meters SET last_ns = :now, interval_s = v.len, "
                    "last_interval_end_ns = GREATEST(fleet_meters.last_interval_end_ns, v.e) "
                    "FROM unnest(CAST(:ids AS integer[]), CAST(:ends AS bigint[]), "
                    "CAST(:lens AS integer[])) AS v(id, e, len) WHERE fleet_meters.id = v.id"
                ),
                {
                    "now": now_ns,
                    "ids": _array(r[0] for r in rows),
                    "ends": _array(r[1] for r in rows),
                    "lens": _array(r[2] for r in rows),
                },
            )
            return
        v_id, v_end, v_len = _bind("v_id"), _bind("v_end"), _bind("v_len")
        params = [{"v_id": a, "v_end": b, "v_len": c} for a, b, c in rows]
        connection.execute(
            update(FleetMeterRow)
            .where(FleetMeterRow.id == v_id)
            .values(
                last_ns=now_ns,
                last_interval_end_ns=case((end.is_(None), v_end), (end < v_end, v_end), else_=end),
                interval_s=v_len,
            ),
            params,
        )

    def _track_seqs(
        self, connection: Connection, by_group: dict[tuple[int, str], list[int]], now_ns: int
    ) -> None:
        if not by_group:
            return
        groups = sorted(by_group)
        if connection.dialect.name == "postgresql":
            connection.execute(
                text(
                    "INSERT INTO fleet_seqs (meter_id, kind, high_seq) SELECT m, k, 0 "
                    "FROM unnest(CAST(:m AS integer[]), CAST(:k AS varchar[])) AS v(m, k) "
                    "ON CONFLICT DO NOTHING"
                ),
                {"m": _array(m for m, _ in groups), "k": _text_array(k for _, k in groups)},
            )
        else:
            connection.execute(
                _insert(connection, FleetSeqRow).on_conflict_do_nothing(),
                [{"meter_id": m, "kind": k, "high_seq": 0} for m, k in groups],
            )
        meter_ids = sorted({m for m, _ in groups})
        if connection.dialect.name == "postgresql":
            # Locked in one order, so two collectors' batches never wait on each other in a
            # circle; the ids as one array (an IN list would be compiled anew every batch).
            found = connection.execute(
                text(
                    "SELECT meter_id, kind, high_seq FROM fleet_seqs "
                    "WHERE meter_id = ANY(CAST(:m AS integer[])) "
                    "ORDER BY meter_id, kind FOR UPDATE"
                ),
                {"m": _array(meter_ids)},
            )
        else:
            found = connection.execute(
                select(FleetSeqRow.meter_id, FleetSeqRow.kind, FleetSeqRow.high_seq)
                .where(FleetSeqRow.meter_id.in_(meter_ids))
                .order_by(FleetSeqRow.meter_id, FleetSeqRow.kind)
            )
        high = {(m, k): h for m, k, h in found}
        gaps_by_group: dict[tuple[int, str], list[Any]] | None = None
        new_high: list[dict[str, Any]] = []
        new_gaps: list[dict[str, Any]] = []
        for group in groups:
            seqs = sorted(set(by_group[group]))
            current = int(high.get(group, 0))
            old = [s for s in seqs if s <= current]
            if old:
                if gaps_by_group is None:
                    gaps_by_group = self._open_gaps(connection, meter_ids)
                self._fill(connection, gaps_by_group.get(group, []), old, now_ns)
            expected = current + 1
            for seq in (s for s in seqs if s > current):
                if seq > expected:
                    new_gaps.append(
                        {
                            "meter_id": group[0],
                            "kind": group[1],
                            "first_seq": expected,
                            "last_seq": seq - 1,
                            "opened_ns": now_ns,
                            "reported": False,
                        }
                    )
                expected = seq + 1
            if expected - 1 > current:
                new_high.append({"b_m": group[0], "b_k": group[1], "b_h": expected - 1})
        if new_high:
            rows = [(h["b_m"], h["b_k"], h["b_h"]) for h in new_high]
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text(
                        "UPDATE fleet_seqs SET high_seq = v.h FROM unnest(CAST(:m AS integer[]), "
                        "CAST(:k AS varchar[]), CAST(:h AS bigint[])) AS v(m, k, h) "
                        "WHERE fleet_seqs.meter_id = v.m AND fleet_seqs.kind = v.k"
                    ),
                    {
                        "m": _array(r[0] for r in rows),
                        "k": _text_array(r[1] for r in rows),
                        "h": _array(r[2] for r in rows),
                    },
                )
            else:
                v_m, v_k, v_h = _bind("v_m"), _bind("v_k"), _bind("v_h")
                connection.execute(
                    update(FleetSeqRow)
                    .where(and_(FleetSeqRow.meter_id == v_m, FleetSeqRow.kind == v_k))
                    .values(high_seq=v_h),
                    [{"v_m": m, "v_k": k, "v_h": h} for m, k, h in rows],
                )
        if new_gaps:
            connection.execute(_insert(connection, FleetGapRow), new_gaps)

    @staticmethod
    def _open_gaps(
        connection: Connection, meter_ids: list[int]
    ) -> dict[tuple[int, str], list[Any]]:
        rows = connection.execute(
            select(FleetGapRow).where(
                FleetGapRow.meter_id.in_(meter_ids), FleetGapRow.closed_ns.is_(None)
            )
        ).all()
        result: dict[tuple[int, str], list[Any]] = defaultdict(list)
        for row in rows:
            result[(row.meter_id, row.kind)].append(row)
        return result

    @staticmethod
    def _fill(connection: Connection, gaps: list[Any], seqs: list[int], now_ns: int) -> None:
        """Take arrived ``seqs`` out of the open gaps holding them (a redelivery holds none)."""
        for gap in gaps:
            inside = [s for s in seqs if gap.first_seq <= s <= gap.last_seq]
            if not inside:
                continue
            # What stays missing of first..last: the runs between the arrived seqs.
            runs, low = [], gap.first_seq
            for seq in inside:
                if seq > low:
                    runs.append((low, seq - 1))
                low = seq + 1
            if low <= gap.last_seq:
                runs.append((low, gap.last_seq))
            if not runs:
                connection.execute(
                    update(FleetGapRow).where(FleetGapRow.id == gap.id).values(closed_ns=now_ns)
                )
                if gap.reported:
                    _gap_event(connection, gap, now_ns, closed=True)
                continue
            first, *rest = runs
            connection.execute(
                update(FleetGapRow)
                .where(FleetGapRow.id == gap.id)
                .values(first_seq=first[0], last_seq=first[1])
            )
            if rest:
                connection.execute(
                    _insert(connection, FleetGapRow),
                    [
                        {
                            "meter_id": gap.meter_id,
                            "kind": gap.kind,
                            "first_seq": a,
                            "last_seq": b,
                            "opened_ns": gap.opened_ns,
                            "reported": gap.reported,
                        }
                        for a, b in rest
                    ],
                )


def _array(values: Iterable[int]) -> str:
    """A PostgreSQL array literal of integers for ``CAST(:x AS bigint[])``, made as one string:
    psycopg would dump a list element by element in Python, a cost per row of every batch."""
    return "{" + ",".join(map(str, values)) + "}"


def _text_array(values: Iterable[str]) -> str:
    """:func:`_array` of strings, each quoted."""
    return "{" + ",".join(_quoted(v) for v in values) + "}"


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _bind(name: str) -> Any:
    from sqlalchemy import bindparam

    return bindparam(name)


def _gap_event(connection: Connection, gap: Any, now_ns: int, *, closed: bool) -> None:
    what = "closed" if closed else "open"
    detail = (
        f"{gap.kind} seq {gap.first_seq}..{gap.last_seq} {what}"
        f" (missing since {format_iso(gap.opened_ns, 0)})"
    )
    payload = {
        "time": format_iso(now_ns),
        "kind": "gap_closed" if closed else "gap",
        "detail": detail,
        "messages": gap.kind,
        "first_seq": gap.first_seq,
        "last_seq": gap.last_seq,
    }
    connection.execute(
        _insert(connection, FleetEventRow),
        [
            {
                "meter_id": gap.meter_id,
                "seq": None,
                "t_ns": now_ns,
                "kind": payload["kind"],
                "origin": "collector",
                "payload": json.dumps(payload, separators=(",", ":")),
            }
        ],
    )


def report_gaps(connection: Connection, now_ns: int) -> list[Any]:
    """Make an event of every gap open longer than :data:`GAP_GRACE_S`; return them."""
    table = FleetGapRow.__table__
    rows = connection.execute(
        select(table).where(
            table.c.closed_ns.is_(None),
            table.c.reported.is_(False),
            table.c.opened_ns <= now_ns - GAP_GRACE_S * NS_PER_S,
        )
    ).all()
    for gap in rows:
        _gap_event(connection, gap, now_ns, closed=False)
        connection.execute(
            update(FleetGapRow).where(FleetGapRow.id == gap.id).values(reported=True)
        )
    return list(rows)


def store_status(connection: Connection, gateway: str, status: str, now_ns: int) -> None:
    """Record a gateway's ``online`` / ``offline``, keeping since when it has been so."""
    row = connection.execute(
        select(FleetGatewayRow.status).where(FleetGatewayRow.gateway == gateway)
    ).first()
    if row is None:
        connection.execute(
            _insert(connection, FleetGatewayRow).on_conflict_do_nothing(),
            [{"gateway": gateway, "status": status, "since_ns": now_ns}],
        )
    elif row[0] != status:
        connection.execute(
            update(FleetGatewayRow)
            .where(FleetGatewayRow.gateway == gateway)
            .values(status=status, since_ns=now_ns)
        )


def store_meter_info(
    connection: Connection,
    meter_id: int,
    *,
    model: str | None = None,
    state: dict[str, Any] | None = None,
) -> None:
    """Record a meter's model (from discovery) or its retained state (latest total)."""
    values: dict[str, Any] = {}
    if model is not None:
        values["model"] = model[:32]
    if state is not None:
        values["state"] = json.dumps(state, separators=(",", ":"))
        energy = state.get("energy_wh")
        if isinstance(energy, int) and not isinstance(energy, bool):
            values["energy_wh"] = energy
    if values:
        connection.execute(
            update(FleetMeterRow).where(FleetMeterRow.id == meter_id).values(**values)
        )


RESEND_AFTER_S = 5  # a gap this old is not the other collector's batch still committing
RESEND_RETRY_S = 60
MAX_RESEND = 10_000  # as gateway/sinks/resend.py answers at most


@dataclass(frozen=True)
class ResendRequest:
    gateway: str
    meter: str
    payload: dict[str, Any]


def claim_resends(connection: Connection, now_ns: int) -> list[ResendRequest]:
    """Return the re-send requests due for open interval and read gaps, claimed (two
    collectors do not both ask within :data:`RESEND_RETRY_S`)."""
    cutoff = now_ns - RESEND_RETRY_S * NS_PER_S
    due = connection.execute(
        select(FleetGapRow, FleetMeterRow.gateway, FleetMeterRow.meter)
        .join(FleetMeterRow, FleetMeterRow.id == FleetGapRow.meter_id)
        .where(
            FleetGapRow.closed_ns.is_(None),
            FleetGapRow.kind.in_(("interval", "read")),
            FleetGapRow.opened_ns <= now_ns - RESEND_AFTER_S * NS_PER_S,
            (FleetGapRow.requested_ns.is_(None)) | (FleetGapRow.requested_ns <= cutoff),
        )
        .order_by(FleetGapRow.id)
        .limit(100)
    ).all()
    requests = []
    for row in due:
        claimed = connection.execute(
            update(FleetGapRow)
            .where(
                FleetGapRow.id == row.id,
                (FleetGapRow.requested_ns.is_(None)) | (FleetGapRow.requested_ns <= cutoff),
            )
            .values(requested_ns=now_ns)
        )
        if claimed.rowcount != 1:
            continue
        last = min(row.last_seq, row.first_seq + MAX_RESEND - 1)
        payload: dict[str, Any] = {"kind": row.kind, "from_seq": row.first_seq, "to_seq": last}
        if row.kind == "interval":
            # The interval starts either side of the gap: the gateway numbers what lies between.
            i = FleetIntervalRow
            after = connection.execute(
                select(i.start_ns)
                .where(i.meter_id == row.meter_id, i.seq < row.first_seq)
                .order_by(i.start_ns.desc())
                .limit(1)
            ).scalar()
            before = connection.execute(
                select(i.start_ns)
                .where(i.meter_id == row.meter_id, i.seq > row.last_seq)
                .order_by(i.start_ns)
                .limit(1)
            ).scalar()
            payload["after"] = None if after is None else format_iso(after)
            payload["before"] = None if before is None else format_iso(before)
        requests.append(ResendRequest(row.gateway, row.meter, payload))
    return requests
