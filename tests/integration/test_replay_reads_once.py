"""``replay --db`` reads each log once (issue 21): counted by the scanner's opens of the file.

Into a new SQLite file (created after the logs were read), into one already at the current
schema (opened first, its meters resumed as the logs are read), and a log out of order from its
start (the chunks read before the disorder showed go to the sorter). A database that must be
set up first (here an empty file) has the logs read whole before it is touched, then read again:
the counter sees that second read, so it can fail.
"""

from __future__ import annotations

import io
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from db_helpers import read_db

import gateway.pulselog.scan as scan
from gateway.batch.command import replay
from gateway.commands.simulate import simulate
from gateway.errors import PulseLogError

T0 = 1_764_057_600  # 2025-11-25T08:00:00Z
PROFILE = [(0, 3.2), (1800, 7.9), (3600, 12.5), (5400, 4.4), (7200, 0.0), (9000, 9.1)]


@pytest.fixture
def opens(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Count every open of a log by the scanner (the one reader of logs), by path."""
    counted: Counter[str] = Counter()
    real_open = open

    def counting_open(path: Any, *args: Any, **kwargs: Any) -> IO[Any]:
        counted[str(path)] += 1
        return real_open(path, *args, **kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(scan, "open", counting_open, raising=False)
    monkeypatch.setattr(scan, "CHUNK_BYTES", 4096)  # many chunks, as a large log has
    yield counted


def _logs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Return a simulated log's first half, its second half, and the first half shuffled."""
    profile = tmp_path / "profile.csv"
    profile.write_text("time,kw\n" + "".join(f"{T0 + s},{kw}\n" for s, kw in PROFILE))
    whole = tmp_path / "whole.csv"
    simulate(str(profile), str(whole), meter="unit-101", model="2O208-4W", ct_rating_a=200)
    lines = whole.read_text().splitlines(keepends=True)
    body = [line for line in lines if line[:1].isdigit()]
    header = "time,meter,channel,level\n"
    first, second, shuffled = tmp_path / "1.csv", tmp_path / "2.csv", tmp_path / "1-shuffled.csv"
    first.write_text(header + "".join(body[: len(body) // 2]))
    second.write_text(header + "".join(body[len(body) // 2 :]))
    mixed = body[: len(body) // 2]
    random.Random(21).shuffle(mixed)
    shuffled.write_text(header + "".join(mixed))
    assert first.stat().st_size > 10 * scan.CHUNK_BYTES  # read in many chunks
    return first, second, shuffled


def _import(*logs: Path, url: str) -> dict[str, Any]:
    out = io.StringIO()
    result = replay([str(log) for log in logs], as_json=True, db_url=url, out=out)
    return {name: core.energy_wh for name, core in result.cores.items()}


def _edges_stored(db: Path) -> int:
    with read_db(db) as conn:
        return int(conn.execute("select sum(edges) from channel_counters").fetchone()[0])


def test_an_import_reads_each_log_once(tmp_path: Path, opens: Counter[str]) -> None:
    first, second, _ = _logs(tmp_path)
    db = tmp_path / "gw.db"
    url = f"sqlite:///{db}"
    _import(first, url=url)  # a new file: created after the log was read
    assert db.exists()
    assert opens == {str(first): 1}
    stored = _edges_stored(db)
    assert stored > 0
    opens.clear()
    _import(first, second, url=url)  # at the current schema: opened first, then read
    assert opens == {str(first): 1, str(second): 1}
    assert _edges_stored(db) > stored


def test_a_log_out_of_order_from_its_start_is_read_once(
    tmp_path: Path, opens: Counter[str]
) -> None:
    first, _, shuffled = _logs(tmp_path)
    url = f"sqlite:///{tmp_path / 'shuffled.db'}"
    assert _import(shuffled, url=url) == _import(first, url=f"sqlite:///{tmp_path / 'in.db'}")
    assert opens == {str(shuffled): 1, str(first): 1}
    assert _edges_stored(tmp_path / "shuffled.db") == _edges_stored(tmp_path / "in.db")


def test_a_database_to_set_up_has_the_logs_read_first(tmp_path: Path, opens: Counter[str]) -> None:
    first, _, _ = _logs(tmp_path)
    db = tmp_path / "empty.db"
    db.touch()  # empty: to be set up (migrated), so the logs are read whole before
    bad = tmp_path / "bad.csv"
    bad.write_text(first.read_text() + "1764080000.000000,unit-101,10,9\n")
    with pytest.raises(PulseLogError):
        _import(bad, url=f"sqlite:///{db}")
    assert db.stat().st_size == 0  # untouched
    _import(first, url=f"sqlite:///{db}")
    assert opens[str(first)] == 2
