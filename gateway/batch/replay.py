"""Reconstruct meters from captured pulse logs as fast as the machine allows (replay).

Logs are read chunk by chunk (:mod:`gateway.pulselog.scan`) and fed to one :class:`MeterCore` per
meter through its vectorised path. Memory stays flat while each meter's rows come in time order
across chunks and files, as the gateway's own capture writes them. Logs whose rows are out of order
beyond one chunk are sorted in bounded memory (:mod:`gateway.batch.extsort`: sorted runs spilled
to temporary files, then merged), and the sorted rows are fed chunk by chunk the same way, so any
order works and gives the same result. The chunks read before the disorder showed are kept while
they are few (:data:`KEEP_ROWS`), so a log out of order from its start (reversed, shuffled,
concatenated captures) is read once: what was read goes to the sorter, and reading goes on.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from gateway.batch.extsort import RunSorter
from gateway.core.edge import CHANNEL_1K, CHANNEL_10
from gateway.core.hygiene import skip_seen
from gateway.core.intervals import IntervalBatch
from gateway.core.meter import CoreSettings, MeterCore
from gateway.pulselog.scan import Chunk, LogScanner, LogSpan, file_size, order_rows
from gateway.timefmt import format_iso, parse_time_ns

# Rows of the chunks read so far kept for the sorter, should they turn out to be out of order:
# beyond them the logs are read again to be sorted (about 7 MB of columns).
KEEP_ROWS = 1 << 19

# Sorted chunks merged ahead of the cores (each some 2 MB): a merge round's worth.
SORTED_AHEAD = 8

T = TypeVar("T")
I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]


_DONE = object()


def prefetch(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Run ``items`` in a thread, ``depth`` ahead: reading and parsing overlap reconstruction.

    numpy releases the GIL in its loops, so the two really run side by side on two cores.
    An exception in the thread is raised here; stopping early stops the thread.
    """
    out: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        """Hand ``item`` over; return False once the consumer has stopped."""
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        # Every put gives up once the consumer stops: a plain put of the end marker into a
        # full queue would block forever, and the consumer's join with it.
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)

    worker = threading.Thread(target=produce, name="replay-reader", daemon=True)
    worker.start()
    try:
        while True:
            item = out.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()


class _NeedsSort(Exception):
    """Rows of a meter came out of order across chunks: start again, sorting them."""


@dataclass
class BatchResult:
    """What a replay reconstructed: one core per meter, and each meter's intervals."""

    cores: dict[str, MeterCore]
    intervals: dict[str, IntervalBatch]
    rows: int
    sort_runs: int = 0  # 0: rows came in order; 1: sorted in memory; more: spilled and merged
    files: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    # Per meter, the stretches between its logs' windows that no log covered (SPEC 2: a gap).
    holes: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    # Per meter, its logs' windows joined: where the logs say someone watched.
    windows: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    # Per log (by path), each meter's rows in it and the window it says it watched.
    spans: dict[str, dict[str, LogSpan]] = field(default_factory=dict)


CoreFactory = Callable[[str, int], MeterCore]


def watched_until(core: MeterCore) -> int | None:
    """Return where a restored core's watching ended (its log's end, else its last edge)."""
    return core.ended_ns if core.ended_ns is not None else core.last_ns


