"""The shortest correct polars programs giving `amr-gateway replay LOG --intervals OUT`'s CSV.

Correct for clean logs (the simulated ones the benchmarks use: no duplicates, glitches or
missed edges to infer), in any row order: each meter's `10` edges counted per 15-minute
interval aligned to UTC, every interval of the log's `start=`..`end=` window listed, demand the
interval's energy over its length, `partial` where the window cuts an interval. Two variants:
duplicates dropped with ``unique()``, or by sorting and comparing each row with the one before.

    python benchmarks/polars_peers.py unique|sort LOG OUT
"""

from __future__ import annotations

import re
import sys

import polars as pl

STEP_S = 900


def window(path: str) -> tuple[int, int]:
    """The log's observation window in epoch seconds, from its ``start=`` and ``end=``."""
    meta: dict[str, str] = {}
    with open(path) as handle:
        for line in handle:
            if not line.startswith("#"):
                break
            meta.update(re.findall(r"(start|end)=(\S+)", line))
    start, end = (
        pl.Series([meta["start"], meta["end"]]).str.to_datetime(time_zone="UTC").dt.epoch("s")
    )
    return int(start), int(end)


def edges(path: str, variant: str) -> pl.LazyFrame:
    rows = pl.scan_csv(
        path, comment_prefix="#", schema_overrides={"time": pl.String, "channel": pl.String}
    )
    rows = rows.filter(pl.col("channel") == "10")
    if variant == "unique":
        rows = rows.unique()
    else:  # sort, then drop each row equal to the one before
        rows = rows.sort("meter", "time", "level")
        same = pl.all_horizontal(pl.col(c) == pl.col(c).shift() for c in ("meter", "time", "level"))
        rows = rows.filter(~same.fill_null(False))
    # Whole seconds decide the interval (an edge on a boundary belongs to the later one).
    seconds = pl.col("time").str.split(".").list.first().cast(pl.Int64)
    return rows.group_by("meter", (seconds // STEP_S * STEP_S).alias("start")).agg(
        pl.len().alias("edges")
    )


def intervals(path: str, variant: str) -> pl.DataFrame:
    start_s, end_s = window(path)
    counted = edges(path, variant).collect()
    first = start_s // STEP_S * STEP_S
    last = max(end_s, int(counted["start"].max()) + 1)  # an edge at the very end counts
    grid = pl.DataFrame({"start": range(first, last, STEP_S)})
    grid = counted.select("meter").unique().join(grid, how="cross")
    out = grid.join(counted, on=["meter", "start"], how="left").with_columns(
        pl.col("edges").fill_null(0).cast(pl.Int64)
    )
    iso = "%Y-%m-%dT%H:%M:%SZ"
    centi_kw = pl.col("edges") * 2  # 5 Wh an edge over a quarter hour: 0.02 kW an edge
    return out.sort("meter", "start").select(
        "meter",
        pl.from_epoch("start").dt.strftime(iso),
        pl.from_epoch(pl.col("start") + STEP_S).dt.strftime(iso).alias("end"),
        (pl.col("edges") * 5).alias("energy_wh"),
        "edges",
        pl.format("{}.{}", centi_kw // 100, (centi_kw % 100).cast(pl.String).str.zfill(2)).alias(
            "demand_kw"
        ),
        pl.when((pl.col("start") < start_s) | (pl.col("start") + STEP_S > end_s))
        .then(pl.lit("partial"))
        .otherwise(pl.lit("complete"))
        .alias("quality"),
    )


if __name__ == "__main__":
    variant, log, out = sys.argv[1:4]
    intervals(log, variant).write_csv(out)
