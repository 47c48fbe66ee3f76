"""Fleet tests: a private PostgreSQL cluster, gateways replaying logs, collectors, comparisons."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from mqtt_helpers import Broker, free_port, wait_for
from sqlalchemy import create_engine, text

from gateway.errors import SinkError
from gateway.sinks.snapshot import copy_database

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _as_postgres(args: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root: CI runs the tests as root.
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


class PrivateCluster:
    """A PostgreSQL cluster of the test's own on a free port, so that it can be restarted."""

    def __init__(self) -> None:
        # Not under pytest's tmp_path: it is root's 0700 directory, which postgres cannot enter.
        self.directory = Path(tempfile.mkdtemp(prefix="amr-fleet-pg-"))
        self.directory.chmod(0o755)
        self.data = self.directory / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run(_as_postgres(list(args)), check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres")
        self._run(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.directory / "log"),
            "-w",
            "-o",
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1",
            "start",
        )

    def restart(self) -> None:
        # -l again: without it the server would log to pg_ctl's output, held open forever.
        self._run(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.directory / "log"),
            "-m",
            "fast",
            "-w",
            "restart",
        )

    def stop(self) -> None:
        subprocess.run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]),
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(self.directory, ignore_errors=True)


def make_log(cli: Any, directory: Path, meter: str, kw: str, start: str, end: str) -> Path:
    """Simulate a meter at constant ``kw`` from ``start`` to ``end`` into a pulse log."""
    profile = directory / f"{meter}.profile.csv"
    profile.write_text(f"time,kw\n{start},{kw}\n{end},0\n")
    log = directory / f"{meter}.csv"
    result = cli("simulate", "--profile", str(profile), "--out", str(log), "--meter", meter)
    assert result.returncode == 0, result.stderr
    return log


def replay_gateway_config(
    directory: Path, broker: Broker, gw: str, logs: dict[str, Path], speed: float
) -> Path:
    meters = "".join(
        f'\n[[meters]]\nname = "{name}"\nmodel = "2O208-4W"\nsource = "replay"\n'
        f'file = "{log}"\nspeed = {speed}\n'
        for name, log in logs.items()
    )
    path = directory / "config.toml"
    path.write_text(
        f"""
[gateway]
id = "{gw}"
database = "sqlite:///{directory / "gateway.db"}"
commit_interval_s = 0.2

[mqtt]
host = "127.0.0.1"
port = {broker.port}
keepalive_s = 5
state_interval_s = 1
commands = ["resend"]

[billing]
timezone = "UTC"
{meters}
"""
    )
    return path


def collector_config(
    directory: Path, broker: Broker, database: str, client_id: str, extra: str = ""
) -> Path:
    path = directory / f"{client_id}.toml"
    path.write_text(
        f"""
[collector]
database = "{database}"
host = "127.0.0.1"
port = {broker.port}
keepalive_s = 5
client_id = "{client_id}"
batch_wait_ms = 20
{extra}
"""
    )
    return path


class CollectorProcess:
    """``amr-gateway collect`` as a subprocess (its log in a file, read when a test fails)."""

    def __init__(self, config: Path, *, verbose: bool = False) -> None:
        self.config = config
        self.verbose = verbose
        self.log = config.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> CollectorProcess:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gateway",
                    *(["-v"] if self.verbose else []),
                    "collect",
                    "--config",
                    str(self.config),
                ],
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.starts += 1
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


def gateway_rows(db: Path) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]], int]:
    """Return a gateway database's intervals, reads and waiting outbox messages (one waiting
    message while the gateway has not made its database yet)."""
    if not db.exists():
        return set(), set(), 1
    # A running gateway holds its file alone (exclusive locking): read a copy of it.
    try:
        copy = copy_database(str(db))
    except SinkError:  # it kept changing while it was copied
        return set(), set(), 1
    con = sqlite3.connect(copy)
    try:
        intervals = set(
            con.execute(
                "SELECT m.name, i.start_ns, i.end_ns, i.energy_wh, i.edges, i.quality "
                "FROM intervals i JOIN meters m ON m.id = i.meter_id"
            ).fetchall()
        )
        reads = set(
            con.execute(
                "SELECT m.name, r.seq, r.period, r.t_ns, r.energy_wh, r.register_wh, r.quality "
                "FROM meter_reads r JOIN meters m ON m.id = r.meter_id"
            ).fetchall()
        )
        waiting = con.execute("SELECT count(*) FROM mqtt_outbox").fetchone()[0]
    except sqlite3.OperationalError:  # the gateway is still migrating it
        return set(), set(), 1
    finally:
        con.close()
        shutil.rmtree(os.path.dirname(copy), ignore_errors=True)
    return intervals, reads, waiting


def fleet_rows(url: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Return the fleet database's intervals and reads (as lists: a duplicate would show)."""
    from gateway.timefmt import parse_time_ns

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            intervals = connection.execute(
                text(
                    "SELECT m.gateway, m.meter, i.start_ns, i.end_ns, i.energy_wh, i.edges, "
                    "i.quality FROM fleet_intervals i JOIN fleet_meters m ON m.id = i.meter_id"
                )
            ).all()
            raw = connection.execute(
                text(
                    "SELECT m.gateway, m.meter, r.seq, r.payload FROM fleet_reads r "
                    "JOIN fleet_meters m ON m.id = r.meter_id"
                )
            ).all()
    finally:
        engine.dispose()
    reads = []
    for gateway, meter, seq, payload in raw:
        p = json.loads(payload)
        reads.append(
            (
                gateway,
                meter,
                seq,
                p["period"],
                parse_time_ns(p["end"]),
                p["energy_wh"],
                p["register_wh"],
                p["quality"],
            )
        )
    return [tuple(r) for r in intervals], reads


def fleet_count(url: str) -> int:
    """Return how many intervals the fleet database holds (-1 while it cannot be read)."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(text("SELECT count(*) FROM fleet_intervals")).scalar_one()
            )
    except Exception:
        return -1
    finally:
        engine.dispose()


__all__ = ["wait_for"]
