"""Helpers for the reconstruction core's unit tests: edges, feeding both paths, snapshots.

Plain functions (no fixtures), so hypothesis tests can call them freely.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from gateway.core.edge import CHANNEL_1K, CHANNEL_10, Edge
from gateway.core.hygiene import ChannelHygiene, Cleaned, merge
from gateway.core.meter import MeterCore
from meter_model import profile_edges

NS = 1_000_000_000  # ns per second
MS = 1_000_000  # ns per millisecond
US_NS = 1_000  # ns per microsecond
S_NS = 300 * NS  # 5-minute sub-interval
I_NS = 900 * NS  # 15-minute interval / demand window
# 2025-11-25T08:00:00Z: a multiple of 900 s (and so of 300 s) since the epoch.
T0 = 1_764_057_600 * NS
assert T0 % I_NS == 0
METER = "m1"

Raw = tuple[int, str, int]  # (t_ns, channel, level)


# -- edges --------------------------------------------------------------------------------------


def alternating(times: Iterable[int], channel: str, first_level: int = 1) -> list[Raw]:
    """Edges at ``times`` on ``channel`` with levels alternating from ``first_level``."""
    return [(t, channel, (first_level + i) % 2) for i, t in enumerate(times)]


def model_edges(
    power_mw: int | Sequence[tuple[int, int]],
    start_ns: int,
    end_ns: int,
    start_energy_wh: float | Fraction = 0,
) -> tuple[list[Raw], list[Raw]]:
    """Return the meter model's exact (`10`, `1K`) edges from ``start_ns`` to ``end_ns``.

    ``power_mw`` is a constant power, or steps of (t_ns, power_mw) with the first at
    ``start_ns``. ``start_energy_wh`` is the register at ``start_ns`` (any phase); levels are the
    model's (edge n of `10` leaves level n % 2). Times are whole microseconds, returned in ns.
    """
    steps = [(start_ns, power_mw)] if isinstance(power_mw, int) else list(power_mw)
    assert steps[0][0] == start_ns
    assert all(t % US_NS == 0 for t, _ in steps) and end_ns % US_NS == 0
    start_nj = Fraction(start_energy_wh) * 3_600 * 10**9
    assert start_nj.denominator == 1
    edges = profile_edges(
        [t // US_NS for t, _ in steps], [p for _, p in steps], end_ns // US_NS, int(start_nj)
    )
    e10 = [
        (int(t) * US_NS, CHANNEL_10, int(n) % 2)
        for t, n in zip(edges.t10_us.tolist(), edges.n10.tolist(), strict=True)
    ]
    e1k = [
        (int(t) * US_NS, CHANNEL_1K, int(n) % 2)
        for t, n in zip(edges.t1k_us.tolist(), edges.n1k.tolist(), strict=True)
    ]
    return e10, e1k


def merged(*streams: Sequence[Raw]) -> list[Raw]:
    """Merge per-channel streams into one list sorted by (time, level, channel)."""
    return sorted((e for s in streams for e in s), key=lambda e: (e[0], e[2], e[1]))


# -- feeding ------------------------------------------------------------------------------------


def push_all(core: MeterCore, edges: Iterable[Raw]) -> None:
    """Feed edges one by one (the live path); they must already be in time order."""
    for t, channel, level in edges:
        core.push(Edge(t, core.name, channel, level))


def chunk_blocks(edges: Sequence[Raw]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Split a time-ordered run of edges into per-channel (times, levels) arrays."""
    blocks: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for channel in (CHANNEL_10, CHANNEL_1K):
        mine = [(t, lv) for t, ch, lv in edges if ch == channel]
        if mine:
            blocks[channel] = (
                np.array([t for t, _ in mine], np.int64),
                np.array([lv for _, lv in mine], np.int8),
            )
    return blocks


