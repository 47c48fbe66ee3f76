"""``amr-gateway replay`` end to end: outputs, bad input, several logs and meters."""

from __future__ import annotations

import csv
import gzip
import json
import random
from pathlib import Path

import pytest

T0 = 1_764_057_600  # 2025-11-25T08:00:00Z


def write_log(path: Path, rows: list[tuple[str, str, str, int]], comments: str = "") -> Path:
    text = (
        comments
        + "time,meter,channel,level\n"
        + "".join(f"{t},{m},{c},{lv}\n" for t, m, c, lv in rows)
    )
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


def simulated(cli, tmp_path: Path, name: str, profile: str, meter: str = "meter1") -> Path:
    p = tmp_path / f"{name}-profile.csv"
    p.write_text(profile)
    out = tmp_path / f"{name}.csv"
    result = cli("simulate", "--profile", str(p), "--out", str(out), "--meter", meter)
    assert result.returncode == 0, result.stderr
    return out


def replay_json(cli, *args: str) -> dict:
    result = cli("replay", *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["meters"]


def test_twelve_kw_for_ten_minutes_replays_to_2000_wh(cli, tmp_path) -> None:
    log = simulated(cli, tmp_path, "a", f"time,kw\n{T0},12\n{T0 + 600},0\n")
    intervals = tmp_path / "iv.csv"
    meters = replay_json(cli, str(log), "--intervals", str(intervals))
    m = meters["meter1"]
    assert m["energy_wh"] == 2000
    assert m["edges"] == {"10": 400, "1K": 4}
    assert m["first"] == "2025-11-25T08:00:01.500000Z"
    assert m["last"] == "2025-11-25T08:10:00Z"
    assert m["glitches"] == m["inferred_edges"] == m["duplicates"] == 0
    assert m["crosscheck"]["status"] == "ok"
    # 12 kW from 08:00 to 08:10 is an edge every 1.5 s. The edge at 08:05:00 belongs to the later
    # sub-interval, so 08:00 holds 199 edges (995 Wh) and 08:05 holds 200 (1000 Wh); the edge at
    # 08:10:00 opens a sub-interval that observation never closed. The window ending 08:10 has
    # 1995 Wh over 15 minutes: 7.98 kW (the meter itself, integrating continuously, shows 8.00).
    assert m["peak_demand_kw"] == 7.98
    assert m["peak_demand_end"] == "2025-11-25T08:10:00Z"
    rows = list(csv.DictReader(intervals.open()))
    assert rows == [
        {
            "meter": "meter1",
            "start": "2025-11-25T08:00:00Z",
            "end": "2025-11-25T08:15:00Z",
            "energy_wh": "2000",
            "edges": "400",
            "demand_kw": "8.00",
            "quality": "partial",  # the log says observation ended at 08:10
        }
    ]


def test_same_result_plain_gzip_and_shuffled(cli, tmp_path) -> None:
    log = simulated(cli, tmp_path, "b", f"time,kw\n{T0},7.5\n{T0 + 1800},2\n{T0 + 3600},0\n")
    lines = log.read_text().splitlines()
    head = [line for line in lines if line.startswith("#") or line.startswith("time")]
    body = [line for line in lines if line[:1].isdigit()]
    random.Random(7).shuffle(body)
    shuffled = tmp_path / "shuffled.csv"
    shuffled.write_text("\n".join(head + body) + "\n")
    zipped = tmp_path / "b.csv.gz"
    with gzip.open(zipped, "wt") as handle:
        handle.write(log.read_text())
    plain = replay_json(cli, str(log))
    assert replay_json(cli, str(zipped)) == plain
    assert replay_json(cli, str(shuffled)) == plain
    assert plain["meter1"]["energy_wh"] == 7500 // 2 + 1000  # 3.75 kWh + 1 kWh


def test_two_meters_interleaved_and_split_across_logs(cli, tmp_path) -> None:
    a = simulated(cli, tmp_path, "a", f"time,kw\n{T0},6\n{T0 + 900},0\n", meter="unit-101")
    b = simulated(cli, tmp_path, "b", f"time,kw\n{T0},3\n{T0 + 900},0\n", meter="unit-102")
    rows = sorted(
        [line for path in (a, b) for line in path.read_text().splitlines() if line[:1].isdigit()]
    )
    both = tmp_path / "both.csv"
    both.write_text("time,meter,channel,level\n" + "\n".join(rows) + "\n")
    meters = replay_json(cli, str(both))
    assert meters["unit-101"]["energy_wh"] == 1500
    assert meters["unit-102"]["energy_wh"] == 750
    half = len(rows) // 2
    first, second = tmp_path / "day1.csv", tmp_path / "day2.csv.gz"
    first.write_text("time,meter,channel,level\n" + "\n".join(rows[:half]) + "\n")
    with gzip.open(second, "wt") as handle:
        handle.write("time,meter,channel,level\n" + "\n".join(rows[half:]) + "\n")
    split = replay_json(cli, str(first), str(second))
    assert split == meters
    # Logs given out of order are sorted in memory: same answer.
    assert replay_json(cli, str(second), str(first)) == meters


def test_glitch_missed_edge_and_duplicate_are_counted(cli, tmp_path) -> None:
    rows = [
        (f"{T0}.000000", "m", "10", 1),
        (f"{T0 + 1}.000000", "m", "10", 0),
        (f"{T0 + 1}.000000", "m", "10", 0),  # exact duplicate
        (f"{T0 + 2}.000000", "m", "10", 1),
        (f"{T0 + 2}.001000", "m", "10", 0),  # held 1 ms: a glitch, both edges dropped
        (f"{T0 + 3}.000000", "m", "10", 0),  # repeated level: one edge missed before it
        (f"{T0 + 4}.000000", "m", "10", 1),
    ]
    log = write_log(tmp_path / "faults.csv", rows)
    m = replay_json(cli, str(log))["m"]
    assert m["duplicates"] == 1
    assert m["glitches"] == 1
    assert m["inferred_edges"] == 1
    # counted: t0, t0+1, t0+2.5 (inferred), t0+3, t0+4 = 5 edges of 5 Wh
    assert m["edges"]["10"] == 5 and m["energy_wh"] == 25


def test_missing_1k_edges_are_a_mismatch(cli, tmp_path) -> None:
    log = simulated(cli, tmp_path, "c", f"time,kw\n{T0},30\n{T0 + 3600},0\n")
    lines = log.read_text().splitlines()
    one_k = [i for i, line in enumerate(lines) if ",1K," in line]
    # Two 1K edges lost on the wire (an even number: the levels still alternate).
    drop = set(one_k[10:12])
    damaged = tmp_path / "damaged.csv"
    damaged.write_text("\n".join(line for i, line in enumerate(lines) if i not in drop) + "\n")
    m = replay_json(cli, str(damaged))["meter1"]
    assert m["energy_wh"] == 30_000  # the register is the `10` channel, which is whole
    check = m["crosscheck"]
    assert check["status"] == "mismatch"
    assert check["missed_wh"]["1K"] == 1000
    assert check["missed_wh"]["10"] == 0
    assert m["inferred_edges"] == 0
    assert m["edges"]["1K"] == 58
    # An odd number lost shows as a repeated level too: hygiene counts one back.
    drop = set(one_k[10:13])
    damaged.write_text("\n".join(line for i, line in enumerate(lines) if i not in drop) + "\n")
    m = replay_json(cli, str(damaged))["meter1"]
    assert m["inferred_edges"] == 1 and m["edges"]["1K"] == 58
    assert m["crosscheck"]["missed_wh"]["1K"] == 1000


@pytest.mark.parametrize(
    ("body", "line", "needle"),
    [
        ("time,meter,channel,level\n1764057600,m,10,1\n1764057601,m,1X,0\n", 3, "channel"),
        ("time,meter,channel,level\n1764057600,m,10,1\n1764057601,m,10\n", 3, "4 fields"),
        ("time,meter,channel,level\n1764057600,m,10,1\nlater,m,10,0\n", 3, "time"),
        ("time,meter,channel,level\n1764057600,m,10,7\n", 2, "level"),
        ("# c\ntime,meter,chan,level\n", 2, "header"),
        ("time,meter,channel,level\n1764057600,bad name,10,1\n", 2, "meter name"),
    ],
)
def test_bad_input_stops_with_file_and_line(
    cli, tmp_path, body: str, line: int, needle: str
) -> None:
    good = simulated(cli, tmp_path, "g", f"time,kw\n{T0},1\n{T0 + 60},0\n")
    bad = tmp_path / "bad.csv"
    bad.write_text(body)
    out = tmp_path / "iv.csv"
    result = cli("replay", str(good), str(bad), "--json", "--intervals", str(out))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert f"{bad}:{line}" in result.stderr and needle in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not out.exists()  # nothing half-written
    assert not list(tmp_path.glob(".intervals-*"))


def test_bad_row_deep_in_a_large_log_is_found_by_line(cli, tmp_path) -> None:
    rows = [(f"{T0 + i}.{i % 1000:06d}", "m", "10", (i + 1) % 2) for i in range(300_000)]
    rows[250_000] = (f"{T0 + 250_000}.x", "m", "10", 1)
    log = write_log(tmp_path / "big.csv", rows)
    result = cli("replay", str(log))
    assert result.returncode == 2
    assert f"{log}:250002:" in result.stderr  # header is line 1


def test_missing_and_corrupt_files(cli, tmp_path) -> None:
    result = cli("replay", str(tmp_path / "nope.csv"))
    assert result.returncode == 2 and "nope.csv" in result.stderr
    corrupt = tmp_path / "corrupt.csv.gz"
    corrupt.write_bytes(b"\x1f\x8b\x08\x00not really gzip")
    result = cli("replay", str(corrupt))
    assert result.returncode == 2 and "corrupt.csv.gz" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_progress_output_when_not_a_terminal(cli, tmp_path) -> None:
    log = simulated(cli, tmp_path, "p", f"time,kw\n{T0},5\n{T0 + 600},0\n")
    result = cli("replay", str(log))
    assert result.returncode == 0 and result.stderr == ""
    assert "meter1: 830 Wh" in result.stdout  # 833.3 Wh is 166 whole edges of 5 Wh


def test_plot_draws_a_png(cli, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    log = simulated(cli, tmp_path, "q", f"time,kw\n{T0},5\n{T0 + 1800},9\n{T0 + 3600},0\n")
    png = tmp_path / "load.png"
    result = cli("replay", str(log), "--plot", str(png))
    assert result.returncode == 0, result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_progress_bar_on_a_terminal(cli, tmp_path) -> None:
    import os
    import pty
    import subprocess
    import sys

    log = simulated(cli, tmp_path, "t", f"time,kw\n{T0},20\n{T0 + 7200},0\n")
    leader, follower = pty.openpty()
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "replay", str(log)],
        stderr=follower,
        stdout=subprocess.PIPE,
        timeout=60,
        check=False,
    )
    os.close(follower)
    seen = b""
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:
            break
        if not data:
            break
        seen += data
    os.close(leader)
    assert proc.returncode == 0
    assert b"replay [" in seen and b"100%" in seen and b"edges" in seen
    assert b"meter1: 40000 Wh" in proc.stdout


