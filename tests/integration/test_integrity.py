"""Nobody can make two gateways share a database, or make one use a damaged file as if sound.

Real components: the daemon and the command line as subprocesses, SQLite files reached through
symbolic and hard links, the PostgreSQL server (its lock connection terminated from outside, as
a server restart does).
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from db_helpers import read_db, sqlite_file
from mqtt_helpers import wait_for
from sqlalchemy import create_engine, text
from test_durability import config_file, daemon, stop
from test_exactly_once import counters, make_log, run_to_the_end
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
    """Drop the connection that holds this process's lock, as a server restart would."""
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    mine = {"name": f"amr-gateway % pid {os.getpid()}"}
    try:
        with admin.connect() as connection:
            killed = connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name LIKE :name"
                ),
                mine,
            ).all()
            assert killed == [(True,)], killed

            def gone() -> bool:  # the signal is sent; the backend and its lock go a moment later
                left = "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE :name"
                return connection.execute(text(left), mine).scalar() == 0

            wait_for(gone, 10, "the lock's connection to end")
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


def test_a_database_with_two_names_is_said_to_have_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite names its write-ahead log after the name it was opened by: a hard link can
    hide a crash's log from the other name, so the gateway warns when the file has two."""
    db = tmp_path / "gateway.db"
    Database(f"sqlite:///{db}", lock="run").close()
    os.link(db, tmp_path / "copy.db")
    with caplog.at_level(logging.WARNING, logger="gateway.sinks.database"):
        Database(f"sqlite:///{db}", lock="run").close()
    assert "has 2 names (hard links)" in caplog.text