def push_chunks(core: MeterCore, edges: Sequence[Raw], cuts: Iterable[int] = ()) -> None:
    """Feed edges through ``push_chunk``, cut into consecutive chunks at the given indices."""
    bounds = sorted({0, len(edges), *(c for c in cuts if 0 < c < len(edges))})
    for lo, hi in itertools.pairwise(bounds):
        core.push_chunk(chunk_blocks(edges[lo:hi]))


def run_core(
    edges: Sequence[Raw],
    *,
    chunked: bool = False,
    cuts: Iterable[int] = (),
    end_ns: int | None = None,
    **kwargs: Any,
) -> tuple[MeterCore, list[tuple[object, ...]]]:
    """Build a core, feed it all edges by one path, finish it; return it and its intervals."""
    core = MeterCore(METER, **kwargs)
    if chunked:
        push_chunks(core, edges, cuts)
    else:
        push_all(core, edges)
    batch = core.finish(end_ns)
    return core, interval_tuples(batch)


def interval_tuples(batch: Iterable[Any] | None) -> list[tuple[object, ...]]:
    if batch is None:
        return []
    return [
        (iv.meter, iv.start_ns, iv.end_ns, iv.energy_wh, iv.edges, iv.quality, iv.flags)
        for iv in batch
    ]


def event_key(event: Any) -> tuple[object, ...]:
    return (event.t_ns, str(event.kind), event.channel or "", event.detail, event.missed_wh)


def snapshot(core: MeterCore, intervals: list[tuple[object, ...]]) -> dict[str, object]:
    """Everything the two paths must agree on."""
    demand = core.demand
    return {
        "totals": {
            ch: (t.edges, t.noise, t.last_ns, t.previous_ns, t.last_real_ns)
            for ch, t in core.totals.items()
        },
        "glitches": core.glitches,
        "inferred": core.inferred_edges,
        "duplicates": core.duplicates,
        "hygiene": {
            ch: (h.glitches, h.inferred, h.duplicates, h.confirmed, h.level, h.last_t_ns)
            for ch, h in core.hygiene.items()
        },
        "register": core.register_channel,
        "energy_wh": core.energy_wh,
        "crosscheck": core.crosscheck.summary(),
        "events": sorted(event_key(e) for e in core.events),
        "peak": None if demand is None else demand.peak,
        "instantaneous": None if demand is None else demand.instantaneous_kw(),
        "last_sub": None if demand is None else demand.last,
        "first_ns": core.first_ns,
        "last_ns": core.last_ns,
        "start_ns": core.start_ns,
        "power_at_last": None if core.last_ns is None else core.power_kw(core.last_ns),
        "intervals": intervals,
    }


# -- hygiene ------------------------------------------------------------------------------------


def hygiene_stream(
    edges: Sequence[tuple[int, int]], *, level: int | None = None, glitch_ns: int = 2 * MS
) -> tuple[ChannelHygiene, Cleaned]:
    """Run one channel's edges through push() one by one, then finish()."""
    h = ChannelHygiene(glitch_ns, level=level)
    parts = [h.push(t, lv) for t, lv in edges]
    parts.append(h.finish())
    return h, merge(parts)


def hygiene_block(
    edges: Sequence[tuple[int, int]],
    *,
    level: int | None = None,
    glitch_ns: int = 2 * MS,
    cuts: Iterable[int] = (),
) -> tuple[ChannelHygiene, Cleaned]:
    """Run one channel's edges through push_block() (cut into blocks), then finish()."""
    h = ChannelHygiene(glitch_ns, level=level)
    bounds = sorted({0, len(edges), *(c for c in cuts if 0 < c < len(edges))})
    parts = []
    for lo, hi in itertools.pairwise(bounds):
        part = edges[lo:hi]
        parts.append(
            h.push_block(
                np.array([t for t, _ in part], np.int64), np.array([lv for _, lv in part], np.int8)
            )
        )
    parts.append(h.finish())
    return h, merge(parts)


def counted(cleaned: Cleaned) -> list[tuple[int, bool]]:
    """The counted edges as (time, inferred) pairs."""
    return list(zip(cleaned.t_ns.tolist(), cleaned.inferred.tolist(), strict=True))
