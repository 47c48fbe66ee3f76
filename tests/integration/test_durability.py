"""Years on a Raspberry Pi: power cuts, full disks, failing databases, stops, a second daemon.

Real components throughout: the daemon as a subprocess (or the real Service in-process where a
test must turn the clock), SQLite files, tmpfs file systems made full or read-only, Mosquitto,
and a small LD_PRELOAD library that keeps each database file as of its last fsync, which is what
a power cut leaves.
"""

from __future__ import annotations

import io
import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from db_helpers import sqlite_file
from mqtt_helpers import Broker, Subscriber, wait_for
from test_exactly_once import SIX_HOURS, T0, check_consistent, counters, make_log

from gateway.config import Config, GatewaySettings, MqttSettings, meter_settings
from gateway.errors import ConfigError

DATA = Path(__file__).parent / "data"
IN_CI = bool(os.environ.get("CI"))


# -- fixtures ----------------------------------------------------------------------------------


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: a card that can fill up or be remounted read-only."""
    path = tmp_path / "card"
    if not _mount_tmpfs(path, "4m"):
        if IN_CI:
            pytest.fail("cannot mount a tmpfs (CI runs as root)")
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path) -> Path:
    """Fill a file system to the last byte; return the file that does it."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as handle:
        for size in (65536, 1):
            try:
                while handle.write(b"\0" * size):
                    pass
            except OSError:
                pass
    return filler


@pytest.fixture(scope="module")
def fsync_image_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        if IN_CI:
            pytest.fail("no C compiler (.ci/run installs gcc)")
        pytest.skip("no C compiler")
    out = tmp_path_factory.mktemp("shim") / "fsync_image.so"
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(out), str(DATA / "fsync_image.c"), "-ldl"],
        check=True,
    )
    return out


def config_file(directory: Path, db: Path, log: Path, *, extra: str = "", mqtt: str = "") -> Path:
    path = directory / "config.toml"
    path.write_text(
        f"""
[gateway]
id = "gwd"
database = "sqlite:///{db}"
{extra}

[mqtt]
{mqtt or "enabled = false"}

[[meters]]
name = "unit-101"
model = "2O208-4W"
source = "replay"
file = "{log}"
speed = 3600
"""
    )
    return path


def daemon(config: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 30) -> tuple[int, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=timeout_s)
    return proc.returncode, err.decode()


# -- a power cut -------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_power_cut_never_makes_the_published_total_go_backwards(
    cli, tmp_path: Path, fsync_image_library: Path
) -> None:
    log, expected = make_log(cli, tmp_path)
    broker = Broker(tmp_path / "broker")
    broker.directory.mkdir()
    broker.start()
    try:
        running = tmp_path / "running"
        image = tmp_path / "image"
        running.mkdir()
        image.mkdir()
        mqtt = f'host = "127.0.0.1"\nport = {broker.port}\nstate_interval_s = 0.5\n'
        config = config_file(running, running / "gateway.db", log, mqtt=mqtt)
        states = Subscriber(broker, ["amr/gwd/unit-101/state"])
        proc = daemon(
            config, {"LD_PRELOAD": str(fsync_image_library), "AMR_FSYNC_IMAGE": str(image)}
        )
        try:
            # Let it publish a few totals, then cut the power at a moment of its own choosing.
            wait_for(lambda: len(states.on("amr/gwd/unit-101/state")) >= 4, 60, "four states")
            time.sleep(random.Random(7).uniform(0.0, 0.5))
        finally:
            proc.kill()
            proc.wait(timeout=30)
        states.close()
        before = [m.json()["energy_wh"] for m in states.on("amr/gwd/unit-101/state")]
        assert before == sorted(before) and before[-1] > 0
        assert (image / "gateway.db").exists(), "nothing was ever synced"
        # What the card holds after the cut: each file as of its last fsync, nothing later.
        restored = tmp_path / "restored"
        restored.mkdir()
        for name in ("gateway.db", "gateway.db-wal"):
            if (image / name).exists():
                shutil.copy(image / name, restored / name)
        after_config = config_file(restored, restored / "gateway.db", log, mqtt=mqtt)
        retained = Subscriber(broker, ["amr/gwd/unit-101/state"])
        wait_for(lambda: retained.on("amr/gwd/unit-101/state"), 10, "the retained state")
        held = retained.on("amr/gwd/unit-101/state")[-1].json()["energy_wh"]
        assert held == before[-1]
        proc = daemon(after_config)
        try:
            wait_for(lambda: len(retained.on("amr/gwd/unit-101/state")) >= 4, 60, "states after")
        finally:
            status, err = stop(proc)
        retained.close()
        assert status == 0, err
        after = [m.json()["energy_wh"] for m in retained.on("amr/gwd/unit-101/state")]
        assert min(after) >= held, f"published {min(after)} Wh after {held} Wh was retained"
        assert after == sorted(after)
        # And the image resumes consistently: counters, intervals and outbox agree.
        with sqlite_file(restored / "gateway.db") as conn:
            register = conn.execute("select register_wh from meter_state").fetchone()[0]
        assert register >= held
    finally:
        broker.stop()
    assert expected["10"] > 0


