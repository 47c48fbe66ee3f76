"""``status`` on an SQLite file reads it with ``sqlite3`` read-only, without SQLAlchemy (issue
21), and says exactly what the full path (SQLAlchemy) says: the same queries through both
readers, the same ``status`` to the byte, and every file the quick path does not take (held,
with a log to recover, damaged, at another revision) handed to the full path."""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from db_helpers import sqlite_file

from gateway.commands.database import open_database, status_of, write_status
from gateway.sinks.quickread import QuickReader, open_quick
from gateway.sinks.readback import Readback

# Two captures of one meter with three hours between them, across a billing read (UTC
# midnight, 1 November): a partial read, a gap, intervals nobody watched and their estimates.
FIRST = "time,kw\n2026-10-31T20:00:00Z,2.5\n2026-10-31T21:00:00Z,6\n2026-10-31T23:00:00Z,0\n"
SECOND = "time,kw\n2026-11-01T02:00:00Z,1.5\n2026-11-01T06:00:00Z,0\n"
CONFIG = """
[billing]
timezone = "UTC"

[[meters]]
name = "unit-101"
model = "2O208-4W"
source = "replay"
file = "{log}"
"""
NOW_NS = 1_793_000_000 * 10**9  # a fixed "now": both paths see the same clock


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database with intervals, a gap, events, a billing read and two LCD readings."""
    root = tmp_path_factory.mktemp("quick")
    db = root / "g.db"
    for k, profile in enumerate((FIRST, SECOND)):
        (root / f"p{k}.csv").write_text(profile)
        log = root / f"log{k}.csv"
        result = _cli("simulate", "--profile", str(root / f"p{k}.csv"), "--out", str(log),
                      "--meter", "unit-101")  # fmt: skip
        assert result.returncode == 0, result.stderr
        (root / "c.toml").write_text(CONFIG.format(log=log))
        result = _cli(
            "replay", str(log), "--db", f"sqlite:///{db}", "--config", str(root / "c.toml")
        )
        assert result.returncode == 0, result.stderr
    for lcd, when in ((7, "2026-10-31T22:00:00Z"), (30, "2026-11-01T05:00:00Z")):
        result = _cli("reconcile", "--db", f"sqlite:///{db}", "--meter", "unit-101",
                      "--lcd-kwh", str(lcd), "--time", when)  # fmt: skip
        assert result.returncode == 0, result.stderr
    return db


@pytest.fixture
def db(built: Path, tmp_path: Path) -> Path:
    """A copy of the built database of the test's own (status must not change it)."""
    copy = tmp_path / "g.db"
    shutil.copyfile(built, copy)
    return copy


@contextmanager
def both(db: Path) -> Iterator[tuple[Readback, Readback]]:
    """The same file through the quick reader and through SQLAlchemy."""
    quick = open_quick(str(db), f"database sqlite:///{db}")
    assert quick is not None, "the quick path refused a sound database"
    full = open_database(f"sqlite:///{db}")
    try:
        yield Readback(quick), Readback(full)
    finally:
        full.close()
        assert quick.close()


QUERIES: dict[str, Callable[[Readback], Any]] = {
    "meters": lambda r: r.meters(),
    "find_meter": lambda r: (r.find_meter("unit-101"), r.find_meter("nobody")),
    "intervals": lambda r: r.intervals(),
    "intervals_filtered": lambda r: r.intervals("unit-101", 1_793_487_600 * 10**9, 1_793_520_000 * 10**9),
    "estimates": lambda r: r.estimates(),
    "estimates_window": lambda r: r.estimates("unit-101", 1_793_480_400 * 10**9, 1_793_520_000 * 10**9),
    "events": lambda r: r.events(r.meters()[0].id),
    "events_since": lambda r: r.events(r.meters()[0].id, 1_793_491_200 * 10**9),
    "lcd_readings": lambda r: r.lcd_readings(r.meters()[0].id),
    "reads": lambda r: r.reads(),
    "reads_filtered": lambda r: (r.reads("unit-101", "2026-10"), r.reads("nobody")),
    "subinterval_wh_from": lambda r: r.subinterval_wh_from(r.meters()[0].id, 1_793_491_200 * 10**9),
    "first_unwatched": lambda r: r.first_unwatched(r.meters()[0].id, 0, 2**62),
    "count": lambda r: (r.count("intervals"), r.count("events", r.meters()[0].id)),
}  # fmt: skip


@pytest.mark.parametrize("query", sorted(QUERIES))
def test_each_query_answers_the_same_through_both_readers(db: Path, query: str) -> None:
    with both(db) as (quick, full):
        answer = QUERIES[query](quick)
        assert answer == QUERIES[query](full)
    assert answer not in (None, [], {}, 0, (None, None)), "a query that found nothing proves little"


def test_the_built_database_has_what_status_shows(db: Path) -> None:
    with both(db) as (quick, _):
        (meter,) = quick.meters()
        kinds = {e.kind for e in quick.events(meter.id)}
        assert "gap" in kinds and len(quick.lcd_readings(meter.id)) == 2
        (read,) = quick.reads()
        assert read.columns["quality"] == "partial" and read.columns["peak_partial"] is not None


