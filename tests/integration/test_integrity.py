"""Nobody can make two gateways share a database, or make one use a damaged file as if sound.

Real components: the daemon and the command line as subprocesses, SQLite files reached through
symbolic and hard links, the PostgreSQL server (its lock connection terminated from outside, as
a server restart does).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from mqtt_helpers import wait_for
from sqlalchemy import create_engine, text
from test_durability import config_file, daemon, stop
from test_exactly_once import counters, make_log
from test_store import batch, interval

from gateway.errors import ConfigError, SinkError
from gateway.sinks.database import Database
from gateway.sinks.outbox import Outbox
from gateway.sinks.store import Store

T0_NS = 1_764_057_600 * 10**9

# -- one gateway per database file, whatever its name ------------------------------------------


def test_a_second_daemon_through_a_symlink_or_a_hard_link_is_refused(cli, tmp_path: Path) -> None:
    """The lock follows the file: another name for it admits no second daemon (issue 17)."""
    log, _ = make_log(cli, tmp_path)
    db = tmp_path / "gateway.db"
    first = daemon(config_file(tmp_path, db, log))
    try:
        wait_for(lambda: counters(db).get("10", 0) > 0, 60, "the first daemon's first commit")
        (tmp_path / "other").mkdir()
        symlink, hardlink = tmp_path / "other" / "sym.db", tmp_path / "other" / "hard.db"
        symlink.symlink_to(db)
        os.link(db, hardlink)
        for name in (symlink, hardlink):
            config = config_file(tmp_path / "other", name, log)
            second = subprocess.run(
                [sys.executable, "-m", "gateway", "run", "--config", str(config)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert second.returncode == 2, (name, second.stderr)
            assert str(name) in second.stderr and f"pid {first.pid}" in second.stderr
            assert "Traceback" not in second.stderr
            imported = cli("replay", str(log), "--db", f"sqlite:///{name}")
            assert imported.returncode == 2 and f"pid {first.pid}" in imported.stderr
        assert first.poll() is None, "the first daemon must run on undisturbed"
        assert not (tmp_path / "other" / "hard.db-wal").exists()  # no second write-ahead log
    finally:
        status, err = stop(first)
    assert status == 0, err


def test_no_lock_file_is_left_beside_the_database(cli, tmp_path: Path) -> None:
    """The quick start leaves nothing for `git status` to show but the database (issue 16)."""
    log, _ = make_log(cli, tmp_path)
    (tmp_path / "gateway.db.lock").write_text("run, pid 1, since 2026-01-01T00:00:00Z\n")  # older
    result = cli("replay", str(log), "--db", "sqlite:///gateway.db", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = cli("db", "upgrade", "--db", "sqlite:///gateway.db", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gateway.db", "profile.csv", log.name]


def test_a_refused_lock_leaves_sqlites_own_locks_in_place(tmp_path: Path) -> None:
    """Closing any descriptor of a file drops the process's POSIX locks on it, SQLite's too.

    The first database holds SQLite's exclusive lock (exclusive locking mode); a second attempt
    on the same file in the same process, through a hard link, must not release it: another
    process still finds the database locked.
    """
    db, link = tmp_path / "gateway.db", tmp_path / "link.db"
    first = Database(f"sqlite:///{db}", lock="run")
    try:
        os.link(db, link)
        with first.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA locking_mode=EXCLUSIVE")
            connection.exec_driver_sql("UPDATE alembic_version SET version_num = version_num")
            connection.commit()
            reader = [sys.executable, "-c", f"import sqlite3; sqlite3.connect({str(db)!r}, "]
            reader[-1] += "timeout=0).execute('select count(*) from meters').fetchall()"
            locked = subprocess.run(reader, capture_output=True, text=True, check=False)
            assert "database is locked" in locked.stderr
            with pytest.raises(ConfigError, match="in use by"):
                Database(f"sqlite:///{link}", lock="replay --db")
            locked = subprocess.run(reader, capture_output=True, text=True, check=False)
            assert "database is locked" in locked.stderr, "SQLite's lock was dropped"
    finally:
        first.close()
    second = Database(f"sqlite:///{link}", lock="run")  # free once the first has closed
    second.close()


# -- PostgreSQL: a lock lost with its connection -----------------------------------------------


def _terminate_lock_connection(postgres_url: str) -> None:
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            killed = connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name LIKE :name"
                ),
                {"name": f"amr-gateway % pid {os.getpid()}"},
            ).all()
        assert killed == [(True,)], killed
    finally:
        admin.dispose()


def test_a_lost_postgresql_lock_is_taken_again_before_the_next_commit(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A server restart drops the lock with its connection (issue 17): noticed, retaken, said."""
    first = Database(postgres_url, lock="run")
    store = Store(first)
    try:
        store.commit([batch(10, [interval(0, 4)])], T0_NS)
        _terminate_lock_connection(postgres_url)
        with caplog.at_level(logging.WARNING, logger="gateway.sinks.database"):
            store.commit([batch(13, [interval(1, 3)])], T0_NS + 1)
        assert caplog.text.count("lock") == 1 and "taken again" in caplog.text
        with pytest.raises(ConfigError, match="in use by another amr-gateway"):
            Database(postgres_url, lock="run")  # a second daemon is refused again
        # Lost again, and this time a second daemon takes it first: the first stops committing.
        _terminate_lock_connection(postgres_url)
        second = Database(postgres_url, lock="run")
        try:
            with pytest.raises(SinkError, match=r"lost its lock.*in use by another amr-gateway"):
                store.commit([batch(16, [interval(2, 3)])], T0_NS + 2)
            stored = Store(second).meter("unit-101", "2O208-4W", "replay", T0_NS)
            assert stored.register_wh == 65  # nothing of the refused commit
        finally:
            second.close()
        store.commit([batch(16, [interval(2, 3)])], T0_NS + 3)  # free again: taken, committed
        seqs = [(m.kind, m.seq) for m in Outbox(first).head()]
        assert seqs == [("interval", 1), ("interval", 2), ("interval", 3)]
    finally:
        first.close()


def test_sqlite_files_are_not_locked_twice_by_one_process(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    first = Database(f"sqlite:///{db}", lock="run")
    try:
        with pytest.raises(ConfigError, match=f"pid {os.getpid()}"):
            Database(f"sqlite:///{db}", lock="run")
    finally:
        first.close()
    with sqlite3.connect(db) as connection:  # still a sound database
        assert connection.execute("pragma quick_check").fetchone() == ("ok",)
