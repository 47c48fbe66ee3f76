"""Every Alembic migration runs up and down, on SQLite and on PostgreSQL, from the package."""

from __future__ import annotations

from sqlalchemy import inspect

from gateway.sinks.database import make_engine
from gateway.sinks.migrate import (
    current_revision,
    downgrade_database,
    head_revision,
    upgrade_database,
)
from gateway.sinks.schema import Base

TABLES = set(Base.metadata.tables)


def _walk(url: str) -> None:
    engine = make_engine(url)
    try:
        assert current_revision(engine) is None
        upgrade_database(engine)
        assert current_revision(engine) == head_revision()
        assert set(inspect(engine).get_table_names()) >= TABLES
        downgrade_database(engine, "base")
        assert current_revision(engine) is None
        assert not TABLES & set(inspect(engine).get_table_names())
        upgrade_database(engine)  # and up again
        assert set(inspect(engine).get_table_names()) >= TABLES
    finally:
        engine.dispose()


def test_migrations_up_and_down(database_url: str) -> None:
    _walk(database_url)


def test_each_database_gets_one_identity_of_its_own(tmp_path) -> None:
    """Created once by the migration; down and up again is a new database to the broker."""
    from gateway.sinks.database import Database
    from gateway.sinks.identity import database_identity

    def identity(path):  # type: ignore[no-untyped-def]
        database = Database(f"sqlite:///{path}")
        try:
            return database_identity(database), database_identity(database)
        finally:
            database.close()

    first, again = identity(tmp_path / "a.db")
    assert first == again and len(first.database_id) == 32 and len(first.secret) == 64
    other, _ = identity(tmp_path / "b.db")
    assert other.database_id != first.database_id and other.secret != first.secret
    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    try:
        downgrade_database(engine, "0002")
        assert "database_identity" not in inspect(engine).get_table_names()
        upgrade_database(engine)
    finally:
        engine.dispose()
    renewed, _ = identity(tmp_path / "a.db")
    assert renewed.database_id != first.database_id


def test_migrations_match_the_models(database_url: str) -> None:
    """The migrations build exactly the schema the models describe."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(database_url)
    try:
        upgrade_database(engine)
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diff == []
    finally:
        engine.dispose()


def test_migrations_ship_in_the_package() -> None:
    """Alembic finds its scripts through the installed ``migrations`` package, no alembic.ini."""
    import migrations

    assert head_revision() == "0004"
    assert migrations.__file__ is not None


def test_the_wheel_carries_the_migrations(tmp_path) -> None:
    """A wheel holds env.py, the template and every version, so an install can migrate."""
    import os
    import shutil
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    # Build from a clean copy: a build/ left in the checkout by an older layout would leak in.
    source = tmp_path / "source"
    shutil.copytree(
        root,
        source,
        ignore=shutil.ignore_patterns(
            "build", "dist", ".git", "*.egg-info", "__pycache__", ".*cache", ".hypothesis", "*.db*"
        ),
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(source),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("amr_gateway-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"gateway/migrations/env.py", "gateway/migrations/script.py.mako"} <= names
    assert "gateway/migrations/versions/0001_initial_schema.py" in names
    assert "gateway/migrations/versions/0002_meter_reads.py" in names
    assert "gateway/migrations/versions/0004_database_identity.py" in names
    assert "gateway/sinks/migrate.py" in names and "meter_model/meter.py" in names
    # No top-level "migrations" package to clash with another project's in site-packages.
    assert not any(name.startswith("migrations/") for name in names)
    # Every package of the source tree is in the wheel (the package list is explicit).
    for init in (root / "gateway").rglob("__init__.py"):
        assert str(init.relative_to(root)) in names, f"{init} is missing from the wheel"
    # Installed from the wheel alone, away from the checkout, it migrates a fresh database.
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    database = tmp_path / "fresh.db"
    migrated = subprocess.run(
        [sys.executable, "-m", "gateway", "db", "upgrade", "--db", f"sqlite:///{database}"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(target), "PYTHONSAFEPATH": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    assert "revision 0004" in migrated.stdout and database.exists()
