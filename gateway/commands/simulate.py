"""``amr-gateway simulate``: run the meter model over a load profile and write its pulse log."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from gateway.errors import ConfigError, PulseLogError
from gateway.loadprofile import read_profile
from gateway.pulselog import PulseLogWriter, valid_meter_name
from gateway.timefmt import NS_PER_US, format_iso
from meter_model import MeterConfig, MeterModelError, profile_edges
from meter_model.units import EDGES_10_PER_1K, WH_PER_EDGE_10

logger = logging.getLogger(__name__)

ROWS_PER_BLOCK = 1 << 20


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
    edges = profile_edges(profile.t_us[:-1], profile.power_mw, profile.end_us)
    # Every 100th `10` edge is also a `1K` edge at the same time: write the `10` row first.
    is_1k = edges.n10 % EDGES_10_PER_1K == 0
    repeats = 1 + is_1k.astype(np.int64)
    t_ns = np.repeat(edges.t10_us, repeats) * NS_PER_US
    n = np.repeat(edges.n10, repeats)
    channel_1k = np.zeros(len(t_ns), np.bool_)
    channel_1k[(np.cumsum(repeats) - 1)[is_1k]] = True
    levels = np.where(channel_1k, (n // EDGES_10_PER_1K) & 1, n & 1)
    edges_10 = len(edges.t10_us)
    edges_1k = int(is_1k.sum())
    start, end = profile.start_us * NS_PER_US, profile.end_us * NS_PER_US
    comments = [
        "amr-gateway simulate",
        f"meter={meter} model={config.model.text} ct_rating_a={ct_rating_a:g}",
        f"profile={profile_path} start={format_iso(start)} end={format_iso(end)}",
        f"edges_10={edges_10} edges_1k={edges_1k} energy_wh={edges_10 * WH_PER_EDGE_10}",
    ]
    try:
        with PulseLogWriter(out_path, comments) as writer:
            for lo in range(0, len(t_ns), ROWS_PER_BLOCK):
                hi = lo + ROWS_PER_BLOCK
                writer.write_rows(t_ns[lo:hi], meter, channel_1k[lo:hi], levels[lo:hi])
    except OSError as exc:
        raise ConfigError(f"--out {out_path}: {exc.strerror or exc}") from None
    return SimulationSummary(
        meter, edges_10, edges_1k, edges_10 * WH_PER_EDGE_10, format_iso(start), format_iso(end)
    )
