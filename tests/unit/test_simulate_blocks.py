"""``simulate`` makes and writes its edges block by block: the log is the one a single pass writes."""

from __future__ import annotations

import gzip
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

import gateway.commands.simulate as simulate_module
from gateway.commands.simulate import simulate
from gateway.loadprofile import read_profile
from meter_model import profile_edges

T0_S = 1_764_057_600


def _profile(path: Path) -> Path:
    """Six hours of one-minute rows, 0-20 kW, with a two-hour 60 kW row in the middle."""
    rng = np.random.default_rng(5)
    lines = ["time,kw"]
    t_s = T0_S
    for minute in range(360):
        kw = 60.0 if minute == 180 else float(rng.choice([0, 0.25, 3.5, 12, 19.999]))
        lines.append(f"{t_s}.{minute % 7 * 125_000:06d},{kw:.6f}")
        t_s += 7200 if minute == 180 else 60
    lines.append(f"{t_s},0")
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(profile: Path, out: Path, rows: int, edges: int) -> tuple[bytes, int]:
    """Simulate with the block constants given; return the log's bytes and the blocks made."""
    with (
        mock.patch.object(simulate_module, "BLOCK_ROWS", rows),
        mock.patch.object(simulate_module, "BLOCK_EDGES", edges),
        mock.patch.object(simulate_module, "profile_edges", wraps=profile_edges) as spy,
    ):
        simulate(str(profile), str(out), meter="unit-7")
    text = out.read_bytes()
    out.unlink()
    return text, spy.call_count


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_blocks_write_the_log_one_pass_writes(tmp_path: Path, suffix: str) -> None:
    profile = _profile(tmp_path / "p.csv")
    out = tmp_path / f"log{suffix}"
    whole, calls = _run(profile, out, 10**9, 10**12)
    assert calls == 1
    blocks, calls = _run(profile, out, 7, 300)
    assert calls > 60  # cut by rows, and the 60 kW row (24,000 edges) in pieces
    if suffix == ".csv.gz":  # the gzip header holds the time it was written
        whole, blocks = gzip.decompress(whole), gzip.decompress(blocks)
    assert blocks == whole
    # The header's totals, made from the energy alone, are the edges one pass finds.
    read = read_profile(profile)
    edges = profile_edges(read.t_us[:-1], read.power_mw, read.end_us)
    n10 = len(edges.t10_us)
    assert f"# edges_10={n10} edges_1k={n10 // 100} energy_wh={n10 * 5}\n".encode() in whole
    assert whole.count(b",10,") == n10 and whole.count(b",1K,") == n10 // 100
    assert n10 > 24_000