def test_sqlite_files_are_not_locked_twice_by_one_process(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    first = Database(f"sqlite:///{db}", lock="run")
    try:
        with pytest.raises(ConfigError, match=f"pid {os.getpid()}"):
            Database(f"sqlite:///{db}", lock="run")
    finally:
        first.close()
    with sqlite_file(db) as connection:  # still a sound database
        assert connection.execute("pragma quick_check").fetchone() == ("ok",)


# -- a damaged file is refused, and left as it is ------------------------------------------------

FRAME = 24 + 1024  # a WAL frame of a 1 KiB-page database


def digest(*paths: Path) -> list[bytes | None]:
    return [p.read_bytes() if p.exists() else None for p in paths]


def commits(wal: bytes) -> list[int]:
    """The frame numbers (from 0) that end a transaction in a write-ahead log."""
    count = (len(wal) - 32) // FRAME
    return [k for k in range(count) if int.from_bytes(wal[32 + k * FRAME + 4 : 40 + k * FRAME])]


def counted(db: Path) -> dict[str, int]:
    """The edges stored per channel, read from a copy (a running daemon holds its file alone;
    the copy's log is checkpointed, never the file's own)."""
    if not db.exists():
        return {}
    try:
        with read_db(db) as connection:
            return dict(connection.execute("select channel, edges from channel_counters"))
    except (sqlite3.Error, SinkError):
        return {}


@pytest.fixture
def killed_daemon(cli, tmp_path: Path) -> tuple[Path, Path, dict[str, int]]:
    """A daemon SIGKILLed once it had counted the whole log: its commits are in the WAL."""
    log, expected = make_log(cli, tmp_path)
    db = tmp_path / "gateway.db"
    config = config_file(tmp_path, db, log)
    proc = daemon(config)
    try:
        wait_for(lambda: counted(db) == expected, 90, "the whole log counted")
    finally:
        proc.kill()
        proc.wait()
    wal = (tmp_path / "gateway.db-wal").read_bytes()
    assert len(commits(wal)) >= 4, "a few commits in the write-ahead log"
    return config, db, expected


def refused(cli, config: Path, db: Path, why: str) -> None:
    """Every command that opens the file refuses it with exit 1, and leaves it as it is."""
    files = [db, db.with_name(db.name + "-wal")]
    before = digest(*files)
    url = f"sqlite:///{db}"
    for args in (
        ["run", "--config", str(config)],
        ["status", "--db", url],
        ["db", "upgrade", "--db", url],
    ):
        result = cli(*args)
        assert result.returncode == 1, (args, result.stderr)
        assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
        assert f"{db} is damaged ({why}" in result.stderr, result.stderr
        assert (
            "restore it from a backup" in result.stderr and "docs/persistence.md" in result.stderr
        )
        assert digest(*files) == before, f"{args[0]} changed the damaged file"


def test_a_damaged_write_ahead_log_is_refused_not_read_as_an_older_database(
    cli, killed_daemon: tuple[Path, Path, dict[str, int]]
) -> None:
    """SQLite drops a log from a damaged header or frame on: the register resumed lower, or
    from zero, and the log was rewritten (issue 17). A later intact commit proves the damage."""
    config, db, _ = killed_daemon
    wal_path = db.with_name("gateway.db-wal")
    wal = wal_path.read_bytes()
    rng = random.Random(17)
    # Random bytes over the header: SQLite would ignore the whole log.
    wal_path.write_bytes(rng.randbytes(32) + wal[32:])
    refused(cli, config, db, "its write-ahead log is damaged at its header")
    # Random bytes in the page of the second transaction's first frame.
    second = commits(wal)[0] + 1
    at = 32 + second * FRAME + 24 + 100
    wal_path.write_bytes(wal[:at] + rng.randbytes(64) + wal[at + 64 :])
    refused(cli, config, db, f"its write-ahead log is damaged at its frame {second + 1}")


def test_a_torn_last_transaction_is_a_power_cut_not_damage(
    cli, killed_daemon: tuple[Path, Path, dict[str, int]]
) -> None:
    """What a power cut can leave (the transaction being written) must not stop the gateway."""
    config, db, expected = killed_daemon
    wal_path = db.with_name("gateway.db-wal")
    wal = wal_path.read_bytes()
    last = commits(wal)[-2] + 1  # the last transaction's first frame, torn
    at = 32 + last * FRAME + 24 + 10
    wal_path.write_bytes(wal[:at] + b"\x55" * 20 + wal[at + 20 :])
    result = cli("status", "--db", f"sqlite:///{db}", "--json")
    assert result.returncode == 0, result.stderr
    assert counters(db)["10"] < expected["10"]  # the last commit is lost, as in a power cut
    run_to_the_end(config, db, expected)  # and the replay counts it again


def test_random_bytes_in_the_database_file_are_refused(cli, tmp_path: Path) -> None:
    """Not written to with exit 0, then unreadable for export (issue 17)."""
    log, _ = make_log(cli, tmp_path)
    db = tmp_path / "gateway.db"
    result = cli("replay", str(log), "--db", f"sqlite:///{db}")
    assert result.returncode == 0, result.stderr
    assert not db.with_name("gateway.db-wal").exists()  # all of it in the file itself
    sound = cli("export", "--db", f"sqlite:///{db}").stdout.splitlines()
    assert len(sound) == 1 + 25  # the header, and 6 hours of 15-minute intervals and the tail
    data = db.read_bytes()
    middle = (len(data) // 1024 // 2) * 1024  # a page boundary in the middle
    rng = random.Random(17)
    db.write_bytes(data[: middle - 256] + rng.randbytes(512) + data[middle + 256 :])
    config = config_file(tmp_path, db, log)
    # quick_check's finding, or SQLite's own error where a page cannot even be read.
    refused(cli, config, db, "")
    imported = cli("replay", str(log), "--db", f"sqlite:///{db}")
    assert imported.returncode == 1 and "is damaged" in imported.stderr
    # export still gets out what can be read, invents nothing, and says it is incomplete.
    exported = cli("export", "--db", f"sqlite:///{db}")
    assert exported.returncode == 1 and "Traceback" not in exported.stderr
    lines = exported.stdout.splitlines()
    assert lines[0] == sound[0] and set(lines) <= set(sound)
    assert f"exported the {len(lines) - 1} interval(s) that could be read" in exported.stderr
    assert len(exported.stderr.splitlines()) == 1


def test_the_daemon_takes_a_lost_postgresql_lock_again(
    cli, tmp_path: Path, postgres_url: str
) -> None:
    """Through the real daemon: a dropped lock connection is noticed at the next commit."""
    log, _ = make_log(cli, tmp_path)
    config = config_file(tmp_path, tmp_path / "unused.db", log)
    config.write_text(
        config.read_text()
        .replace(f'"sqlite:///{tmp_path / "unused.db"}"', f'"{postgres_url}"')
        .replace("speed = 3600", "speed = 600")
    )
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    proc = daemon(config)
    lock_holders = (
        "SELECT a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        f"WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = 'amr-gateway run pid {proc.pid}'"
    )

    def edges() -> int:
        with admin.connect() as connection:
            try:
                return int(
                    connection.execute(
                        text("SELECT coalesce(sum(edges), 0) FROM channel_counters")
                    ).scalar()
                    or 0
                )
            except Exception:
                return 0

    try:
        with admin.connect() as connection:
            wait_for(lambda: edges() > 0, 60, "the daemon's first commit")
            (first,) = connection.execute(text(lock_holders)).scalars().all()
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
            before = edges()
            wait_for(lambda: edges() > before, 60, "a commit after the lock was lost")
            holders = connection.execute(text(lock_holders)).scalars().all()
            assert len(holders) == 1 and holders != [first], "taken again, on a new connection"
    finally:
        status, err = stop(proc)
        admin.dispose()
    assert status == 0, err
    assert err.count("the lock was lost with its connection") == 1, err


def test_damage_in_a_log_a_checkpoint_copied_is_still_damage(
    cli, killed_daemon: tuple[Path, Path, dict[str, int]]
) -> None:
    """A checkpoint copied every frame into the file, then the log was damaged: SQLite reads
    the frames it keeps before the file, so it would read pages older than the file's (an
    empty alembic_version: "revision None") and a write would rewrite the log."""
    config, db, _ = killed_daemon
    checkpoint = (
        f"import os, sqlite3; c = sqlite3.connect({str(db)!r}); "
        "assert c.execute('PRAGMA wal_checkpoint(PASSIVE)').fetchone()[0] == 0; "
        "os._exit(0)"  # not closed: the log stays, every frame of it in the file now
    )
    subprocess.run([sys.executable, "-c", checkpoint], check=True)
    wal_path = db.with_name("gateway.db-wal")
    wal = wal_path.read_bytes()
    second = commits(wal)[0] + 1
    at = 32 + second * FRAME + 24 + 100
    wal_path.write_bytes(wal[:at] + random.Random(17).randbytes(64) + wal[at + 64 :])
    refused(cli, config, db, f"its write-ahead log is damaged at its frame {second + 1}")
