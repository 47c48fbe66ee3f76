"""What the SD card sees: the WAL index stays in memory, and the database can still be read.

The daemon's SQLite connection runs in exclusive locking mode, so SQLite keeps the WAL index in
the process's memory and never creates the ``-shm`` file, a mapped file the kernel wrote back
every 30 s that a commit touched it (three 4 KiB pages a commit: more than the commit's own WAL
frames; docs/persistence.md). The read-only commands read a copy while the daemon runs.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from db_helpers import read_db
from mqtt_helpers import wait_for

from gateway.sinks.database import Database
from gateway.sinks.snapshot import held_elsewhere
from gateway.sinks.store import MeterBatch, Store

T0_NS = 1_767_225_600 * 10**9


def test_sqlite_runs_in_wal_mode_with_its_index_in_memory_and_full_sync(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    database = Database(f"sqlite:///{db}")
    try:
        store = Store(database)
        for k in range(3):
            batch = MeterBatch("m1", "2O208-4W", "gpio", {"k": k}, None, {}, register_wh=k)
            store.commit([batch], T0_NS + k)
        with database.engine.connect() as connection:
            pragma = {
                name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("locking_mode", "journal_mode", "synchronous", "page_size")
            }
        assert pragma == {
            "locking_mode": "exclusive",
            "journal_mode": "wal",
            "synchronous": 2,  # FULL: every commit is synced before anything is published
            "page_size": 1024,
        }
        assert (tmp_path / "g.db-wal").exists()
        assert not (tmp_path / "g.db-shm").exists()
    finally:
        database.close()
    assert not (tmp_path / "g.db-shm").exists()


def test_a_running_daemon_writes_no_shm_file_and_can_still_be_read(cli, tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    url = f"sqlite:///{db}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--simulate", "--speed", "3600"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: db.exists() and held_elsewhere(str(db)), 30, "the daemon to hold it")

        def committed() -> int:
            with read_db(db) as conn:
                try:
                    row = conn.execute("select edges from channel_counters where channel = '10'")
                except sqlite3.OperationalError:  # not migrated yet
                    return 0
                return int((row.fetchone() or [0])[0])

        first = wait_for(committed, 30, "a commit with edges")
        assert not (tmp_path / "gateway.db-shm").exists()
        assert (tmp_path / "gateway.db-wal").exists()  # the commits are in the log, not the file

        # status and export read a copy: what the daemon has committed, no later than now.
        result = cli("status", "--db", url, "--json")
        assert result.returncode == 0, result.stderr
        meter = json.loads(result.stdout)["meters"]["meter1"]
        assert meter["edges"]["10"] >= first
        assert committed() >= meter["edges"]["10"]
        result = cli("export", "--db", url, "--format", "csv")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("meter,start,end,energy_wh")
        # A command that writes is refused, in one line, and nothing is left behind.
        result = cli("reconcile", "--db", url, "--meter", "meter1", "--lcd-kwh", "1")
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert str(db) in result.stderr and "stop it first" in result.stderr
        assert not (tmp_path / "gateway.db-shm").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert not held_elsewhere(str(db))
    with read_db(db) as conn:
        assert conn.execute("select count(*) from lcd_readings").fetchone()[0] == 0
    result = cli("status", "--db", url, "--json")
    assert result.returncode == 0, result.stderr


WRITER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
for pragma in ("page_size=1024", "locking_mode=EXCLUSIVE", "journal_mode=WAL",
               "synchronous=FULL", "wal_autocheckpoint=60"):
    conn.execute("PRAGMA " + pragma)
conn.execute("create table t (k integer primary key, v integer, pad blob)")
conn.execute("begin")
for k in range(20):
    conn.execute("insert into t values (?, 0, randomblob(100))", (k,))
conn.execute("commit")
print("ready", flush=True)
v = 0
while True:
    v += 1
    conn.execute("begin")
    for k in range(20):
        conn.execute("update t set v = ? where k = ?", (v, k))
    conn.execute("commit")  # three pages: a checkpoint every 20 commits
    time.sleep(0.01)
"""


def test_a_copy_is_one_commit_while_the_holder_commits_and_checkpoints(tmp_path: Path) -> None:
    """Every copy shows one commit whole (all rows at the same value), never going back,
    while another process commits every 10 ms and checkpoints every 20 commits."""
    db = tmp_path / "held.db"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
        assert held_elsewhere(str(db))
        seen = []
        for _ in range(60):
            with read_db(db) as conn:
                values = {v for (v,) in conn.execute("select v from t")}
                assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"
            assert len(values) == 1, f"a torn copy: {sorted(values)}"
            seen.append(values.pop())
        assert seen == sorted(seen) and seen[-1] > seen[0]
    finally:
        writer.kill()
        writer.wait()


HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
conn.execute("select count(*) from sqlite_master").fetchone()  # maps the -shm file
print("open", flush=True)
sys.stdin.read()
"""


def test_a_database_another_program_has_open_in_shared_mode_is_refused_to_writers(cli, tmp_path) -> None:
    """Its WAL index (the -shm file) would go stale beside the gateway's in-memory one."""
    db = tmp_path / "g.db"
    Database(f"sqlite:///{db}").close()
    with sqlite3.connect(db) as conn:  # as an older gateway or another tool left it: WAL mode
        conn.execute("pragma journal_mode=wal")
    conn.close()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        assert (tmp_path / "g.db-shm").exists()
        # A reader reads a copy, leaving the other program's index alone; a writer is refused.
        result = cli("status", "--db", f"sqlite:///{db}")
        assert result.returncode == 0 and "no meters" in result.stdout, result.stderr
        result = cli("db", "upgrade", "--db", f"sqlite:///{db}")
        assert result.stderr.count("\n") == 1 and str(db) in result.stderr, result.stderr
        assert result.returncode == 1 and "another program has it open" in result.stderr
    finally:
        holder.communicate("", timeout=30)
    result = cli("status", "--db", f"sqlite:///{db}")
    assert result.returncode == 0, result.stderr


def test_a_reader_in_the_process_that_holds_the_file_shares_its_connection(tmp_path) -> None:
    """The daemon's web view reads through open_database beside the daemon's own Database:
    it shares the one connection, and the file stays held (no probe dropped the lock)."""
    from gateway.commands.database import open_database
    from gateway.sinks.readback import Readback

    db = tmp_path / "g.db"
    database = Database(f"sqlite:///{db}")
    try:
        batch = MeterBatch("m1", "2O208-4W", "gpio", {"k": 1}, None, {}, register_wh=7)
        Store(database).commit([batch], T0_NS)
        reader = open_database(f"sqlite:///{db}")
        stored = Readback(reader).find_meter("m1")
        assert stored is not None and stored.register_wh == 7
        Store(database).commit([dataclasses.replace(batch, register_wh=8)], T0_NS + 1)
        stored = Readback(reader).find_meter("m1")
        assert stored is not None and stored.register_wh == 8
        probe = subprocess.run(
            [sys.executable, "-c", HELD, str(db)], capture_output=True, text=True, check=True
        )
        assert probe.stdout == "True\n"  # another process still finds it held
    finally:
        database.close()


HELD = "import sys; from gateway.sinks.snapshot import held_elsewhere; print(held_elsewhere(sys.argv[1]))"
