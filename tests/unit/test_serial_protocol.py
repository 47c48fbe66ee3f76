"""The serial pulse-counter protocol (SPEC section 6), without a port.

The board's clock (unwrapping, offsets, restarts) is tested in ``test_serial_clock.py``.
"""

from __future__ import annotations

import pytest

from gateway.core.crosscheck import CrossCheck
from gateway.sources.serial import WRAP, checksum, parse_line


def test_checksum_is_the_xor_of_the_bytes_before_the_star() -> None:
    body = "E 3 12345 1"
    value = 0
    for byte in body.encode():
        value ^= byte
    assert checksum(body) == f"{value:02X}"
    assert parse_line(f"{body}*{checksum(body)}") == ("E", [3, 12345, 1])
    assert parse_line(f"{body}*{checksum(body).lower()}") == ("E", [3, 12345, 1])
    assert parse_line("H 99") == ("H", [99])  # the checksum is optional


@pytest.mark.parametrize(
    "line",
    ["E 3 12345 1*00", "E 64 1 1", "E 3 1 2", f"E 3 {WRAP} 1", "H -1", "X 1", "E 3 1", "", "H a"],
)
def test_bad_lines_are_refused_whole(line: str) -> None:
    assert parse_line(line) is None


def test_crosscheck_rebase_starts_afresh_after_a_gap() -> None:
    check = CrossCheck()
    import numpy as np

    # Edges are handed over in time order, as the core does.
    check.add_10(np.arange(1, 101, dtype=np.int64) * 10**9)
    check.add_1k(np.array([100 * 10**9], np.int64))
    check.add_10(np.arange(101, 151, dtype=np.int64) * 10**9)  # 150 edges in all: 750 Wh
    check.rebase()  # the gateway was down: the phase is unknown again
    assert check.difference_wh == 0
    check.add_10(np.arange(10_000, 10_021, dtype=np.int64) * 10**9)
    check.add_1k(np.array([10_020 * 10**9], np.int64))  # only 21 `10` edges since: no count event
    check.add_10(np.arange(10_021, 10_050, dtype=np.int64) * 10**9)
    check.finish()
    assert [e.kind for e in check.events] == []