class _Feeder:
    """Feed chunks to each meter's core, and mark the time between its logs as gaps.

    Holes are found as the logs come (``log_start``/``log_end``: a log starting after where
    the ones before it ended), or, when the rows are fed sorted after all logs were read, given
    whole in ``pending``. Either way a hole is marked on the core just before the first edge
    after it.
    """

    def __init__(self, make_core: CoreFactory, *, incremental: bool) -> None:
        self.make_core = make_core
        self.incremental = incremental
        self.cores: dict[str, MeterCore] = {}
        self.resume: dict[str, dict[str, tuple[int, int]]] = {}
        self.skipped: dict[str, int] = {}
        self.last: dict[str, tuple[int, dict[str, tuple[int, int]]]] = {}
        self.reach: dict[str, int | None] = {}  # where watching has ended so far, per meter
        self.covered: dict[str, tuple[int, int] | None] = {}  # what a restored core watched
        self.pending: dict[str, list[tuple[int, int]]] = {}  # holes to mark, in time order
        self.marked: dict[str, list[tuple[int, int]]] = {}
        self._log_start: int | None = None  # the current log's start=, when incremental
        self._in_log: set[str] = set()

    def core(self, name: str, first_ns: int) -> MeterCore:
        core = self.cores.get(name)
        if core is None:
            core = self.cores[name] = self.make_core(name, first_ns)
            # What a restored core has already seen is skipped (and counted), per channel.
            self.resume[name] = core.last_seen()
            self.skipped[name] = 0
            until = watched_until(core) if core.last_seen() or core.ended_ns else None
            self.reach[name] = until
            self.covered[name] = (
                None if until is None or core.start_ns is None else (core.start_ns, until)
            )
            self.pending.setdefault(name, [])
            self.marked[name] = []
        return core

    def log_start(self, start_ns: int | None) -> None:
        """A new log begins (``start_ns``: its ``start=``)."""
        self._log_start = start_ns
        self._in_log = set()

    def log_end(self, end_ns: int | None) -> None:
        """The current log has ended (``end_ns``: its ``end=``)."""
        if end_ns is not None:
            for name in self._in_log:
                reach = self.reach.get(name)
                self.reach[name] = end_ns if reach is None else max(reach, end_ns)

    def _arrive(self, name: str, first_ns: int, last_ns: int) -> None:
        """Note a meter's rows in the current log; a log starting beyond the reach is a hole."""
        if not self.incremental:
            return
        reach = self.reach.get(name)
        if name not in self._in_log:
            self._in_log.add(name)
            start = first_ns if self._log_start is None else min(self._log_start, first_ns)
            if reach is not None and start > reach:
                self.pending[name].append((reach, start))
        self.reach[name] = last_ns if reach is None else max(reach, last_ns)

    def _push(self, name: str, core: MeterCore, blocks: dict[str, tuple[I64, I8]]) -> None:
        pending = self.pending.get(name)
        while pending and any(int(t[-1]) >= pending[0][1] for t, _ in blocks.values()):
            gap_from, gap_to = pending.pop(0)
            before: dict[str, tuple[I64, I8]] = {}
            after: dict[str, tuple[I64, I8]] = {}
            for ch, (t, lv) in blocks.items():
                cut = int(np.searchsorted(t, gap_to, side="left"))
                if cut:
                    before[ch] = (t[:cut], lv[:cut])
                if cut < len(t):
                    after[ch] = (t[cut:], lv[cut:])
            if before:
                core.push_chunk(before)
            core.mark_gap(
                gap_from,
                gap_to,
                f"no log covers {format_iso(gap_from)} to {format_iso(gap_to)}: not watched",
            )
            self.marked[name].append((gap_from, gap_to))
            blocks = after
        if blocks:
            core.push_chunk(blocks)

    def _skip_seen(self, name: str, channel: str, t: I64, lv: I8) -> tuple[I64, I8]:
        t, lv, skipped = skip_seen(self.resume[name].get(channel), t, lv)
        self.skipped[name] += skipped
        return t, lv

    def feed(self, names: Sequence[str], chunk: Chunk, *, check_order: bool) -> None:
        meter_ids = chunk.meter_ids() if len(names) > 1 else [int(chunk.meter[0])]
        for meter_id in meter_ids:
            if len(meter_ids) > 1:
                rows = chunk.meter == meter_id
                t, ch, lv = chunk.t_ns[rows], chunk.channel[rows], chunk.level[rows]
            else:
                t, ch, lv = chunk.t_ns, chunk.channel, chunk.level
            name = names[meter_id]
            core = self.core(name, int(t.min()))
            blocks: dict[str, tuple[I64, I8]] = {}
            for code, channel in ((0, CHANNEL_10), (1, CHANNEL_1K)):
                mask = ch == code
                if mask.all():
                    block = order_rows(t, lv)
                elif mask.any():
                    block = order_rows(t[mask], lv[mask])
                else:
                    continue
                block = self._skip_seen(name, channel, *block)
                if len(block[0]):
                    blocks[channel] = block
            if not blocks:
                continue
            if check_order:
                self._check_order(name, blocks)
            self._arrive(
                name,
                min(int(t[0]) for t, _ in blocks.values()),
                max(int(t[-1]) for t, _ in blocks.values()),
            )
            self._push(name, core, blocks)

    def _check_order(self, name: str, blocks: dict[str, tuple[I64, I8]]) -> None:
        """Raise _NeedsSort unless this chunk comes wholly after the meter's earlier chunks."""
        first = min(int(t[0]) for t, _ in blocks.values())
        previous = self.last.get(name)
        if previous is not None:
            last_ns, last_rows = previous
            if first < last_ns:
                raise _NeedsSort
            for channel, (t, lv) in blocks.items():
                if channel in last_rows and (int(t[0]), int(lv[0])) <= last_rows[channel]:
                    raise _NeedsSort
        last_rows = dict(previous[1]) if previous is not None else {}
        for channel, (t, lv) in blocks.items():
            last_rows[channel] = (int(t[-1]), int(lv[-1]))
        self.last[name] = (max(int(t[-1]) for t, _ in blocks.values()), last_rows)