# -- one daemon per database -------------------------------------------------------------------


def test_a_second_daemon_on_the_same_database_is_refused(cli, tmp_path: Path) -> None:
    log, _ = make_log(cli, tmp_path)
    db = tmp_path / "gateway.db"
    config = config_file(tmp_path, db, log)
    first = daemon(config)
    try:
        wait_for(lambda: counters(db).get("10", 0) > 0, 60, "the first daemon's first commit")
        second = subprocess.run(
            [sys.executable, "-m", "gateway", "run", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 2, second.stderr
        assert str(db) in second.stderr and f"pid {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr
        imported = cli("replay", str(log), "--db", f"sqlite:///{db}")
        assert imported.returncode == 2 and f"pid {first.pid}" in imported.stderr
        upgraded = cli("db", "upgrade", "--db", f"sqlite:///{db}")  # refused before migrating
        assert upgraded.returncode == 2 and f"pid {first.pid}" in upgraded.stderr
        assert first.poll() is None, "the first daemon must run on undisturbed"
    finally:
        status, err = stop(first)
    assert status == 0, err
    # Once it has stopped, the next one may start.
    again = daemon(config)
    try:
        wait_for(lambda: again.stdout and again.stdout.readline(), 60, "a reading line")
    finally:
        status, err = stop(again)
    assert status == 0, err


def test_postgresql_takes_an_advisory_lock(postgres_url: str) -> None:
    from gateway.sinks.database import Database

    first, second = Database(postgres_url), Database(postgres_url)
    try:
        first.lock("run")
        with pytest.raises(
            ConfigError, match=rf"in use by another amr-gateway .*pid {os.getpid()}"
        ):
            second.lock("run")
        first.close()
        second.lock("run")  # released with the first one's session
    finally:
        first.close()
        second.close()


# -- stopping ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_twenty_sigterms_under_load_all_exit_zero_within_seconds(cli, tmp_path: Path) -> None:
    log, _ = make_log(cli, tmp_path)
    # Two busy processes on a two-core machine: the stops must still be prompt and clean.
    burners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(os.cpu_count() or 2)
    ]
    rng = random.Random(2026)
    try:
        for run in range(20):
            db = tmp_path / f"stop-{run}.db"
            proc = daemon(config_file(tmp_path, db, log))
            assert proc.stdout is not None
            assert proc.stdout.readline(), "no first reading line"  # started and ready
            time.sleep(rng.uniform(0.0, 0.3))
            proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
            _, err = proc.communicate(timeout=60)
            took = time.monotonic() - started
            assert proc.returncode == 0, f"stop {run}: status {proc.returncode}: {err.decode()}"
            assert took < 20, f"stop {run} took {took:.1f} s"
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def test_speed_is_bounded(cli, tmp_path: Path) -> None:
    result = cli("run", "--simulate", "--speed", "1e12")
    assert result.returncode == 2 and "--speed" in result.stderr and "1e+06" in result.stderr
    log = tmp_path / "x.csv"
    log.write_text("time,meter,channel,level\n")
    config = config_file(tmp_path, tmp_path / "g.db", log)
    config.write_text(config.read_text().replace("speed = 3600", "speed = 1e308"))
    result = cli("run", "--config", str(config))
    assert result.returncode == 2 and "meters[0].speed" in result.stderr
    assert not (tmp_path / "g.db").exists()


# -- storage that fails ------------------------------------------------------------------------


def test_a_failing_database_keeps_the_counting_and_the_watchdog_going(
    tmp_path: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process, on a clock the test turns: a full card for ten minutes of commits."""
    from gateway.daemon.service import Service

    address = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    profile = tmp_path / "p.csv"
    profile.write_text("time,kw\n" + "".join(f"{T0 + s},{kw}\n" for s, kw in SIX_HOURS))
    clock = {"mono": 0}
    config = Config(
        GatewaySettings(id="gwf", database=f"sqlite:///{small_disk / 'gateway.db'}"),
        MqttSettings(enabled=False),
        (meter_settings("m", source="simulate", profile=str(profile), speed=60),),
    )
    service = Service(
        config,
        out=io.StringIO(),
        monotonic_ns=lambda: clock["mono"],
        wall_ns=lambda: T0 * 10**9 + clock["mono"],
    )

    def pings() -> int:
        count = 0
        while True:
            try:
                count += listener.recv(4096).decode().count("WATCHDOG=1")
            except BlockingIOError:
                return count

    received = {"pings": 0}

    def run_for(seconds: int) -> None:
        for _ in range(seconds * 10):
            clock["mono"] += 100_000_000
            service.tick()
            received["pings"] += pings()

    service.start()
    run_for(30)
    runtime = service.meters[0]
    assert runtime.checkpoint.committed_wh > 0
    received["pings"] = 0
    filler = fill(small_disk)
    counted_before = runtime.core.energy_wh
    run_for(600)  # ten minutes of a full card (the old daemon stopped its pings after 20 s)
    assert service.storage_error is not None and "full" in service.storage_error
    assert received["pings"] >= 590, "the watchdog must be fed while the sources are healthy"
    assert runtime.core.energy_wh > counted_before, "counting goes on"
    held = runtime.checkpoint.committed_wh
    assert held < runtime.core.energy_wh
    filler.unlink()
    for _ in range(61):  # the next retry (at most a minute apart by now) commits everything
        run_for(1)
        if service.storage_error is None:
            break
    assert service.storage_error is None
    assert runtime.checkpoint.committed_wh == runtime.core.energy_wh > held
    assert not runtime.checkpoint.intervals and not runtime.checkpoint.subintervals
    assert service.shutdown() == 0
    listener.close()
    with sqlite_file(small_disk / "gateway.db") as conn:
        details = [row[0] for row in conn.execute("select detail from events where kind='storage'")]
        register = conn.execute("select register_wh from meter_state").fetchone()[0]
        subs = conn.execute("select start_ns from demand_subintervals order by start_ns").fetchall()
    assert any("failed" in d for d in details) and any("works again" in d for d in details)
    assert register == runtime.core.energy_wh
    starts = [s for (s,) in subs]
    assert starts == sorted(set(starts))
    # Not one five-minute sub-interval is missing across the outage.
    assert all(b - a == 300 * 10**9 for a, b in itertools.pairwise(starts))


@pytest.mark.slow
def test_a_full_disk_with_capture_on_keeps_counting_and_recovers_exactly(
    cli, tmp_path: Path, small_disk: Path
) -> None:
    log, expected = make_log(cli, tmp_path)
    db = small_disk / "gateway.db"
    capture = small_disk / "capture"
    config = config_file(
        tmp_path, db, log, extra=f'capture_dir = "{capture}"\nreport_interval_s = 0.5'
    )
    config.write_text(config.read_text().replace("speed = 3600", "speed = 1800"))
    proc = daemon(config)
    try:
        wait_for(lambda: counters(db).get("10", 0) > 0, 60, "a first commit")
        filler = fill(small_disk)
        # The replay goes on to its end while nothing can be written: it says so each report.
        lines: list[str] = []
        assert proc.stdout is not None

        def replayed_all() -> bool:
            line = proc.stdout.readline().decode()  # type: ignore[union-attr]
            lines.append(line)
            return f"edges 10={expected['10']} 1K={expected['1K']}" in line

        wait_for(replayed_all, 120, "the whole log counted in memory")
        assert any(line.startswith("not committed: ") for line in lines), lines
        assert proc.poll() is None, "the daemon must survive a full disk"
        assert counters(db).get("10", 0) < expected["10"], "nothing could have been committed"
        filler.unlink()
        wait_for(lambda: counters(db) == expected, 120, "everything committed once there is room")
    finally:
        status, err = stop(proc)
    assert status == 0, err
    assert "Traceback" not in err
    check_consistent(db, expected)
    with sqlite_file(db) as conn:
        kinds = {row[0] for row in conn.execute("select kind from events")}
    assert {"capture", "storage"} <= kinds


def test_start_up_exit_status_tells_storage_failures_from_mistakes(
    cli, tmp_path: Path, small_disk: Path
) -> None:
    missing = cli("status", "--db", f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")
    assert missing.returncode == 2
    log = tmp_path / "x.csv"
    log.write_text("time,meter,channel,level\n1764057600.0,unit-101,10,1\n")
    mistake = cli("run", "--config", str(config_file(tmp_path, tmp_path / "no" / "dir.db", log)))
    assert mistake.returncode == 2 and "does its directory exist" in mistake.stderr
    # A read-only card (remounted after an error, say) is not the user's mistake: systemd
    # should retry (exit 1), the restart policy (RestartPreventExitStatus=2) depends on it.
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        readonly = cli("run", "--config", str(config_file(tmp_path, small_disk / "g.db", log)))
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    assert readonly.returncode == 1, readonly.stderr
    assert "Traceback" not in readonly.stderr and "g.db" in readonly.stderr


def test_an_up_to_date_database_opens_without_alembic(tmp_path: Path) -> None:
    from gateway.sinks.database import Database
    from gateway.sinks.migrate import head_revision
    from gateway.sinks.schema import SCHEMA_REVISION

    assert head_revision() == SCHEMA_REVISION
    url = f"sqlite:///{tmp_path / 'g.db'}"
    Database(url).close()  # created and migrated (Alembic needed here)
    probe = (
        "import sys; from gateway.sinks.database import Database; "
        f"Database({url!r}).close(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