def test_config_gives_meters_their_limits_and_weights(cli, tmp_path) -> None:
    # 5 Wh a second is 18 kW: more than a 1K120 meter with 20 A CTs can carry (138 V x 22 A).
    rows = [(f"{T0 + k}.000000", "small", "10", (k + 1) % 2) for k in range(30)]
    log = write_log(tmp_path / "fast.csv", rows)
    plain = replay_json(cli, str(log))["small"]
    assert plain["noise_edges"]["10"] == 0  # no configuration: nothing to check against
    config = tmp_path / "c.toml"
    config.write_text(
        '[[meters]]\nname = "small"\nmodel = "1K120"\nsource = "replay"\nfile = "x"\n'
        "ct_rating_a = 20\nwh_per_edge_10 = 1\n"
    )
    configured = replay_json(cli, str(log), "--config", str(config))["small"]
    assert configured["noise_edges"]["10"] == 29  # every gap after the first edge
    assert configured["energy_wh"] == 30  # 1 Wh per edge, as configured
    bad = tmp_path / "bad.toml"
    bad.write_text('[[meters]]\nname = "small"\nmodel = "1K120"\nsource = "replay"\n')
    result = cli("replay", str(log), "--config", str(bad))
    assert result.returncode == 2 and "meters[0].file" in result.stderr
