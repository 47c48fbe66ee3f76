"""Shared helpers for the meter model's unit tests, as session fixtures (safe under hypothesis)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from meter_model import Edge
from meter_model.outputs import segment_edges

ScalarPath = Callable[[Sequence[int], Sequence[int], int, int], tuple[list[Edge], int]]


def _scalar_profile_edges(
    t_us: Sequence[int], power_mw: Sequence[int], end_us: int, start_energy_nj: int = 0
) -> tuple[list[Edge], int]:
    """Run a piecewise-constant profile through the scalar path; return its edges and end energy.

    Row i holds power_mw[i] from t_us[i] until t_us[i+1]; the last row until end_us.
    """
    stops = [*t_us[1:], end_us]
    energy_nj = start_energy_nj
    edges: list[Edge] = []
    for t0, power, t1 in zip(t_us, power_mw, stops, strict=True):
        edges.extend(segment_edges(t0, energy_nj, power, t1))
        energy_nj += power * (t1 - t0)
    return edges, energy_nj


@pytest.fixture(scope="session")
def scalar_path() -> ScalarPath:
    """Return a function running a profile through segment_edges, step by step."""
    return _scalar_profile_edges