@pytest.mark.parametrize("as_json", [True, False])
def test_status_is_byte_identical_through_both_readers(db: Path, as_json: bool) -> None:
    url = f"sqlite:///{db}"
    printed = []
    with both(db) as readers:
        for readback in readers:
            out = io.StringIO()
            write_status(status_of(readback, NOW_NS), url, as_json, out)
            printed.append(out.getvalue())
    assert printed[0] == printed[1]
    if as_json:
        meter = json.loads(printed[0])["meters"]["unit-101"]
        assert meter["last_read"]["period"] == "2026-10" and meter["anomalies"] >= 1
        assert meter["last_reconciliation"]["drift_wh"] is not None


IMPORTS = """
import sys
from gateway.cli import main
code = main(sys.argv[1:])
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"sqlalchemy", "alembic"})
print("heavy:", ",".join(heavy), file=sys.stderr)
raise SystemExit(code)
"""


def _status(db: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", IMPORTS, "status", "--db", f"sqlite:///{db}", "--json", *extra],
        capture_output=True,
        text=True,
        check=False,
    )


def test_status_on_sqlite_imports_neither_sqlalchemy_nor_alembic(db: Path) -> None:
    before = sorted(os.listdir(db.parent))
    result = _status(db)
    assert result.returncode == 0, result.stderr
    assert "heavy: \n" in result.stderr
    assert json.loads(result.stdout)["meters"]["unit-101"]["energy_wh"] > 0
    # Read-only: no log, no index, no checkpoint beside the file the quick path read.
    assert sorted(os.listdir(db.parent)) == before


def test_a_file_held_by_another_process_is_read_through_a_copy(db: Path) -> None:
    before = json.loads(_status(db).stdout)["meters"]["unit-101"]
    holder = sqlite3.connect(db)  # as the daemon holds it: exclusive locking, WAL
    try:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("PRAGMA journal_mode=WAL")
        holder.execute("PRAGMA wal_autocheckpoint=0")
        with holder:  # committed, in its log only
            holder.execute("UPDATE meter_state SET register_wh = register_wh + 5")
        result = _status(db)
    finally:
        holder.close()
    assert result.returncode == 0, result.stderr
    assert "heavy: \n" in result.stderr
    after = json.loads(result.stdout)["meters"]["unit-101"]
    assert after["energy_wh"] == before["energy_wh"] + 5  # what the holder committed
    assert {**after, "energy_wh": 0, "lcd_kwh": 0} == {**before, "energy_wh": 0, "lcd_kwh": 0}


def test_a_log_left_by_a_stopped_gateway_goes_the_full_way(db: Path, tmp_path: Path) -> None:
    """A gateway killed mid-run leaves a log with committed transactions: SQLite must recover
    it, and the full path judges it first (gateway/sinks/integrity.py)."""
    writer = sqlite3.connect(db)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    with writer:
        writer.execute("UPDATE meter_state SET register_wh = register_wh + 5")
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    for suffix in ("", "-wal"):
        shutil.copyfile(f"{db}{suffix}", crashed / f"g.db{suffix}")
    writer.close()
    assert (crashed / "g.db-wal").stat().st_size > 0
    assert open_quick(str(crashed / "g.db"), "database") is None
    result = _status(crashed / "g.db")
    assert result.returncode == 0, result.stderr
    assert "heavy: sqlalchemy" in result.stderr  # the full way, which recovered the log
    with sqlite_file(db) as connection:
        (register,) = connection.execute("SELECT register_wh FROM meter_state").fetchone()
    assert json.loads(result.stdout)["meters"]["unit-101"]["energy_wh"] == register


def test_an_older_revision_is_reported_as_the_full_path_reports_it(db: Path) -> None:
    with sqlite_file(db) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '0003'")
    assert open_quick(str(db), "database") is None
    result = _status(db)
    assert result.returncode == 2
    assert "is at revision 0003, not 0004: run 'amr-gateway db upgrade'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_damaged_file_is_refused_as_the_full_path_refuses_it(db: Path) -> None:
    size = db.stat().st_size
    with open(db, "r+b") as handle:  # garbage over the middle pages, as in test_integrity.py
        handle.seek(size // 2)
        handle.write(os.urandom(4096))
    assert open_quick(str(db), "database") is None
    result = _status(db)
    assert result.returncode == 1, result.stderr
    assert "is damaged" in result.stderr and "Traceback" not in result.stderr


def test_a_file_that_moves_under_the_read_is_not_believed(db: Path) -> None:
    quick = open_quick(str(db), "database")
    assert isinstance(quick, QuickReader)
    Readback(quick).meters()
    with sqlite_file(db) as connection:  # a writer starts meanwhile
        connection.execute("UPDATE meter_state SET register_wh = register_wh + 5")
    assert quick.close() is False