def replay_logs(
    paths: Sequence[str],
    make_core: CoreFactory | None = None,
    progress: Callable[[int, int, int], None] | None = None,
    *,
    finish: bool = True,
    settings: dict[str, CoreSettings] | None = None,
    spill_dir: str | None = None,
) -> BatchResult:
    """Reconstruct every meter in ``paths``; ``progress(bytes_done, bytes_total, rows)``.

    ``make_core(name, start_ns)`` supplies each meter's core (a restored one, for an import
    into the database), starting where its own logs say observation started (or its first
    edge); edges it has already seen are skipped and counted. The end of the logs confirms each
    meter's last edge and closes its intervals through its own logs' ``end=`` (or its last
    edge). Without ``finish`` (an import, which a later log may continue) the interval holding
    the end is returned all the same but stays open in the core (``MeterCore.tail_ns``).
    Rows out of order are sorted through temporary files in ``spill_dir`` (None: ``$TMPDIR``
    or ``/tmp``).
    """
    make_core = make_core or _fresh_cores(settings or {})
    try:
        with RunSorter(spill_dir) as sorter:
            return _replay(paths, make_core, progress, finish=finish, sorter=sorter)
    except _NeedsSort:
        pass
    # Out of the handler, whose traceback would hold the first pass (its cores, its last chunk).
    with RunSorter(spill_dir) as sorter:
        return _replay(paths, make_core, progress, finish=finish, sorter=sorter, sort=True)


def _windows(scanners: list[LogScanner]) -> dict[str, tuple[int | None, int | None]]:
    """Return each meter's observation window: the earliest ``start=`` and the latest ``end=``
    of the logs that hold its rows. Other meters' logs never change it (issue #11)."""
    windows: dict[str, tuple[int | None, int | None]] = {}
    for scanner in scanners:
        start = parse_time_ns(scanner.metadata["start"]) if "start" in scanner.metadata else None
        end = parse_time_ns(scanner.metadata["end"]) if "end" in scanner.metadata else None
        for name in scanner.meters:
            old_start, old_end = windows.get(name, (None, None))
            windows[name] = (
                _pick(min, old_start, start),
                _pick(max, old_end, end),
            )
    return windows


def _log_windows(
    scanners: list[LogScanner], rows: list[dict[str, tuple[int, int]]]
) -> dict[str, list[tuple[int, int]]]:
    """Return each meter's watched windows, joined: per log that holds its rows, ``start=``
    (else its first row) to ``end=`` (else its last row); a row outside extends it."""
    spans: dict[str, list[tuple[int, int]]] = {}
    for scanner, seen in zip(scanners, rows, strict=True):
        start = parse_time_ns(scanner.metadata["start"]) if "start" in scanner.metadata else None
        end = parse_time_ns(scanner.metadata["end"]) if "end" in scanner.metadata else None
        for name, (first, last) in seen.items():
            lo = first if start is None else min(start, first)
            hi = last if end is None else max(end, last)
            spans.setdefault(name, []).append((lo, hi))
    return {name: _joined(found) for name, found in spans.items()}


def _joined(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _holes(
    windows: list[tuple[int, int]], covered: tuple[int, int] | None
) -> list[tuple[int, int]]:
    """Return the time between watched windows (and after what a restored core covered)."""
    spans = _joined([*windows, covered] if covered is not None else windows)
    holes = [(a[1], b[0]) for a, b in itertools.pairwise(spans)]
    if covered is not None:
        holes = [(a, b) for a, b in holes if b > covered[1]]
    return holes


def _row_ranges(names: list[str], chunk: Chunk, seen: dict[str, tuple[int, int]]) -> None:
    """Widen each meter's (first, last) row times in one log by a chunk's rows."""
    ids = chunk.meter_ids()
    for meter_id in ids:
        t = chunk.t_ns if len(ids) == 1 else chunk.t_ns[chunk.meter == meter_id]
        name = names[meter_id]
        lo, hi = int(t.min()), int(t.max())
        old = seen.get(name)
        seen[name] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))


def _pick(choose: Callable[[int, int], int], a: int | None, b: int | None) -> int | None:
    if a is None or b is None:
        return a if b is None else b
    return choose(a, b)


