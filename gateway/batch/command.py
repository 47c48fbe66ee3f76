"""``amr-gateway replay``: reconstruct meters from captured pulse logs (SPEC section 4)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TextIO

from gateway.batch.replay import BatchResult, replay_logs

if TYPE_CHECKING:
    from gateway.batch.dbimport import Imported
from gateway.core.intervals import IntervalBatch
from gateway.core.meter import MeterCore
from gateway.errors import ConfigError
from gateway.timefmt import NS_PER_US, format_iso
from meter_model.units import round_kw


def meter_summary(core: MeterCore) -> dict[str, Any]:
    """Return one meter's figures as SPEC section 4 names them."""
    demand = core.demand
    peak = demand.peak if demand else None
    return {
        "energy_wh": core.energy_wh,
        "edges": {ch: totals.edges for ch, totals in core.totals.items()},
        "first": format_iso(core.first_ns) if core.first_ns is not None else None,
        "last": format_iso(core.last_ns) if core.last_ns is not None else None,
        "peak_demand_kw": float(round_kw(peak.demand_kw)) if peak else 0.0,
        "peak_demand_end": format_iso(peak.window_end_us * NS_PER_US) if peak else None,
        "peak_demand_since": None if core.peak_since_ns is None else format_iso(core.peak_since_ns),
        "glitches": core.glitches,
        "inferred_edges": core.inferred_edges,
        "duplicates": core.duplicates,
        "crosscheck": core.crosscheck.summary(),
        "register": core.register_channel,
        "noise_edges": {ch: totals.noise for ch, totals in core.totals.items()},
    }


CSV_SLICE = 100_000  # intervals formatted at a time: memory stays flat on any span


def _write_intervals(handle: TextIO, intervals: dict[str, IntervalBatch]) -> None:
    handle.write("meter,start,end,energy_wh,edges,demand_kw,quality\n")
    for name in sorted(intervals):
        batch = intervals[name]
        for lo in range(0, len(batch), CSV_SLICE):
            handle.writelines(batch.csv_lines(lo, lo + CSV_SLICE))


