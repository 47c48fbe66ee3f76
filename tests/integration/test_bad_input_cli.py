"""Bad input never crashes, hangs or lies (issue #12): the command line, the database, start-up.

Every error is exit status 2 with one line naming the file and line, or the key; nothing is
created or changed before the input is known good. A hypothesis sample runs the real command
line (a subprocess) under a memory limit: exit 0 with the exact answer, or exit 2 with one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.cli import main
from gateway.config import load_config
from gateway.daemon.service import Service
from gateway.errors import ConfigError
from gateway.timefmt import NS_PER_S, format_epoch, format_iso

T0 = 1_764_057_600  # 2025-11-25T08:00:00Z
HEADER = "time,meter,channel,level\n"
MEMORY_LIMIT = 3 << 30  # address space: numpy and SQLAlchemy reserve much more than they touch


def log(path: Path, body: str, head: str = "") -> Path:
    path.write_text(head + HEADER + body)
    return path


def good_log(path: Path, edges: int = 6) -> Path:
    return log(path, "".join(f"{T0 + 2 * i}.5,m,10,{(i + 1) % 2}\n" for i in range(edges)))


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- replay: silent wrong answers, tracebacks and memory ----------------------------------------


@pytest.mark.parametrize(
    ("body", "head", "where"),
    [
        (f"{T0}.5,m,10,1\n10000000000.5,m,10,0\n", "", "log.csv:3: bad time"),
        (f"{T0}.5,m,10,1\n9999-12-31T23:59:58Z,m,10,0\n", "", "log.csv:3: bad time"),
        ("0001-01-01T00:00:00-01:00,m,10,1\n", "", "log.csv:2: bad time"),
        (f"{T0}.5,m,10,1\n", "# end=99999999999\n", "log.csv:1: end=: bad time"),
        (f"{T0}.5,m,10,1\n", "# start=yesterday\n", "log.csv:1: start=: bad time"),
        ("１７64057600.5,m,10,1\n", "", "log.csv:2: bad time"),
    ],
)
def test_replay_of_bad_times_exits_2_naming_the_line(tmp_path, capsys, body, head, where) -> None:
    path = log(tmp_path / "log.csv", body, head)
    out = tmp_path / "iv.csv"
    assert main(["replay", str(path), "--json", "--intervals", str(out)]) == 2
    assert where in error_line(capsys)
    assert not out.exists()


def test_a_byte_order_mark_is_no_header_error(tmp_path, capsys) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + good_log(tmp_path / "plain.csv").read_bytes())
    assert main(["replay", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["meters"]["m"]["energy_wh"] == 30


def test_plot_with_a_non_png_name_writes_nothing(tmp_path, capsys) -> None:
    out = tmp_path / "iv.csv"
    code = main(
        ["replay", str(good_log(tmp_path / "a.csv")), "--intervals", str(out), "--plot", "p.pdf"]
    )
    assert code == 2 and "--plot p.pdf" in error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize("name", ["a" * 300 + ".png", "dir/"])
def test_plot_to_an_unwritable_path_leaves_the_intervals_unwritten(tmp_path, capsys, name) -> None:
    (tmp_path / "dir").mkdir()
    out = tmp_path / "iv.csv"
    plot = str(tmp_path / name)
    if name == "dir/":
        plot = str(tmp_path / "dir")
    code = main(
        ["replay", str(good_log(tmp_path / "a.csv")), "--intervals", str(out), "--plot", plot]
    )
    assert code == 2 and "--plot" in error_line(capsys)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "dir"]  # no temporary left


def test_plot_and_intervals_are_written_together(tmp_path, capsys) -> None:
    out, plot = tmp_path / "iv.csv", tmp_path / "p.png"
    code = main(
        ["replay", str(good_log(tmp_path / "a.csv")), "--intervals", str(out), "--plot", str(plot)]
    )
    assert code == 0, capsys.readouterr().err
    assert plot.read_bytes().startswith(b"\x89PNG") and out.read_text().startswith("meter,")


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_intervals_get_the_mode_the_umask_gives(tmp_path, capsys, umask) -> None:
    out = tmp_path / "iv.csv"
    old = os.umask(umask)
    try:
        assert main(["replay", str(good_log(tmp_path / "a.csv")), "--intervals", str(out)]) == 0
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


# -- the database: untouched by bad input, a newer schema refused clearly ----------------------


def test_replay_db_on_bad_input_leaves_the_database_byte_for_byte(tmp_path, capsys) -> None:
    db = tmp_path / "g.db"
    url = f"sqlite:///{db}"
    assert main(["replay", str(good_log(tmp_path / "a.csv")), "--db", url]) == 0
    before = digest(db)
    later = good_log(tmp_path / "b.csv", 20).read_text() + "10000000000.5,m,10,1\n"
    (tmp_path / "b.csv").write_text(later)
    assert main(["replay", str(tmp_path / "b.csv"), "--db", url]) == 2
    assert "b.csv:22: bad time" in error_line(capsys)
    assert digest(db) == before


def test_replay_db_on_bad_input_creates_no_database(tmp_path, capsys) -> None:
    bad = log(tmp_path / "bad.csv", f"{T0}.5,m,10,1\n", "# end=9000000000\n")
    db = tmp_path / "new.db"
    assert main(["replay", str(bad), "--db", f"sqlite:///{db}"]) == 2
    assert "bad.csv:1: end=" in error_line(capsys)
    assert not db.exists()


@pytest.fixture
def newer_db(tmp_path) -> Path:
    db = tmp_path / "g.db"
    assert main(["replay", str(good_log(tmp_path / "a.csv")), "--db", f"sqlite:///{db}"]) == 0
    connection = sqlite3.connect(db)
    connection.execute("UPDATE alembic_version SET version_num = 'f00dfeedbeef'")
    connection.commit()
    connection.close()  # the last connection: the WAL is checkpointed into the file
    return db


@pytest.mark.parametrize(
    "command",
    [["db", "upgrade"], ["status"], ["export"], ["replay", "LOG"], ["reconcile", "--meter", "m"]],
)
def test_a_database_from_a_newer_schema_is_refused_clearly(newer_db, capsys, command) -> None:
    capsys.readouterr()
    before = digest(newer_db)
    args = [str(newer_db.parent / "a.csv") if a == "LOG" else a for a in command]
    if command[0] == "reconcile":
        args += ["--lcd-kwh", "1"]
    assert main([*args, "--db", f"sqlite:///{newer_db}"]) == 2
    line = error_line(capsys)
    assert "f00dfeedbeef" in line and "newer amr-gateway" in line
    assert "db upgrade" not in line
    assert digest(newer_db) == before


def test_run_on_a_database_from_a_newer_schema_exits_2(newer_db, tmp_path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        f'[gateway]\ndatabase = "sqlite:///{newer_db}"\n[mqtt]\nenabled = false\n'
        '[[meters]]\nname = "m"\nmodel = "2O208-4W"\nsource = "simulate"\n'
    )
    with pytest.raises(ConfigError, match="newer amr-gateway"):
        Service(load_config(str(config)), out=sys.stdout)


@pytest.mark.parametrize("value", ["99999999999999999999", "-1", "１２", "1e3"])
def test_reconcile_lcd_kwh_beyond_any_lcd_is_a_usage_error(tmp_path, capsys, value) -> None:
    with pytest.raises(SystemExit) as info:
        main(["reconcile", "--meter", "m", "--lcd-kwh", value, "--db", "sqlite:///x.db"])
    assert info.value.code == 2
    assert "--lcd-kwh" in capsys.readouterr().err


# -- simulate ----------------------------------------------------------------------------------


def test_simulate_out_equal_to_profile_keeps_the_profile(tmp_path, capsys) -> None:
    profile = tmp_path / "p.csv"
    text = f"time,kw\n{T0},1\n{T0 + 60},0\n"
    profile.write_text(text)
    alias = tmp_path / "." / "p.csv"
    assert main(["simulate", "--profile", str(profile), "--out", str(alias)]) == 2
    assert "--out" in error_line(capsys)
    assert profile.read_text() == text


def test_simulate_meter_name_with_a_trailing_newline_is_refused(tmp_path, capsys) -> None:
    profile = tmp_path / "p.csv"
    profile.write_text(f"time,kw\n{T0},1\n{T0 + 60},0\n")
    out = tmp_path / "o.csv"
    assert main(["simulate", "--profile", str(profile), "--out", str(out), "--meter", "m\n"]) == 2
    assert "--meter" in capsys.readouterr().err and not out.exists()


# -- start-up: files named by their key, nothing created before the input is known good -------


def config_file(tmp_path: Path, meter: str, mqtt: str = "enabled = false") -> Path:
    path = tmp_path / "c.toml"
    path.write_text(
        f'[gateway]\ndatabase = "sqlite:///{tmp_path / "g.db"}"\n[mqtt]\n{mqtt}\n'
        f'[[meters]]\nname = "m"\nmodel = "2O208-4W"\n{meter}\n'
    )
    return path


@pytest.mark.parametrize(
    ("meter", "mqtt", "needle"),
    [
        ('source = "simulate"\nprofile = "nope.csv"', "enabled = false", "meters[0].profile: "),
        ('source = "replay"\nfile = "nope.csv"', "enabled = false", "meters[0].file: "),
        ('source = "replay"\nfile = "BAD"', "enabled = false", "bad.csv:3: bad time"),
        ('source = "replay"\nfile = "OTHER"', "enabled = false", "meters[0].file: "),
        ('source = "simulate"\nprofile = "BADP"', "enabled = false", "badp.csv:3: bad time"),
        ('source = "simulate"', 'username = "u"\npassword_file = "nope"', "mqtt.password_file: "),
        ('source = "simulate"', 'tls = true\nca_file = "nope.pem"', "mqtt.ca_file: "),
        ('source = "simulate"', 'tls = true\nca_file = "BADP"', "mqtt.ca_file: "),
        ('source = "gpio"\npin_10 = 99', "enabled = false", "meters[0].pin_10: 99"),
    ],
)
def test_start_up_names_the_key_and_creates_nothing(tmp_path, meter, mqtt, needle) -> None:
    bad = log(tmp_path / "bad.csv", f"{T0}.5,m,10,1\n10000000000,m,10,0\n")
    other = good_log(tmp_path / "other.csv")
    other.write_text(other.read_text().replace(",m,", ",n,"))
    badp = tmp_path / "badp.csv"
    badp.write_text(f"time,kw\n{T0},1\n99999999999,0\n")
    names = {"BAD": bad, "OTHER": other, "BADP": badp, "nope.csv": tmp_path / "nope.csv"}
    for key, path in names.items():
        meter, mqtt = meter.replace(f'"{key}"', f'"{path}"'), mqtt.replace(f'"{key}"', f'"{path}"')
    path = config_file(tmp_path, meter, mqtt)
    with pytest.raises(Exception) as info:  # which of the two errors is part of the point
        Service(load_config(str(path)), out=sys.stdout)
    message = str(info.value)
    assert type(info.value).__name__ in ("ConfigError", "PulseLogError")
    assert needle in message and "\n" not in message, message
    assert not (tmp_path / "g.db").exists()


# -- a sample through the real command line, under a memory limit ------------------------------


def limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_limited(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,  # a hang, not a speed figure: a good run takes seconds
        check=False,
        preexec_fn=limited,
        env=env,
    )


@st.composite
def sample_logs(draw: st.DrawFn) -> tuple[str, int | None]:
    """A clean log of `10` edges (and its energy), or one with a hostile row or comment."""
    count = draw(st.integers(1, 30))
    start = draw(st.integers(0, 7_258_118_400 - 100 * count))
    gaps = draw(st.lists(st.integers(1, 90), min_size=count, max_size=count))
    times, t = [], start * NS_PER_S
    for gap in gaps:
        t += gap * NS_PER_S // 2 + draw(st.integers(0, 999_999)) * 1000
        times.append(t)
    form = draw(st.integers(0, 2))
    rows = [
        f"{format_iso(t) if form == 2 else format_epoch(t, 6 if form else 9)},m,10,{(i + 1) % 2}\n"
        for i, t in enumerate(times)
    ]
    hostile = draw(
        st.sampled_from(
            [
                None,
                None,
                "10000000000.5,m,10,1\n",
                "9999-12-31T23:59:58Z,m,10,1\n",
                "0001-01-01T00:00:00-01:00,m,10,1\n",
                "１７64057600,m,10,1\n",
                "# end=99999999999\n",
            ]
        )
    )
    if hostile is None:
        return HEADER + "".join(rows), 5 * count
    at = draw(st.integers(0, len(rows)))
    if hostile.startswith("#"):
        return hostile + HEADER + "".join(rows), None
    return HEADER + "".join([*rows[:at], hostile, *rows[at:]]), None


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sample=sample_logs())
def test_fuzz_the_command_line_on_a_sample(tmp_path_factory, sample) -> None:
    text, energy_wh = sample
    directory = tmp_path_factory.mktemp("cli")
    (directory / "log.csv").write_text(text)
    db = directory / "g.db"
    # Bad input goes to --db (which must not create the database); a clean log is replayed
    # for the exact answer. (That --db leaves a log's last edge unconfirmed is the business of
    # the "every path agrees" work, not of this test.)
    database = ["--db", f"sqlite:///{db}"] if energy_wh is None else []
    result = run_limited("replay", "log.csv", "--json", *database, cwd=directory)
    assert "Traceback" not in result.stderr
    if energy_wh is None:
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith("amr-gateway: error: log.csv:")
        assert not db.exists()
        return
    assert result.returncode == 0, result.stderr
    meter = json.loads(result.stdout)["meters"]["m"]
    assert meter["energy_wh"] == energy_wh
    assert meter["edges"] == {"10": energy_wh // 5, "1K": 0}
