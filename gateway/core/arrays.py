"""Small numpy helpers shared by the core."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]


def runs(sorted_keys: I64) -> tuple[I64, I64]:
    """Return the distinct values of a sorted array and how many times each occurs."""
    if len(sorted_keys) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    starts = np.flatnonzero(np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]]))
    counts = np.diff(np.append(starts, len(sorted_keys)))
    return sorted_keys[starts], counts