def _check_output(option: str, path: str) -> None:
    """Refuse an output path that cannot be written, before any work (issue #12)."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ConfigError(f"{option} {path}: no such directory")
    if os.path.isdir(path):
        raise ConfigError(f"{option} {path}: is a directory")
    try:
        name_max = os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if len(os.path.basename(path).encode()) > name_max:
        raise ConfigError(f"{option} {path}: the file name is longer than {name_max} bytes")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class _Outputs:
    """Output files written beside their targets, all put in place only when all were written.

    A failure (a full disk, an unwritable directory, a plot that cannot be drawn) leaves every
    target as it was. Files get the mode the umask gives, as ``open`` would (not mkstemp's 600).
    """

    def __init__(self) -> None:
        self._done: list[tuple[str, str, str]] = []  # option, temporary, target
        self._mode = 0o666 & ~_umask()

    def temporary(self, option: str, path: str) -> str:
        """Return a new empty file beside ``path`` for the caller to write."""
        suffix = os.path.splitext(path)[1]
        try:
            fd, tmp = tempfile.mkstemp(
                prefix=".amr-", suffix=suffix, dir=os.path.dirname(os.path.abspath(path))
            )
        except OSError as exc:
            raise ConfigError(f"{option} {path}: {exc.strerror or exc}") from None
        os.fchmod(fd, self._mode)
        os.close(fd)
        self._done.append((option, tmp, path))
        return tmp

    @contextmanager
    def open(self, option: str, path: str) -> Iterator[TextIO]:
        tmp = self.temporary(option, path)
        try:
            with open(tmp, "w", encoding="utf-8", newline="") as handle:
                yield handle
        except OSError as exc:
            raise ConfigError(f"{option} {path}: {exc.strerror or exc}") from None

    def __enter__(self) -> _Outputs:
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        try:
            if kind is None:
                for option, tmp, path in self._done:
                    try:
                        os.replace(tmp, path)
                    except OSError as exc:
                        raise ConfigError(f"{option} {path}: {exc.strerror or exc}") from None
        finally:
            for _, tmp, _ in self._done:
                if os.path.exists(tmp):
                    os.unlink(tmp)


class Progress:
    """A one-line progress bar on a terminal; silent when stderr is not one."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self._last = 0.0
        self._shown = False

    def __call__(self, done: int, total: int, rows: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.1 and done < total):
            return
        self._last = now
        fraction = done / total if total else 0.0
        bar = "#" * int(fraction * 30)
        self.stream.write(
            f"\rreplay [{bar:<30}] {fraction:4.0%} {done / 1e6:.1f}/{total / 1e6:.1f} MB "
            f"{rows:,} edges"
        )
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self.stream.write("\r" + " " * 79 + "\r")
            self.stream.flush()


def replay(
    paths: Sequence[str],
    *,
    as_json: bool = False,
    intervals_csv: str | None = None,
    plot_png: str | None = None,
    db_url: str | None = None,
    config_path: str | None = None,
    out: TextIO | None = None,
) -> BatchResult:
    """Run the replay command: reconstruct, then print and write what was asked (to ``out``,
    by default standard output as it is when called)."""
    out = out if out is not None else sys.stdout
    if plot_png is not None:
        from gateway.batch.plot import require_matplotlib

        require_matplotlib()
    for option, path in (("--intervals", intervals_csv), ("--plot", plot_png)):
        if path is not None:
            _check_output(option, path)
    if plot_png is not None and not plot_png.lower().endswith(".png"):
        raise ConfigError(f"--plot {plot_png}: the plot is a PNG image: name it .png")
    settings = None
    if config_path is not None:
        from gateway.config import load_config, settings_by_meter

        settings = settings_by_meter(load_config(config_path))
    progress = Progress(sys.stderr)
    imported: list[Imported] = []
    try:
        if db_url is not None:
            from gateway.batch.dbimport import import_logs

            # Bad input leaves the database untouched, byte for byte (issue #12): nothing is
            # written (or created, or migrated) before the logs were read whole.
            result, imported = import_logs(paths, db_url, progress=progress, settings=settings)
        else:
            result = replay_logs(paths, progress=progress, settings=settings)
    finally:
        progress.close()
    for done in imported:
        print(done.line(), file=sys.stderr)  # what the import did, beside the figures on stdout
    summaries = {name: meter_summary(core) for name, core in sorted(result.cores.items())}
    for name, skipped in result.skipped.items():
        if db_url is not None and name in summaries:
            summaries[name]["skipped"] = skipped
    with _Outputs() as outputs:
        if intervals_csv is not None:
            with outputs.open("--intervals", intervals_csv) as handle:
                _write_intervals(handle, result.intervals)
        if plot_png is not None:
            from gateway.batch.plot import plot_load_profile

            target = outputs.temporary("--plot", plot_png)
            try:
                plot_load_profile(target, result)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"--plot {plot_png}: {exc}") from None
    if as_json:
        json.dump({"meters": summaries}, out, indent=2)
        out.write("\n")
    else:
        for name, summary in summaries.items():
            check = summary["crosscheck"]
            out.write(
                f"{name}: {summary['energy_wh']} Wh ({summary['energy_wh'] / 1000:.3f} kWh) "
                f"from {summary['first']} to {summary['last']}; "
                f"edges 10={summary['edges']['10']} 1K={summary['edges']['1K']}; "
                f"peak demand {summary['peak_demand_kw']:.2f} kW "
                f"since {summary['peak_demand_since']} "
                f"(window ending {summary['peak_demand_end']}); "
                f"glitches {summary['glitches']}, inferred {summary['inferred_edges']}, "
                f"duplicates {summary['duplicates']}; cross-check {check['status']}\n"
            )
    return result
