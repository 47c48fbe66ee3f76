"""Replay of logs out of order: the external sort gives exactly what a sort in memory gives.

The module constants of :mod:`gateway.batch.extsort` are lowered so that a small log is sorted
in many runs spilled to files and merged back in small blocks, and compared with the same log
sorted in one piece in memory and fed to the cores as one chunk (what replay did before).
"""

from __future__ import annotations

import itertools
import os
import random
import tempfile
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from core_helpers import MS, NS, interval_tuples, snapshot
from hypothesis import given, settings
from hypothesis import strategies as st

import gateway.batch.extsort as extsort
import gateway.pulselog.scan as scan
from gateway.batch.extsort import RunSorter
from gateway.batch.replay import BatchResult, replay_logs
from gateway.core.edge import CHANNEL_1K, CHANNEL_10
from gateway.core.meter import CoreSettings
from gateway.errors import PulseLogError, SourceError
from gateway.pulselog.scan import Chunk

T0_NS = 1_764_057_600 * NS
Row = tuple[int, str, str, int]  # (t_ns, meter, channel, level)


def _patched(stack: ExitStack, **values: int) -> None:
    for name, value in values.items():
        module = scan if name == "CHUNK_BYTES" else extsort
        stack.enter_context(mock.patch.object(module, name, value))


# -- the sorter on its own ----------------------------------------------------------------------

rows_strategy = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 12), st.integers(0, 1), st.integers(0, 1)),
    max_size=120,
)


