"""A first hour without surprises: what a new user types wrong is refused, clearly, through the
command line (exit status 2, one line naming the option, key or variable, nothing created)."""

from __future__ import annotations

import csv
import glob
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mqtt_helpers import wait_for

T_0200 = 1_793_498_400  # 2026-11-01T02:00:00Z (22:00 EDT on 31 October)
T_0400 = 1_793_505_600  # 2026-11-01T04:00:00Z: midnight in New York (EDT, UTC-4)
T_0600 = 1_793_512_800  # 2026-11-01T06:00:00Z


def run(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m gateway ARGS`` with extra environment variables."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )


def one_error(result: subprocess.CompletedProcess[str]) -> str:
    """Assert exit status 2 with one line on stderr and no traceback; return the line."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def config(tmp_path: Path, meter: str = "", billing: str = "", database: str = "") -> Path:
    path = tmp_path / "c.toml"
    database = database or f"sqlite:///{tmp_path / 'g.db'}"
    path.write_text(
        f'[gateway]\ndatabase = "{database}"\n'
        f"[mqtt]\nenabled = false\n{billing}\n"
        f'[[meters]]\nname = "m"\nmodel = "2O208-4W"\nsource = "simulate"\n{meter}\n'
    )
    return path


# -- TZ ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["run"], ["replay", "LOG"]])
def test_a_misspelled_tz_is_an_error_naming_tz(tmp_path, command) -> None:
    path = config(tmp_path)
    log = tmp_path / "a.csv"
    log.write_text("time,meter,channel,level\n1793498401,m,10,1\n")
    args = [str(log) if a == "LOG" else a for a in command]
    line = one_error(run(*args, "--config", str(path), env={"TZ": "America/NewYork"}))
    assert "TZ" in line and "America/NewYork" in line
    assert not (tmp_path / "g.db").exists()


def test_a_misspelled_tz_stops_run_simulate_before_anything_is_created(tmp_path) -> None:
    line = one_error(run("run", "--simulate", cwd=tmp_path, env={"TZ": "America/NewYork"}))
    assert "TZ" in line and "America/NewYork" in line
    assert list(tmp_path.iterdir()) == []


def test_a_tz_is_not_needed_when_the_file_names_the_zone(tmp_path) -> None:
    path = config(tmp_path, billing='[billing]\ntimezone = "America/New_York"\n')
    log = tmp_path / "a.csv"
    log.write_text("time,meter,channel,level\n1793498401,m,10,1\n")
    result = run("replay", str(log), "--config", str(path), env={"TZ": "America/NewYork"})
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("tz", ["America/New_York", ":America/New_York", "UTC", ""])
def test_a_good_tz_is_the_host_zone(monkeypatch, tz) -> None:
    from gateway.config import host_timezone

    monkeypatch.setenv("TZ", tz)
    expected = tz.lstrip(":") or host_timezone()
    assert host_timezone() == expected
    monkeypatch.setenv("TZ", "/usr/share/zoneinfo/America/Chicago")
    assert host_timezone() == "America/Chicago"


def test_the_host_zone_without_tz_is_etc_localtime_then_etc_timezone(monkeypatch, tmp_path) -> None:
    from gateway.config import host_timezone

    monkeypatch.delenv("TZ", raising=False)
    link, name = tmp_path / "localtime", tmp_path / "timezone"
    link.symlink_to("/usr/share/zoneinfo/Europe/Paris")
    name.write_text("America/Denver\n")
    assert host_timezone(str(link), str(name)) == "Europe/Paris"
    link.unlink()
    link.write_bytes(b"TZif")  # a copied file, as some images have: no name in it
    assert host_timezone(str(link), str(name)) == "America/Denver"
    name.write_text("Nowhere/Special\n")
    assert host_timezone(str(link), str(name)) == "UTC"


# -- model numbers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "closest"),
    [("2O208-4X", "2O208-4W"), ("20208-4W", "2O208-4W"), ("2O2O8-4W", "2O208-4W")],
)
def test_a_model_typo_in_the_config_is_refused_with_the_closest_model(
    tmp_path, model, closest
) -> None:
    path = config(tmp_path)
    path.write_text(path.read_text().replace('"2O208-4W"', f'"{model}"'))
    line = one_error(run("run", "--config", str(path)))
    assert "meters[0].model" in line and model in line and f"did you mean {closest}?" in line
    assert not (tmp_path / "g.db").exists()


def test_a_model_typo_on_the_command_line_is_refused(tmp_path) -> None:
    profile = tmp_path / "p.csv"
    profile.write_text(f"time,kw\n{T_0200},1\n{T_0200 + 60},0\n")
    out = tmp_path / "o.csv"
    result = run("simulate", "--profile", str(profile), "--out", str(out), "--model", "2O208-4X")
    line = one_error(result)
    assert "--model" in line and "did you mean 2O208-4W?" in line
    assert not out.exists()


# -- the database ---------------------------------------------------------------------------


def test_db_upgrade_in_an_empty_directory_creates_nothing(tmp_path) -> None:
    line = one_error(run("db", "upgrade", cwd=tmp_path))
    assert "--db sqlite:///gateway.db" in line
    assert list(tmp_path.iterdir()) == []
    created = run("db", "upgrade", "--db", "sqlite:///gateway.db", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert (tmp_path / "gateway.db").exists()
    again = run("db", "upgrade", cwd=tmp_path)  # now there is one here: upgrade it
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize(
    "command",
    [["db", "upgrade"], ["status"], ["export"], ["bill"], ["replay", "LOG"]],
)
def test_a_bare_path_for_db_suggests_an_sqlite_url(tmp_path, command) -> None:
    log = tmp_path / "a.csv"
    log.write_text("time,meter,channel,level\n1793498401,m,10,1\n")
    args = [str(log) if a == "LOG" else a for a in command]
    line = one_error(run(*args, "--db", "nosuch.db", cwd=tmp_path))
    assert "--db nosuch.db" in line and "sqlite:///nosuch.db" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"]


def test_a_bare_path_in_the_config_suggests_an_sqlite_url(tmp_path) -> None:
    path = config(tmp_path, database="/var/lib/amr/gateway.db")
    line = one_error(run("run", "--config", str(path)))
    assert "gateway.database" in line and "sqlite:////var/lib/amr/gateway.db" in line


@pytest.mark.parametrize("command", [["db", "upgrade"], ["status"], ["export"]])
def test_a_missing_postgresql_database_says_how_to_create_it(postgres_admin, command) -> None:
    name = "amr_no_such_database_16"
    url = postgres_admin.rsplit("/", 1)[0] + f"/{name}"
    line = one_error(run(*command, "--db", url))
    assert f"database {name!r} does not exist" in line and f"createdb {name}" in line


# -- export ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> str:
    """A database holding meter m from 02:00Z to 05:59:59Z on 1 November 2026 at 1.2 kW (an edge
    every 15 s, the last at 05:59:45), read on the 1st at midnight in New York (04:00Z)."""
    tmp = tmp_path_factory.mktemp("export")
    profile = tmp / "p.csv"
    profile.write_text(f"time,kw\n{T_0200},1.2\n{T_0600 - 1},0\n")
    log = tmp / "m.csv"
    made = run("simulate", "--profile", str(profile), "--out", str(log), "--meter", "m")
    assert made.returncode == 0, made.stderr
    path = config(tmp, billing='[billing]\ntimezone = "America/New_York"\n')
    url = f"sqlite:///{tmp / 'g.db'}"
    imported = run("replay", str(log), "--config", str(path), "--db", url)
    assert imported.returncode == 0, imported.stderr
    return url


def starts(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    return [r["start"] for r in rows]


def test_export_dates_are_whole_utc_days(stored) -> None:
    everything = starts(run("export", "--db", stored))
    assert len(everything) == 16  # 4 h of 15-minute intervals
    assert everything[0] == "2026-11-01T02:00:00Z"
    # --to a date includes that day (up to the next 00:00 UTC), as the web view's date inputs do.
    got = starts(run("export", "--db", stored, "--from", "2026-11-01", "--to", "2026-11-01"))
    assert got == everything
    assert starts(run("export", "--db", stored, "--to", "2026-10-31")) == []
    assert starts(run("export", "--db", stored, "--from", "2026-11-02")) == []
    morning = run("export", "--db", stored, "--from", "2026-11-01", "--to", "2026-11-01T03:00:00Z")
    assert starts(morning) == everything[:4]


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2026-11-01T05:00:00Z", "2026-11-01T03:00:00Z"),
        ("2026-11-01T05:00:00Z", "2026-11-01T05:00:00Z"),
        ("2026-11-02", "2026-11-01"),
    ],
)
@pytest.mark.parametrize("fmt", ["csv", "espi"])
def test_export_from_at_or_after_to_is_refused(stored, start, end, fmt) -> None:
    line = one_error(run("export", "--db", stored, "--format", fmt, "--from", start, "--to", end))
    assert "--from" in line and "--to" in line


def test_export_period_is_the_meters_billing_period(stored) -> None:
    october = starts(run("export", "--db", stored, "--period", "2026-10"))
    november = starts(run("export", "--db", stored, "--period", "2026-11"))
    # The read is at midnight in New York: 04:00Z. 02:00Z-04:00Z is October's, the rest November's.
    assert len(october) == 8 and october[0] == "2026-11-01T02:00:00Z"
    assert len(november) == 8 and november[0] == "2026-11-01T04:00:00Z"
    assert starts(run("export", "--db", stored, "--period", "2026-12")) == []
    assert starts(run("export", "--db", stored, "--period", "2026-11", "--meter", "m")) == november
    assert "--meter nosuch" in one_error(
        run("export", "--db", stored, "--period", "2026-11", "--meter", "nosuch")
    )
    feed = run("export", "--db", stored, "--format", "espi", "--period", "2026-11")
    assert feed.returncode == 0, feed.stderr
    assert str(T_0400) in feed.stdout and f"<start>{T_0200}</start>" not in feed.stdout


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--period", "2026-11", "--from", "2026-11-01"], "--from"),
        (["--period", "2026-11", "--to", "2026-11-02"], "--to"),
        (["--period", "2026-13"], "--period"),
    ],
)
def test_export_period_is_refused_with_from_to_or_when_bad(stored, args, names) -> None:
    line = one_error(run("export", "--db", stored, *args))
    assert names in line and "--period" in line


# -- run ------------------------------------------------------------------------------------


def test_run_simulate_with_a_config_is_refused(tmp_path) -> None:
    path = config(tmp_path)
    line = one_error(run("run", "--simulate", "--config", str(path)))
    assert "--simulate" in line and "--config" in line
    assert not (tmp_path / "g.db").exists()


def test_gpio_without_lgpio_is_refused_at_start_saying_what_to_install(tmp_path) -> None:
    # Whether or not lgpio is installed here, this one fails to import, as on a bare system.
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "lgpio.py").write_text("raise ImportError(\"No module named 'lgpio'\")\n")
    path = config(tmp_path)
    path.write_text(path.read_text().replace('"simulate"', '"gpio"\npin_10 = 17'))
    env = {
        "PYTHONPATH": os.pathsep.join([str(hide), os.environ.get("PYTHONPATH", "")]),
        "GPIOZERO_PIN_FACTORY": "lgpio",  # as the systemd unit sets it
    }
    result = run("run", "--config", str(path), env=env, timeout=60)
    line = one_error(result)
    assert result.stdout == ""  # no reading line: refused before anything ran
    assert "lgpio" in line and "sudo apt install python3-lgpio" in line and "pip" in line
    assert not (tmp_path / "g.db").exists()


@pytest.mark.skipif(bool(glob.glob("/dev/gpiochip*")), reason="this machine has GPIO chips")
def test_gpio_without_a_gpio_chip_is_refused_at_start(tmp_path) -> None:
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "lgpio.py").write_text("")  # the library is there; the hardware is not
    path = config(tmp_path)
    path.write_text(path.read_text().replace('"simulate"', '"gpio"\npin_10 = 17'))
    env = {"PYTHONPATH": os.pathsep.join([str(fake), os.environ.get("PYTHONPATH", "")])}
    line = one_error(run("run", "--config", str(path), env=env, timeout=60))
    assert "/dev/gpiochip*" in line and "Raspberry Pi" in line
    assert not (tmp_path / "g.db").exists()


# -- the broker -----------------------------------------------------------------------------


def _broker_warning(tmp_path: Path, mqtt: str) -> str:
    path = config(tmp_path)
    path.write_text(path.read_text().replace("[mqtt]\nenabled = false\n", f"[mqtt]\n{mqtt}\n"))
    err = tmp_path / "err.txt"
    with err.open("w") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=handle,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            wait_for(lambda: "broker" in err.read_text(), 30, "the broker warning")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    return next(line for line in err.read_text().splitlines() if "broker" in line)


def test_tls_to_a_plain_listener_says_the_handshake_failed(tmp_path, broker) -> None:
    line = _broker_warning(tmp_path, f'host = "127.0.0.1"\nport = {broker.port}\ntls = true')
    assert f"127.0.0.1:{broker.port}" in line and "TLS handshake failed" in line


def test_an_unknown_broker_host_says_the_name_does_not_resolve(tmp_path) -> None:
    line = _broker_warning(tmp_path, 'host = "no-such-broker.invalid"')
    assert "no-such-broker.invalid" in line and "does not resolve" in line
