import gzip

import numpy as np
import pytest
from logs import read_log

from gateway.core.edge import Edge
from gateway.errors import PulseLogError
from gateway.pulselog import PulseLogWriter, format_rows
from gateway.timefmt import format_epoch


def test_vectorised_rows_match_plain_formatting() -> None:
    t_ns = np.array([1_764_057_600_000_001_000, 1_764_057_601_500_000_000], np.int64)
    block = format_rows(t_ns, "m-1", np.array([False, True]), np.array([1, 0], np.int64))
    assert block.decode() == (
        f"{format_epoch(int(t_ns[0]))},m-1,10,1\n{format_epoch(int(t_ns[1]))},m-1,1K,0\n"
    )


def test_nanosecond_times_keep_nine_digits() -> None:
    block = format_rows(
        np.array([1_764_057_600_000_000_001], np.int64), "m", np.array([False]), np.array([1])
    )
    assert block == b"1764057600.000000001,m,10,1\n"


def test_mixed_width_seconds_fall_back_to_plain_formatting() -> None:
    t_ns = np.array([999_999_999_000_000_000, 1_000_000_000_000_000_000], np.int64)
    block = format_rows(t_ns, "m", np.array([False, False]), np.array([1, 0], np.int64))
    assert block == b"999999999.000000,m,10,1\n1000000000.000000,m,10,0\n"


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_write_then_read(tmp_path, suffix: str) -> None:
    path = tmp_path / f"log{suffix}"
    edges = [Edge(1_764_057_600_000_000_000 + i * 10**9, "a", "10", (i + 1) & 1) for i in range(5)]
    with PulseLogWriter(path, ["made by a test"]) as writer:
        writer.write_edges(edges)
    if suffix.endswith(".gz"):
        with gzip.open(path, "rt") as handle:
            assert handle.readline() == "# made by a test\n"
    assert read_log(path) == edges


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ("time,meter,level\n", 1, "header"),
        ("time,meter,channel,level\n1764057600,a,10\n", 2, "4 fields"),
        ("time,meter,channel,level\n1764057600,a,2K,1\n", 2, "channel"),
        ("time,meter,channel,level\n1764057600,a,10,2\n", 2, "level"),
        ("time,meter,channel,level\nyesterday,a,10,1\n", 2, "time"),
        ("time,meter,channel,level\n1764057600,a b,10,1\n", 2, "meter name"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, body: str, line: int, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("# comment\n" + body)
    with pytest.raises(PulseLogError, match=message) as info:
        read_log(path)
    assert info.value.path == str(path)
    assert info.value.line == line + 1