@settings(max_examples=200, deadline=None)
@given(
    rows=rows_strategy,
    cuts=st.lists(st.integers(0, 120), max_size=6),
    run_rows=st.integers(1, 25),
    merge_rows=st.integers(1, 40),
    min_block=st.integers(1, 4),
    feed_rows=st.integers(1, 30),
)
def test_the_sorter_hands_back_every_row_sorted(
    rows: list[tuple[int, int, int, int]],
    cuts: list[int],
    run_rows: int,
    merge_rows: int,
    min_block: int,
    feed_rows: int,
) -> None:
    """Rows (meter, t, channel, level) with many ties come back in order, none lost or added."""
    with ExitStack() as stack, tempfile.TemporaryDirectory() as spill:
        _patched(
            stack,
            SORT_RUN_ROWS=run_rows,
            MERGE_ROWS=merge_rows,
            MIN_BLOCK_ROWS=min_block,
            FEED_ROWS=feed_rows,
        )
        out: list[tuple[int, int, int, int]] = []
        with RunSorter(spill) as sorter:
            bounds = sorted({0, len(rows), *(c for c in cuts if c < len(rows))})
            for lo, hi in itertools.pairwise(bounds):
                part = rows[lo:hi]
                sorter.add(
                    Chunk(
                        np.array([r[1] for r in part], np.int64),
                        np.array([r[0] for r in part], np.int32),
                        np.array([r[2] for r in part], np.int8),
                        np.array([r[3] for r in part], np.int8),
                    )
                )
            for chunk in sorter.chunks():
                assert 0 < len(chunk.t_ns) <= feed_rows
                out += zip(
                    chunk.meter.tolist(),
                    chunk.t_ns.tolist(),
                    chunk.channel.tolist(),
                    chunk.level.tolist(),
                    strict=True,
                )
            assert len(sorter.runs) == (0 if len(rows) < run_rows else -(-len(rows) // run_rows))
            assert bool(os.listdir(spill)) == bool(sorter.runs)
        assert os.listdir(spill) == []
    assert out == sorted(rows)


# -- replay: spilled and merged against one sort in memory --------------------------------------


def _meter_rows(rng: random.Random, meter: str, grid_ns: int) -> list[Row]:
    """A meter's edges on a shared time grid: ties within and across meters, and faults."""
    ticks = sorted(rng.choices(range(4000), k=rng.randint(150, 350)))
    rows: list[Row] = []
    n = 0
    for tick in ticks:
        t = T0_NS + tick * grid_ns
        n += 1 if rng.random() > 0.05 else 2  # now and then a missed edge (a repeated level)
        rows.append((t, meter, CHANNEL_10, n % 2))
        if n % 10 == 0:  # `1K` at the very time of a `10` edge
            rows.append((t, meter, CHANNEL_1K, (n // 10) % 2))
        if rng.random() < 0.03:  # a glitch: a short level, 1 ms
            rows += [(t + MS, meter, CHANNEL_10, 1 - n % 2), (t + 2 * MS, meter, CHANNEL_10, n % 2)]
    rows += rng.choices(rows, k=len(rows) // 20)  # exact duplicates
    return rows


def _write(path: Path, rows: list[Row], comments: str = "") -> str:
    digits = 9 if any(t % 1000 for t, _, _, _ in rows) else 6
    with open(path, "w") as handle:
        handle.write(comments + "time,meter,channel,level\n")
        for t, meter, channel, level in rows:
            seconds, ns = divmod(t, NS)
            frac = f"{ns:09d}"[:digits]
            handle.write(f"{seconds}.{frac},{meter},{channel},{level}\n")
    return str(path)


def _shuffled_logs(tmp_path: Path, seed: int) -> tuple[list[str], str]:
    """Two logs holding three meters' rows shuffled; return them and their comment lines."""
    rng = random.Random(seed)
    rows = [
        row
        for meter, grid in (("m-a", MS), ("m-b", MS), ("m-c", 500 * MS))
        for row in _meter_rows(rng, meter, grid)
    ]
    rng.shuffle(rows)
    cut = rng.randrange(len(rows) // 4, 3 * len(rows) // 4)
    comments = f"# start={(T0_NS - 7 * NS) // NS}\n" if seed % 2 else ""
    paths = [
        _write(tmp_path / f"{seed}-1.csv", rows[:cut], comments),
        _write(tmp_path / f"{seed}-2.csv", rows[cut:]),
    ]
    return paths, comments


def _outcome(result: BatchResult) -> dict[str, object]:
    return {
        "meters": list(result.cores),
        "rows": result.rows,
        "skipped": result.skipped,
        "cores": {
            name: snapshot(core, interval_tuples(result.intervals.get(name)))
            for name, core in result.cores.items()
        },
    }


SETTINGS = {m: CoreSettings(wh_per_edge={CHANNEL_10: 5, CHANNEL_1K: 50}) for m in ("m-a", "m-b")}


def _replay(paths: list[str], spill: Path, *, finish: bool, **constants: int) -> BatchResult:
    with ExitStack() as stack:
        _patched(stack, CHUNK_BYTES=2048, **constants)  # out of order beyond one chunk
        return replay_logs(paths, finish=finish, settings=SETTINGS, spill_dir=str(spill))


@pytest.mark.parametrize("finish", [True, False])
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_external_sort_gives_what_one_sort_in_memory_gives(
    tmp_path: Path, seed: int, finish: bool
) -> None:
    paths, comments = _shuffled_logs(tmp_path, seed)
    spill = tmp_path / "spill"
    spill.mkdir()
    # One run sorted in memory, fed as one chunk: replay's sort as it was.
    whole = _replay(paths, spill, finish=finish, SORT_RUN_ROWS=10**9, FEED_ROWS=10**9)
    assert whole.sort_runs == 1
    spilled = _replay(
        paths,
        spill,
        finish=finish,
        SORT_RUN_ROWS=61,
        MERGE_ROWS=160,
        MIN_BLOCK_ROWS=3,
        FEED_ROWS=41,
    )
    assert spilled.sort_runs > 10
    assert _outcome(spilled) == _outcome(whole)
    assert list(spill.iterdir()) == []
    # The faults the logs hold were met, so the comparison covers them.
    cores = whole.cores.values()
    assert all(c.duplicates and c.inferred_edges for c in cores)
    assert sum(c.glitches for c in cores) > 0
    # The same rows in time order stream without a sort, to the same result. All times have
    # 6 fractional digits and 10 whole ones, so the lines' text order is their time order.
    rows = sorted(
        line
        for path in paths
        for line in Path(path).read_text().splitlines(keepends=True)
        if line[:1].isdigit()
    )
    ordered = tmp_path / "ordered.csv"
    ordered.write_text(comments + "time,meter,channel,level\n" + "".join(rows))
    streamed = replay_logs([str(ordered)], finish=finish, settings=SETTINGS)
    assert streamed.sort_runs == 0
    assert _outcome(streamed)["cores"] == _outcome(whole)["cores"]


def _interrupt_on_call(owner: type, name: str, call: int) -> mock._patch[object]:
    """Patch ``owner.name`` to raise KeyboardInterrupt (a Ctrl-C) on its ``call``-th call."""
    original = getattr(owner, name)
    calls = 0

    def interrupted(*args: object) -> object:
        nonlocal calls
        calls += 1
        if calls == call:
            raise KeyboardInterrupt
        return original(*args)

    return mock.patch.object(owner, name, interrupted)


@pytest.mark.parametrize(
    ("owner", "name", "call"),
    [(extsort.RunSorter, "_spill", 3), (extsort.Run, "load", 20)],
    ids=["sorting", "merging"],
)
def test_an_interrupt_leaves_no_file(tmp_path: Path, owner: type, name: str, call: int) -> None:
    paths, _ = _shuffled_logs(tmp_path, 5)
    spill = tmp_path / "spill"
    spill.mkdir()
    with _interrupt_on_call(owner, name, call), pytest.raises(KeyboardInterrupt):
        _replay(paths, spill, finish=True, SORT_RUN_ROWS=50, MERGE_ROWS=100, MIN_BLOCK_ROWS=3)
    assert list(spill.iterdir()) == []


def test_a_bad_row_after_runs_were_spilled_leaves_no_file(tmp_path: Path) -> None:
    paths, _ = _shuffled_logs(tmp_path, 6)
    with open(paths[1], "a") as handle:
        handle.write("soon,m-a,10,1\n")
    spill = tmp_path / "spill"
    spill.mkdir()
    spill_run = extsort.RunSorter._spill
    with (
        mock.patch.object(extsort.RunSorter, "_spill", autospec=True, side_effect=spill_run) as spy,
        _interrupt_on_call(extsort.Run, "load", 1),  # the merge never starts
        pytest.raises(PulseLogError, match="bad time") as info,
    ):
        _replay(paths, spill, finish=True, SORT_RUN_ROWS=50)
    assert info.value.path == paths[1]
    assert spy.call_count >= 3
    assert list(spill.iterdir()) == []


def test_no_room_for_the_runs_is_a_clear_error(tmp_path: Path) -> None:
    paths, _ = _shuffled_logs(tmp_path, 7)
    with pytest.raises(SourceError, match=r"no-such-dir.*TMPDIR"):
        _replay(paths, tmp_path / "no-such-dir", finish=True, SORT_RUN_ROWS=50)


def test_a_log_that_fits_one_run_writes_no_file(tmp_path: Path) -> None:
    paths, _ = _shuffled_logs(tmp_path, 8)
    with mock.patch.object(extsort.RunSorter, "_spill", side_effect=AssertionError("spilled")):
        result = _replay(paths, tmp_path / "no-such-dir", finish=True)
    assert result.sort_runs == 1