def _replay(
    paths: Sequence[str],
    make_core: CoreFactory,
    progress: Callable[[int, int, int], None] | None,
    *,
    finish: bool,
    sorter: RunSorter,
    sort: bool = False,
) -> BatchResult:
    """Read the logs; feed each chunk as it comes, or (``sort``, or once rows come out of
    order) all rows through the ``sorter``. Raise _NeedsSort when rows came out of order after
    more than :data:`KEEP_ROWS` rows were read: the caller reads them again, sorting."""
    total = sum(file_size(p) for p in paths)
    done_before = 0
    rows = 0
    scanners: list[LogScanner] = []
    names: list[str] = []  # meter names across files, by global index
    started: dict[str, int | None] = {}  # the window start each core was made with

    def starting_at(name: str, first_ns: int) -> MeterCore:
        start = _windows(scanners).get(name, (None, None))[0]
        started[name] = start
        return make_core(name, first_ns if start is None else min(start, first_ns))

    feeder = _Feeder(starting_at, incremental=not sort)
    log_rows: list[dict[str, tuple[int, int]]] = []  # per log, each meter's first and last row
    kept: list[Chunk] | None = None if sort else []  # read so far, while few: None once not
    kept_rows = 0

    def start_sorting() -> _Feeder:
        """Hand the chunks read so far to the sorter; return a feeder for the sorted rows."""
        nonlocal sort, kept
        if kept is None:
            raise _NeedsSort  # too much was read to keep: the caller reads it all again
        sort = True
        started.clear()
        for old in kept:
            sorter.add(old)
        kept = None
        return _Feeder(starting_at, incremental=False)

    for path in paths:
        scanner = LogScanner(path)
        scanners.append(scanner)
        seen: dict[str, tuple[int, int]] = {}
        log_rows.append(seen)
        started_log = False

        def report(done: int, base: int = done_before) -> None:
            if progress is not None:
                progress(base + done, total, rows)  # noqa: B023 - the count so far, late bound

        for chunk in prefetch(scanner.chunks(report)):
            # Map this file's meter indices to global ones.
            local_to_global = [_index(names, m) for m in scanner.meters]
            if local_to_global != list(range(len(local_to_global))):
                chunk.meter = np.array(local_to_global, np.int32)[chunk.meter]
            rows += len(chunk.t_ns)
            _row_ranges(names, chunk, seen)
            if sort:
                sorter.add(chunk)
                continue
            if kept is not None:
                kept_rows += len(chunk.t_ns)
                if kept_rows <= KEEP_ROWS:
                    kept.append(chunk)
                else:
                    kept = None
            if not started_log:
                started_log = True
                meta = scanner.metadata
                feeder.log_start(parse_time_ns(meta["start"]) if "start" in meta else None)
            try:
                feeder.feed(names, chunk, check_order=True)
            except _NeedsSort:
                feeder = start_sorting()
        if started_log:
            meta = scanner.metadata
            feeder.log_end(parse_time_ns(meta["end"]) if "end" in meta else None)
        done_before += file_size(path)
    windows = _windows(scanners)
    log_windows = _log_windows(scanners, log_rows)
    if not sort and (
        # A later log moved a meter's start back, or covered a hole already marked: start
        # again, knowing it.
        any(windows[name][0] != start for name, start in started.items())
        or any(
            feeder.marked[name] != _holes(log_windows[name], feeder.covered[name])
            for name in feeder.cores
        )
    ):
        feeder = start_sorting()
    if sort:
        # Each meter's rows in time order, chunk by chunk: the core's result does not depend
        # on where the chunks are cut. The holes between the logs are known whole by now.
        # Merged in a thread, a few chunks ahead: the next block is merged while one is fed.
        for chunk in prefetch(sorter.chunks(), depth=SORTED_AHEAD):
            for meter_id in chunk.meter_ids():
                name = names[meter_id]
                if name not in feeder.cores:
                    first = int(chunk.t_ns[chunk.meter == meter_id].min())
                    feeder.core(name, first)
                    feeder.pending[name] = _holes(log_windows[name], feeder.covered[name])
            feeder.feed(names, chunk, check_order=False)
    intervals = {}
    for name, core in feeder.cores.items():
        end = windows.get(name, (None, None))[1]
        # The end of a log confirms its last edge (SPEC 3): an import finishes too, but keeps
        # the interval holding the end open for a log that may continue it.
        batch = core.finish(end, keep_open=not finish)
        if batch is not None:
            intervals[name] = batch
    sort_runs = 0 if not sort else max(1, len(sorter.runs))
    return BatchResult(
        feeder.cores,
        intervals,
        rows,
        sort_runs,
        list(paths),
        feeder.skipped,
        holes={name: list(marked) for name, marked in feeder.marked.items()},
        windows={name: log_windows[name] for name in feeder.cores},
        spans={
            scanner.path: scanner.spans(seen)
            for scanner, seen in zip(scanners, log_rows, strict=True)
        },
    )


def _fresh_cores(settings: dict[str, CoreSettings]) -> CoreFactory:
    """Cores for a plain replay: configured meters' settings, defaults for the rest."""

    def make(name: str, first_ns: int) -> MeterCore:
        return MeterCore(name, settings.get(name) or CoreSettings(), start_ns=first_ns)

    return make


def _index(names: list[str], name: str) -> int:
    try:
        return names.index(name)
    except ValueError:
        names.append(name)
        return len(names) - 1
