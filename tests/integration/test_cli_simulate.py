"""``amr-gateway simulate`` end to end, as a user runs it."""

from __future__ import annotations

import gzip

from logs import read_log

T0 = 1_764_057_600  # 2025-11-25T08:00:00Z


def test_twelve_kw_for_ten_minutes(tmp_path, cli) -> None:
    profile = tmp_path / "p.csv"
    profile.write_text(f"time,kw\n{T0},12\n{T0 + 600},0\n")
    out = tmp_path / "log.csv"
    result = cli("simulate", "--profile", str(profile), "--out", str(out), "--meter", "unit-101")
    assert result.returncode == 0, result.stderr
    rows = read_log(out)
    ten = [r for r in rows if r.channel == "10"]
    one_k = [r for r in rows if r.channel == "1K"]
    assert len(ten) == 400
    assert {r.meter for r in rows} == {"unit-101"}
    # 12 kW is 5 Wh every 1.5 s; 500 Wh every 150 s.
    assert ten[0].t_ns == (T0 * 10**9) + 1_500_000_000 and ten[0].level == 1
    assert [r.t_ns - T0 * 10**9 for r in one_k] == [
        150 * 10**9,
        300 * 10**9,
        450 * 10**9,
        600 * 10**9,
    ]
    assert [r.level for r in one_k] == [1, 0, 1, 0]
    assert [r.level for r in ten[:4]] == [1, 0, 1, 0]
    # the `10` row comes first when both outputs toggle together
    index = rows.index(one_k[0])
    assert rows[index - 1].channel == "10" and rows[index - 1].t_ns == one_k[0].t_ns
    assert "2000 Wh" in result.stdout


def test_gzip_output_by_suffix(tmp_path, cli) -> None:
    profile = tmp_path / "p.csv"
    profile.write_text(f"time,kw\n{T0},6\n{T0 + 300},0\n")
    out = tmp_path / "log.csv.gz"
    assert cli("simulate", "--profile", str(profile), "--out", str(out)).returncode == 0
    with gzip.open(out, "rt") as handle:
        text = handle.read()
    assert text.count(",10,") == 100 and text.count(",1K,") == 1


def test_bad_profile_exits_2_naming_file_and_line(tmp_path, cli) -> None:
    profile = tmp_path / "p.csv"
    profile.write_text(f"time,kw\n{T0},1\n{T0 + 60},-3\n{T0 + 120},0\n")
    result = cli("simulate", "--profile", str(profile), "--out", str(tmp_path / "o.csv"))
    assert result.returncode == 2
    assert f"{profile}:3" in result.stderr and "negative" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unsorted_profile_and_bad_header(tmp_path, cli) -> None:
    profile = tmp_path / "p.csv"
    profile.write_text(f"time,kw\n{T0 + 60},1\n{T0},1\n")
    result = cli("simulate", "--profile", str(profile), "--out", str(tmp_path / "o.csv"))
    assert result.returncode == 2 and f"{profile}:3" in result.stderr
    profile.write_text("when,kw\n")
    result = cli("simulate", "--profile", str(profile), "--out", str(tmp_path / "o.csv"))
    assert result.returncode == 2 and f"{profile}:1" in result.stderr and "header" in result.stderr


def test_load_beyond_the_meter_is_named(tmp_path, cli) -> None:
    profile = tmp_path / "p.csv"
    profile.write_text(f"time,kw\n{T0},1\n{T0 + 60},500\n{T0 + 120},0\n")
    result = cli("simulate", "--profile", str(profile), "--out", str(tmp_path / "o.csv"))
    assert result.returncode == 2 and f"{profile}:3" in result.stderr and "kW" in result.stderr


def test_unknown_model_and_missing_profile(tmp_path, cli) -> None:
    profile = tmp_path / "p.csv"
    profile.write_text(f"time,kw\n{T0},1\n{T0 + 60},0\n")
    result = cli(
        "simulate", "--profile", str(profile), "--out", str(tmp_path / "o"), "--model", "9Z1"
    )
    assert result.returncode == 2 and "--model" in result.stderr and "9Z1" in result.stderr
    result = cli("simulate", "--profile", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "none.csv" in result.stderr
    assert "Traceback" not in result.stderr
