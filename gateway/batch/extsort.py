"""Sort replay rows in bounded memory: sorted runs spilled to temporary files, merged back.

Replay falls back to this when a log's rows come out of order beyond one chunk. Rows are put in
(meter, time, channel, level) order, the order the whole-log sort in memory used, so each meter's
rows come out in time order, each channel's by (time, level), which is what
:meth:`MeterCore.push_chunk` needs across chunks (the core gives the same result however sorted
input is cut into chunks: tests/unit/test_core_parity.py). Rows equal in all four fields are
indistinguishable, so the output is the very sequence a sort of the whole log gives.

- Rows are gathered into runs of at most :data:`SORT_RUN_ROWS`, each sorted as one packed int64
  key (:func:`sort_columns`) with numpy's stable sort, which is nearly free on rows already in
  order or reversed (quicksort for keys in random order). Each chunk is sorted as it comes, so
  a run is sorted pieces. When every row fits in one run nothing is written: the pieces are
  merged in memory in a few parts, split at keys sampled from them all, so the caller can feed
  one part while the next is merged.
- Otherwise each sorted run goes to a file of its own as raw columns one after the other (time
  int64, meter int32, channel int8, level int8: 14 bytes a row) in a ``TemporaryDirectory``
  created in the system's temporary directory: ``$TMPDIR``, else ``/tmp`` (as sort(1) does).
  Where ``/tmp`` is a tmpfs, that is memory again: point ``TMPDIR`` at a disk. The directory is
  removed when the sort ends, fails or is interrupted (Ctrl-C).
- The merge holds one block of each run, :data:`MERGE_ROWS` rows in all. The smallest of the
  runs' last loaded rows is a safe bound: no row still on file sorts below it. Every buffered row
  at or below the bound is handed out (the pieces, each sorted, joined and sorted again), and the
  run the bound came from, now empty, loads its next block. Blocks are read with plain reads, not
  a memory map, so the pages read do not stay in the process's resident set.

Memory: about 40 bytes a row of a run while it is sorted and written (some 85 MB at 2 Mi
rows, chosen so replay stays near 130 MB on any log, room to spare on a 512 MB Pi), and about 36
bytes a row of :data:`MERGE_ROWS` while merging (some 36 MB).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, BinaryIO, Literal

import numpy as np
import numpy.typing as npt

from gateway.errors import SourceError
from gateway.pulselog.scan import Chunk

SORT_RUN_ROWS = 1 << 21  # rows sorted in memory at once: some 85 MB (see above)
MERGE_ROWS = 1_000_000  # rows buffered across all runs while merging
FEED_ROWS = 1 << 17  # rows per chunk handed out: about a chunk of the log as read
MIN_BLOCK_ROWS = 4_096  # a run's block is never smaller, however many runs there are

# The columns of a Chunk (time, meter, channel, level) are written to a run's file one after the
# other: a row takes 8 + 4 + 1 + 1 bytes.
_ITEM_BYTES = (8, 4, 1, 1)
Columns = tuple[
    npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.int8], npt.NDArray[np.int8]
]
AnyInts = npt.NDArray[np.signedinteger[Any]]
Key = tuple[int, int, int, int]  # (meter, time, channel, level)


def _columns(chunk: Chunk) -> Columns:
    return chunk.t_ns, chunk.meter, chunk.channel, chunk.level


def _chunk(columns: Columns) -> Chunk:
    return Chunk(*columns)


def sort_columns(columns: Columns) -> Columns:
    """Return the rows sorted by (meter, time, channel, level).

    Usually as one packed int64 key (meter, time since the earliest row, channel, level), sorted
    and unpacked: far cheaper than a four-key ``np.lexsort`` and the gathers of every column it
    needs. Rows equal in the key are equal in all four fields, so nothing is lost. A span of
    times too wide to pack (centuries between rows) falls back to the lexsort.
    """
    t_ns, meter, channel, level = columns
    if len(t_ns) < 2:
        return columns
    t0 = int(t_ns.min())
    time_bits = (int(t_ns.max()) - t0).bit_length()
    meter_bits = int(meter.max()).bit_length()
    if time_bits + meter_bits + 2 > 63 or int(meter.min()) < 0:
        order = np.lexsort((level, channel, t_ns, meter))
        return _take(columns, order)
    key = t_ns - t0
    key <<= 2
    key |= channel.astype(np.int64) << 1
    key |= level
    if meter_bits:
        key |= meter.astype(np.int64) << (time_bits + 2)
    key.sort(kind=_sort_kind(key))
    out_level = (key & 1).astype(np.int8)
    out_channel = ((key >> 1) & 1).astype(np.int8)
    out_meter = (
        (key >> (time_bits + 2)).astype(np.int32) if meter_bits else np.zeros(len(key), np.int32)
    )
    key >>= 2
    if meter_bits:
        key &= (1 << time_bits) - 1
    key += t0
    return key, out_meter, out_channel, out_level


def _sort_kind(key: npt.NDArray[np.int64]) -> Literal["stable", "quicksort"]:
    """Return the sort for these keys: timsort where they come in long runs (in order, reversed,
    sorted pieces joined), nearly free there; else numpy's quicksort, a fifth faster on rows in
    random order. Rows with equal keys are equal, so stability is never needed."""
    descents = int(np.count_nonzero(key[1:] < key[:-1]))
    few = len(key) >> 6
    return "stable" if descents <= few or descents >= len(key) - 1 - few else "quicksort"


def _take(columns: Columns, index: npt.NDArray[np.intp] | slice) -> Columns:
    t_ns, meter, channel, level = columns
    return t_ns[index], meter[index], channel[index], level[index]


def _concatenate(pieces: list[Columns]) -> Columns:
    return (
        np.concatenate([p[0] for p in pieces]),
        np.concatenate([p[1] for p in pieces]),
        np.concatenate([p[2] for p in pieces]),
        np.concatenate([p[3] for p in pieces]),
    )


def _key(columns: Columns, row: int) -> Key:
    t_ns, meter, channel, level = columns
    return int(meter[row]), int(t_ns[row]), int(channel[row]), int(level[row])


def _rows_at_or_below(columns: Columns, bound: Key) -> int:
    """Return how many leading rows of sorted ``columns`` sort at or below ``bound``."""
    t_ns, meter, channel, level = columns
    lo, hi = 0, len(t_ns)
    # Narrow to the rows equal to the bound field by field: rows before ``lo`` sort below it.
    fields: tuple[AnyInts, ...] = (meter, t_ns, channel, level)
    for column, value in zip(fields, bound, strict=True):
        part = column[lo:hi]
        lo, hi = (
            lo + int(np.searchsorted(part, value, "left")),
            lo + int(np.searchsorted(part, value, "right")),
        )
    return hi


MEMORY_PARTS = 4  # a run merged in memory is handed out in about this many parts


def _merge_in_memory(pieces: list[Columns]) -> Iterator[Chunk]:
    """Merge sorted pieces, a part at a time: the rows of every piece up to a key found by
    sampling them all, so each part is about as large and the caller can feed one part while
    the next is merged (in a thread)."""
    if not pieces:
        return
    samples = sorted(
        _key(piece, len(piece[0]) * j // MEMORY_PARTS)
        for piece in pieces
        for j in range(1, MEMORY_PARTS)
    )
    bounds: list[Key | None] = [
        samples[len(pieces) * j - 1]
        for j in range(1, MEMORY_PARTS)
        if len(pieces) * j <= len(samples)
    ]
    starts = [0] * len(pieces)
    for bound in [*bounds, None]:
        part = []
        for index, piece in enumerate(pieces):
            rest = _take(piece, slice(starts[index], None))
            count = len(rest[0]) if bound is None else _rows_at_or_below(rest, bound)
            if count:
                part.append(_take(rest, slice(0, count)))
                starts[index] += count
        if not part:
            continue
        merged = part[0] if len(part) == 1 else sort_columns(_concatenate(part))
        for lo in range(0, len(merged[0]), FEED_ROWS):
            yield _chunk(_take(merged, slice(lo, lo + FEED_ROWS)))


@dataclass
class Run:
    """One sorted run on file, and the block of it held in memory."""

    path: str
    rows: int
    read: int = 0  # rows of the file loaded so far
    block: Columns | None = None
    start: int = 0  # the block's first row not yet handed out

    @property
    def on_file(self) -> bool:
        return self.read < self.rows

    @property
    def buffered(self) -> int:
        return 0 if self.block is None else len(self.block[0]) - self.start

    def load(self, count: int) -> None:
        """Replace the (spent) block with the next ``count`` rows of the file."""
        count = min(count, self.rows - self.read)
        try:
            with open(self.path, "rb") as handle:

                def at(column: int) -> BinaryIO:
                    """Seek to the next row to load in ``column``."""
                    columns_before = sum(_ITEM_BYTES[:column]) * self.rows
                    handle.seek(columns_before + _ITEM_BYTES[column] * self.read)
                    return handle

                block = (
                    np.fromfile(at(0), np.int64, count),
                    np.fromfile(at(1), np.int32, count),
                    np.fromfile(at(2), np.int8, count),
                    np.fromfile(at(3), np.int8, count),
                )
        except OSError as exc:
            raise SourceError(f"replay: cannot read {self.path}: {exc.strerror or exc}") from None
        if len(block[3]) != count:
            raise SourceError(f"replay: {self.path} was cut short while replay sorted")
        self.block = block
        self.start = 0
        self.read += count

    def last_key(self) -> Key:
        assert self.block is not None and self.buffered
        return _key(self.block, len(self.block[0]) - 1)

    def take(self, bound: Key | None) -> Columns | None:
        """Hand out the buffered rows at or below ``bound`` (all of them for None)."""
        if self.block is None or not self.buffered:
            return None
        rest = _take(self.block, slice(self.start, None))
        count = len(rest[0]) if bound is None else _rows_at_or_below(rest, bound)
        if count == 0:
            return None
        self.start += count
        return _take(rest, slice(0, count))


@dataclass
class RunSorter:
    """Take rows chunk by chunk; hand them back sorted, chunk by chunk (see the module doc).

    Use it as a context manager: leaving it removes the temporary files, whatever happened.
    """

    spill_dir: str | None = None  # where the temporary directory goes; None: $TMPDIR or /tmp
    run_rows: int = field(default_factory=lambda: SORT_RUN_ROWS)
    merge_rows: int = field(default_factory=lambda: MERGE_ROWS)
    runs: list[Run] = field(default_factory=list)
    _pieces: list[Columns] = field(default_factory=list)  # the run being gathered: sorted chunks
    _buffered: int = 0
    _directory: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> RunSorter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Let go of the buffers and remove the temporary files."""
        self._pieces = []
        self._buffered = 0
        self.runs.clear()
        if self._directory is not None:
            self._directory.cleanup()
            self._directory = None

    def add(self, chunk: Chunk) -> None:
        """Take a chunk of rows in any order."""
        # Each chunk sorted as it comes (while the reader parses the next one, on another
        # core): the run's own sort then only merges sorted pieces, which timsort does fast.
        columns = sort_columns(_columns(chunk))
        offset = 0
        while offset < len(columns[0]):
            take = min(len(columns[0]) - offset, self.run_rows - self._buffered)
            self._pieces.append(_take(columns, slice(offset, offset + take)))  # still sorted
            self._buffered += take
            offset += take
            if self._buffered == self.run_rows:
                self._spill()

    def _filled(self) -> Columns:
        """Return the buffered rows, sorted (the sorted pieces merged), and let go of them."""
        pieces, self._pieces, self._buffered = self._pieces, [], 0
        if len(pieces) == 1:
            return pieces[0]
        columns = _concatenate(pieces)
        pieces.clear()  # their memory goes back before the sort takes its own
        return sort_columns(columns)

    def _spill(self) -> None:
        """Sort the buffered rows and write them to a run file of their own."""
        columns = self._filled()
        try:
            if self._directory is None:
                self._directory = tempfile.TemporaryDirectory(
                    prefix="amr-replay-sort-", dir=self.spill_dir
                )
            path = os.path.join(self._directory.name, f"run{len(self.runs):05d}.bin")
            with open(path, "wb") as handle:
                for column in columns:
                    column.tofile(handle)
        except OSError as exc:
            where = self._directory.name if self._directory else self.spill_dir
            raise SourceError(
                f"replay: cannot write the sort's temporary files in "
                f"{where or tempfile.gettempdir()}: {exc.strerror or exc} "
                "(TMPDIR chooses the directory)"
            ) from None
        self.runs.append(Run(path, len(columns[0])))

    def chunks(self) -> Iterator[Chunk]:
        """Yield every row taken, sorted, in chunks of at most :data:`FEED_ROWS` rows."""
        if not self.runs:
            # All rows fitted in one run: no file needed.
            pieces, self._pieces, self._buffered = self._pieces, [], 0
            yield from _merge_in_memory(pieces)
            return
        if self._buffered:
            self._spill()
        yield from self._merge(self.runs)

    def _merge(self, runs: list[Run]) -> Iterator[Chunk]:
        if not runs:
            return
        block_rows = max(MIN_BLOCK_ROWS, self.merge_rows // len(runs))
        for run in runs:
            run.load(block_rows)
        while True:
            waiting = [run for run in runs if run.on_file]
            # No row still on file sorts below the smallest last loaded row (None: all loaded).
            bound = min(run.last_key() for run in waiting) if waiting else None
            pieces = [piece for run in runs if (piece := run.take(bound)) is not None]
            if not pieces:
                return
            merged = pieces[0] if len(pieces) == 1 else sort_columns(_concatenate(pieces))
            for lo in range(0, len(merged[0]), FEED_ROWS):
                yield _chunk(_take(merged, slice(lo, lo + FEED_ROWS)))
            for run in waiting:
                if not run.buffered:
                    run.load(block_rows)
