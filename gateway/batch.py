"""Reconstruct meters from captured pulse logs as fast as the machine allows (replay).

Logs are read chunk by chunk (:mod:`gateway.logscan`) and fed to one :class:`MeterCore` per meter
through its vectorised path. Memory stays flat while each meter's rows come in time order across
chunks and files, as the gateway's own capture writes them. A log whose rows are out of order
beyond one chunk is read again and sorted in memory (about 14 bytes per edge), so any order works.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from gateway.core.edge import CHANNEL_1K, CHANNEL_10
from gateway.core.intervals import IntervalBatch
from gateway.core.meter import CoreSettings, MeterCore
from gateway.logscan import Chunk, LogScanner, file_size
from gateway.timefmt import parse_time_ns

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

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        out.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            out.put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            out.put(exc)

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
    """Rows of a meter came out of order across chunks: start again, sorting in memory."""


@dataclass
class BatchResult:
    """What a replay reconstructed: one core per meter, and each meter's intervals."""

    cores: dict[str, MeterCore]
    intervals: dict[str, IntervalBatch]
    rows: int
    sorted_in_memory: bool = False
    files: list[str] = field(default_factory=list)


def _order(t: I64, lv: I8) -> tuple[I64, I8]:
    """Return a channel's rows sorted by (time, level), cheaply when they already are."""
    if len(t) < 2:
        return t, lv
    dt = np.diff(t)
    if np.all((dt > 0) | ((dt == 0) & (np.diff(lv) >= 0))):
        return t, lv
    order = np.lexsort((lv, t))
    return t[order], lv[order]


class _Feeder:
    def __init__(self, settings_for: Callable[[str], CoreSettings], start_ns: int | None) -> None:
        self.settings_for = settings_for
        self.start_ns = start_ns
        self.cores: dict[str, MeterCore] = {}
        self.last: dict[str, tuple[int, dict[str, tuple[int, int]]]] = {}

    def core(self, name: str, first_ns: int) -> MeterCore:
        core = self.cores.get(name)
        if core is None:
            start = first_ns if self.start_ns is None else min(self.start_ns, first_ns)
            core = self.cores[name] = MeterCore(name, self.settings_for(name), start_ns=start)
        return core

    def feed(self, names: Sequence[str], chunk: Chunk, *, check_order: bool) -> None:
        meter_ids = np.unique(chunk.meter) if len(names) > 1 else np.array([chunk.meter[0]])
        for meter_id in meter_ids.tolist():
            if len(meter_ids) > 1:
                rows = chunk.meter == meter_id
                t, ch, lv = chunk.t_ns[rows], chunk.channel[rows], chunk.level[rows]
            else:
                t, ch, lv = chunk.t_ns, chunk.channel, chunk.level
            name = names[meter_id]
            blocks: dict[str, tuple[I64, I8]] = {}
            for code, channel in ((0, CHANNEL_10), (1, CHANNEL_1K)):
                mask = ch == code
                if mask.all():
                    blocks[channel] = _order(t, lv)
                elif mask.any():
                    blocks[channel] = _order(t[mask], lv[mask])
            if check_order:
                self._check_order(name, blocks)
            core = self.core(name, int(t.min()))
            core.push_chunk(blocks)

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
    settings_for: Callable[[str], CoreSettings] = lambda _name: CoreSettings(),
    progress: Callable[[int, int, int], None] | None = None,
) -> BatchResult:
    """Reconstruct every meter in ``paths``; ``progress(bytes_done, bytes_total, rows)``."""
    try:
        return _replay(paths, settings_for, progress, sort=False)
    except _NeedsSort:
        return _replay(paths, settings_for, progress, sort=True)


def _window(scanners: list[LogScanner]) -> tuple[int | None, int | None]:
    starts = [parse_time_ns(s.metadata["start"]) for s in scanners if "start" in s.metadata]
    ends = [parse_time_ns(s.metadata["end"]) for s in scanners if "end" in s.metadata]
    return (min(starts) if starts else None, max(ends) if ends else None)


def _replay(
    paths: Sequence[str],
    settings_for: Callable[[str], CoreSettings],
    progress: Callable[[int, int, int], None] | None,
    *,
    sort: bool,
) -> BatchResult:
    total = sum(file_size(p) for p in paths)
    done_before = 0
    rows = 0
    scanners: list[LogScanner] = []
    names: list[str] = []  # meter names across files, by global index
    feeder: _Feeder | None = None
    held: list[tuple[I64, npt.NDArray[np.int32], I8, I8]] = []
    for path in paths:
        scanner = LogScanner(path)
        scanners.append(scanner)

        def report(done: int, base: int = done_before) -> None:
            if progress is not None:
                progress(base + done, total, rows)  # noqa: B023 - the count so far, late bound

        for chunk in prefetch(scanner.chunks(report)):
            # Map this file's meter indices to global ones.
            local_to_global = np.array([_index(names, m) for m in scanner.meters], np.int32)
            chunk.meter = local_to_global[chunk.meter]
            rows += len(chunk.t_ns)
            if sort:
                held.append((chunk.t_ns, chunk.meter, chunk.channel, chunk.level))
                continue
            if feeder is None:
                start, _ = _window(scanners)
                feeder = _Feeder(settings_for, start)
            feeder.feed(names, chunk, check_order=True)
        done_before += file_size(path)
    start, end = _window(scanners)
    if sort:
        feeder = _Feeder(settings_for, start)
        if held:
            t = np.concatenate([h[0] for h in held])
            meter = np.concatenate([h[1] for h in held])
            channel = np.concatenate([h[2] for h in held])
            level = np.concatenate([h[3] for h in held])
            held.clear()
            order = np.lexsort((level, channel, t, meter))
            feeder.feed(
                names,
                Chunk(t[order], meter[order], channel[order], level[order]),
                check_order=False,
            )
    if feeder is None:
        feeder = _Feeder(settings_for, start)
    intervals = {}
    for name, core in feeder.cores.items():
        batch = core.finish(end)
        if batch is not None:
            intervals[name] = batch
    return BatchResult(feeder.cores, intervals, rows, sort, list(paths))


def _index(names: list[str], name: str) -> int:
    try:
        return names.index(name)
    except ValueError:
        names.append(name)
        return len(names) - 1
