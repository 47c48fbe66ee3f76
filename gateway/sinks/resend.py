"""Re-sending stored intervals and reads on request: a collector that found a gap asks for it.

Read-only, so harmless, but a command all the same (SPEC section 5: commands are off by default):
``[mqtt] commands = ["resend"]`` turns it on. The request comes on ``amr/<gw>/<meter>/cmd/resend``
as JSON ``{"kind": "interval" | "read", "from_seq": A, "to_seq": B, "after": T, "before": T}``.

- Reads are kept with their ``seq``: reads A..B are sent again as they were.
- Intervals are numbered when they enter the outbox and the database keeps no number, so the
  collector also names the interval starts it holds either side of the gap (``after``, its seq
  A - 1, and ``before``, seq B + 1; either may be null). The intervals strictly between are sent
  with seq A, A + 1, ... in time order, never beyond B: when the gateway re-closed an interval (a
  restart), that window holds fewer intervals than seqs, and the rest of the gap stays open.

The replies go to the meter's usual ``interval`` / ``read`` topic at QoS 1; the collector's keys
make a reply for something it already holds change nothing.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from gateway.core.intervals import Interval
from gateway.errors import GatewayError
from gateway.sinks.database import Database
from gateway.sinks.payloads import interval_payload
from gateway.sinks.readback import Readback, stored_reads
from gateway.timefmt import parse_time_ns

logger = logging.getLogger(__name__)

MAX_RESEND = 10_000  # messages per request: a gap longer than this is asked for in parts


class ResendRequestError(ValueError):
    """A request that cannot be understood (it is logged and ignored)."""


def _seq(request: dict[str, Any], key: str) -> int:
    value = request.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ResendRequestError(f"{key} must be a whole number from 1")
    return value


def _time(request: dict[str, Any], key: str) -> int | None:
    value = request.get(key)
    if value is None:
        return None
    try:
        return parse_time_ns(str(value))
    except ValueError as exc:
        raise ResendRequestError(f"{key}: {exc}") from None


def resend_messages(database: Database, meter: str, text: str) -> list[tuple[str, dict[str, Any]]]:
    """Return the (kind, payload) messages a request asks for; raise ResendRequestError."""
    try:
        request = json.loads(text)
    except ValueError:
        raise ResendRequestError("not JSON") from None
    if not isinstance(request, dict):
        raise ResendRequestError("not a JSON object")
    kind = request.get("kind")
    first, last = _seq(request, "from_seq"), _seq(request, "to_seq")
    if last < first or last - first >= MAX_RESEND:
        raise ResendRequestError(f"from_seq..to_seq must hold 1 to {MAX_RESEND} messages")
    if kind == "read":
        return [
            ("read", read.payload())
            for read in stored_reads(database, meter)
            if first <= read.seq <= last
        ]
    if kind != "interval":
        raise ResendRequestError(f"kind {kind!r}: only interval and read are kept to re-send")
    after_ns, before_ns = _time(request, "after"), _time(request, "before")
    rows = Readback(database).intervals(meter, None if after_ns is None else after_ns + 1, None)
    messages: list[tuple[str, dict[str, Any]]] = []
    seq = first
    for name, row in rows:
        if before_ns is not None and row.start_ns >= before_ns:
            break
        if seq > last:
            break
        interval = Interval(name, row.start_ns, row.end_ns, row.energy_wh, row.edges, row.quality)
        messages.append(("interval", interval_payload(interval, seq)))
        seq += 1
    return messages


def answer_resend(database: Database, meter: str, text: str) -> list[tuple[str, str]]:
    """Return the (kind, JSON text) replies to a request; a bad request is logged, not answered."""
    try:
        messages = resend_messages(database, meter, text)
    except ResendRequestError as exc:
        logger.warning("%s: ignored a re-send request: %s", meter, exc)
        return []
    except GatewayError as exc:  # the database failing: the collector asks again later
        logger.error("%s: could not read what to re-send: %s", meter, exc)
        return []
    logger.info("%s: re-sending %d messages on request", meter, len(messages))
    return [(kind, json.dumps(payload, separators=(",", ":"))) for kind, payload in messages]
