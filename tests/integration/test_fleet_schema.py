"""The fleet database's migrations (migrations/fleet/), its monthly partitions and its keys."""

from __future__ import annotations

import json
import time

import pytest
from db_helpers import sqlite_file
from sqlalchemy import inspect, text

from gateway.fleet.database import FleetDatabase, downgrade_fleet, fleet_head, fleet_revision
from gateway.fleet.ingest import Ingest, parse_message
from gateway.fleet.partitions import MONTHS_AHEAD, months_from, partition_name
from gateway.fleet.schema import FLEET_REVISION, VERSION_TABLE, FleetBase

TABLES = set(FleetBase.metadata.tables)


def test_the_models_are_at_the_head_of_the_fleet_tree() -> None:
    assert fleet_head() == FLEET_REVISION


def test_fleet_migrations_up_down_and_match_the_models(database_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    database = FleetDatabase(database_url)
    engine = database.engine
    try:
        assert fleet_revision(engine) == FLEET_REVISION
        tables = set(inspect(engine).get_table_names())
        assert tables >= TABLES | {VERSION_TABLE}
        assert "alembic_version" not in tables  # never taken for a gateway's database

        def ours(obj, name, type_, reflected, compare_to):  # type: ignore[no-untyped-def]
            # monthly partitions are made at run time, not described by the models
            return not (type_ == "table" and name.startswith("fleet_intervals_"))

        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"include_object": ours, "version_table": VERSION_TABLE}
            )
            assert compare_metadata(context, FleetBase.metadata) == []
        downgrade_fleet(engine)
        assert not TABLES & set(inspect(engine).get_table_names())
    finally:
        database.close()
    FleetDatabase(database_url).close()  # and up again


def test_a_gateway_database_is_not_taken_for_a_fleet_one(tmp_path, cli) -> None:
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    assert cli("db", "upgrade", "--db", url).returncode == 0
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError, match="not a fleet database"):
        FleetDatabase(url)


def test_partitions_by_month_made_ahead_and_pruned(postgres_url: str) -> None:
    database = FleetDatabase(postgres_url)
    try:
        with database.engine.connect() as connection:
            kind = connection.execute(
                text(
                    "SELECT partstrat FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid WHERE c.relname = 'fleet_intervals'"
                )
            ).scalar()
            assert kind == "r"  # RANGE
            names = set(connection.execute(text("SELECT relname FROM pg_class")).scalars())
        for year, month in months_from(time.time_ns(), MONTHS_AHEAD + 1):
            assert partition_name(year, month) in names
        # A month far behind (a gateway catching up) gets its partition when its data comes.
        payload = {
            "meter": "m1",
            "start": "2024-02-29T23:45:00Z",
            "end": "2024-03-01T00:00:00Z",
            "energy_wh": 5,
            "edges": 1,
            "demand_kw": 0.02,
            "quality": "complete",
            "seq": 1,
        }
        item = parse_message("gw1", "m1", "interval", json.dumps(payload).encode())
        Ingest().ingest(database.engine, [item], time.time_ns())
        with database.engine.connect() as connection:
            assert (
                connection.execute(text("SELECT count(*) FROM fleet_intervals_202402")).scalar()
                == 1
            )
            # "One meter, one month" reads one partition, through its primary key.
            plan = "\n".join(
                connection.execute(
                    text(
                        "EXPLAIN SELECT * FROM fleet_intervals WHERE meter_id = 1 AND "
                        "start_ns >= 1706745600000000000 AND start_ns < 1709251200000000000"
                    )
                ).scalars()
            )
        assert "fleet_intervals_202402" in plan
        assert (
            "fleet_intervals_202403" not in plan
            and partition_name(*months_from(time.time_ns(), 1)[0]) not in plan
        )
    finally:
        database.close()


def test_collectors_started_together_on_a_fresh_database_all_start(postgres_url: str) -> None:
    import subprocess
    import sys

    code = (
        f"from gateway.fleet.database import FleetDatabase; FleetDatabase({postgres_url!r}).close()"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    results = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in procs]
    assert [code for code, _ in results] == [0, 0, 0], results


def test_the_wheel_carries_the_fleet_migrations(tmp_path) -> None:
    """Installed from a wheel alone, away from the checkout, the collector migrates its database."""
    import os
    import shutil
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    source = tmp_path / "source"
    shutil.copytree(
        root,
        source,
        ignore=shutil.ignore_patterns(
            "build", "dist", ".git", "*.egg-info", "__pycache__", ".*cache", ".hypothesis", "*.db*"
        ),
    )
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    built = subprocess.run(
        [*pip_wheel, "-q", "-w", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("amr_gateway-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "gateway/migrations/fleet/env.py",
        "gateway/migrations/fleet/script.py.mako",
        "gateway/migrations/fleet/versions/f0001_fleet_schema.py",
        "gateway/fleet/collector.py",
    } <= names
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    fleet = tmp_path / "fleet.db"
    code = f"from gateway.fleet.database import FleetDatabase; FleetDatabase('sqlite:///{fleet}')"
    migrated = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(target), "PYTHONSAFEPATH": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    status = subprocess.run(
        [sys.executable, "-m", "gateway", "status", "--db", f"sqlite:///{fleet}"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(target), "PYTHONSAFEPATH": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert status.returncode == 0 and "no gateway in" in status.stdout, status.stderr


def test_a_fleet_database_from_a_newer_version_is_refused_untouched(tmp_path, cli) -> None:

    path = tmp_path / "fleet.db"
    FleetDatabase(f"sqlite:///{path}").close()
    with sqlite_file(path) as con:
        con.execute(f"UPDATE {VERSION_TABLE} SET version_num = 'f9999'")

    def dump() -> list[str]:
        with sqlite_file(path) as con:
            return list(con.iterdump())

    before = dump()
    for args in (["status"], ["bill"], ["export"]):
        result = cli(*args, "--db", f"sqlite:///{path}")
        assert result.returncode == 2, result.stderr
        assert "f9999" in result.stderr and "newer" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert dump() == before  # (the bytes may differ: closing checkpoints the WAL)
