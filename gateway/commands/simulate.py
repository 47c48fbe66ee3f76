"""``amr-gateway simulate``: run the meter model over a load profile and write its pulse log.

The edges are made and written block by block, so memory does not grow with the profile: each
block holds at most :data:`BLOCK_ROWS` profile steps and about :data:`BLOCK_EDGES` `10` edges
(a step holding more is cut in pieces, at whole microseconds, which moves no edge). The register
energy, an integer in nJ, is carried from block to block, so the log is the very one a single
pass over the whole profile writes (a test holds them to it).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gateway.errors import ConfigError, PulseLogError
from gateway.loadprofile import read_profile
from gateway.pulselog import PulseLogWriter, valid_meter_name
from gateway.timefmt import NS_PER_US, format_iso
from meter_model import MeterConfig, MeterModelError, ProfileEdges, profile_edges, split_steps
from meter_model.outputs import EDGE_10_NJ
from meter_model.units import EDGES_10_PER_1K, WH_PER_EDGE_10

logger = logging.getLogger(__name__)

BLOCK_ROWS = 50_000  # profile steps per block
BLOCK_EDGES = 100_000  # `10` edges per block, about: some 200 bytes each while formatted
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class SimulationSummary:
    meter: str
    edges_10: int
    edges_1k: int
    energy_wh: int
    start: str
    end: str


def _same_file(a: str, b: str) -> bool:
    """Whether two paths name one file (by inode when both exist, else by real path)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def simulate(
    profile_path: str,
    out_path: str,
    *,
    meter: str = "meter1",
    model: str = "2O208-4W",
    ct_rating_a: float = 200.0,
) -> SimulationSummary:
    """Simulate one meter over a profile and write the pulse log of both its outputs."""
    if not valid_meter_name(meter):
        raise ConfigError(f"--meter {meter!r}: a meter name is 1-64 of A-Z a-z 0-9 _ -")
    try:
        config = MeterConfig.from_model(model, ct_rating_a=ct_rating_a)
    except MeterModelError as exc:
        raise ConfigError(f"--model: {exc}") from None
    if _same_file(profile_path, out_path):
        raise ConfigError(f"--out {out_path}: is the profile itself; writing would destroy it")
    profile = read_profile(profile_path)
    max_mw = int(config.nominal_max_power_kw * 1_000_000)
    over = np.flatnonzero(profile.power_mw > max_mw)
    if len(over):
        row = int(over[0])
        raise PulseLogError(
            profile.path,
            int(profile.lines[row]),
            f"kw {profile.power_mw[row] / 1e6:g} exceeds what a {config.model.text} meter with "
            f"{ct_rating_a:g} A CTs can carry (0-{config.nominal_max_power_kw:g} kW at "
            "nominal voltage, CT rating + 10 %)",
        )
    starts, durations, powers = split_steps(
        profile.t_us[:-1], profile.power_mw, profile.end_us, BLOCK_EDGES * EDGE_10_NJ
    )
    # The totals go in the header, before the rows: from the energy alone, exactly.
    edges_10 = _energy_nj(powers, durations) // EDGE_10_NJ
    edges_1k = edges_10 // EDGES_10_PER_1K
    start, end = profile.start_us * NS_PER_US, profile.end_us * NS_PER_US
    comments = [
        "amr-gateway simulate",
        f"meter={meter} model={config.model.text} ct_rating_a={ct_rating_a:g}",
        f"profile={profile_path} start={format_iso(start)} end={format_iso(end)}",
        f"edges_10={edges_10} edges_1k={edges_1k} energy_wh={edges_10 * WH_PER_EDGE_10}",
    ]
    written_10 = 0
    try:
        with PulseLogWriter(out_path, comments) as writer:
            for edges in _edge_blocks(starts, durations, powers):
                t_ns, channel_1k, levels = _rows(edges)
                writer.write_rows(t_ns, meter, channel_1k, levels)
                written_10 += len(edges.t10_us)
    except OSError as exc:
        raise ConfigError(f"--out {out_path}: {exc.strerror or exc}") from None
    assert written_10 == edges_10, (written_10, edges_10)
    return SimulationSummary(
        meter, edges_10, edges_1k, edges_10 * WH_PER_EDGE_10, format_iso(start), format_iso(end)
    )


def _energy_nj(powers: I64, durations: I64) -> int:
    """Return the energy of all steps exactly (each step's fits int64; their sum may not)."""
    total = 0
    for lo in range(0, len(powers), 1 << 17):  # 2**17 remainders of an edge sum within int64
        step_nj = powers[lo : lo + (1 << 17)] * durations[lo : lo + (1 << 17)]
        whole, rest = np.divmod(step_nj, EDGE_10_NJ)
        total += int(whole.sum()) * EDGE_10_NJ + int(rest.sum())
    return total


def _edge_blocks(starts: I64, durations: I64, powers: I64) -> Iterator[ProfileEdges]:
    """Yield the edges of the steps block by block, carrying the register's energy across."""
    # Where to cut: after at most BLOCK_ROWS steps, or once about BLOCK_EDGES edges are due
    # (estimated in floats: the cut may go anywhere, only the block's size depends on it).
    due = np.zeros(len(starts) + 1)
    np.cumsum(powers * durations.astype(np.float64) / EDGE_10_NJ, out=due[1:])
    energy_nj = 0
    lo = 0
    while lo < len(starts):
        by_edges = int(np.searchsorted(due, due[lo] + BLOCK_EDGES, "right")) - 1
        hi = max(lo + 1, min(lo + BLOCK_ROWS, by_edges))
        end_us = int(starts[hi - 1] + durations[hi - 1])
        edges = profile_edges(starts[lo:hi], powers[lo:hi], end_us, energy_nj)
        energy_nj = edges.end_energy_nj
        yield edges
        lo = hi


def _rows(edges: ProfileEdges) -> tuple[I64, npt.NDArray[np.bool_], I64]:
    """Return the log rows of a block of edges: time, whether `1K`, level after the edge."""
    # Every 100th `10` edge is also a `1K` edge at the same time: the `10` row comes first.
    is_1k = edges.n10 % EDGES_10_PER_1K == 0
    repeats = 1 + is_1k.astype(np.int64)
    t_ns = np.repeat(edges.t10_us, repeats) * NS_PER_US
    n = np.repeat(edges.n10, repeats)
    channel_1k = np.zeros(len(t_ns), np.bool_)
    channel_1k[(np.cumsum(repeats) - 1)[is_1k]] = True
    levels = np.where(channel_1k, (n // EDGES_10_PER_1K) & 1, n & 1)
    return t_ns, channel_1k, levels
