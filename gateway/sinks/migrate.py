"""Database migrations with Alembic, run from the installed package (no alembic.ini needed).

Alembic is imported only when a migration is needed: a daemon starting on a database already at
:data:`~gateway.sinks.schema.SCHEMA_REVISION` reads ``alembic_version`` with plain SQL (a test
holds that constant to Alembic's head), which spares a Raspberry Pi a second of start-up.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from gateway.errors import ConfigError, SinkError
from gateway.sinks.failures import first_line, sink_errors
from gateway.sinks.redact import redact
from gateway.sinks.schema import SCHEMA_REVISION

if TYPE_CHECKING:
    from alembic.config import Config

logger = logging.getLogger(__name__)

# SQLite's result codes for an open that failed because of the input the user gave (a file that
# is not a database, a directory that does not exist), as opposed to the storage failing.
_SQLITE_USER_ERRORS = {"SQLITE_NOTADB", "SQLITE_CANTOPEN", "SQLITE_CORRUPT"}


def script_location(tree: str = "") -> Any:
    """Return the Alembic script directory of a migration tree: "" the gateway's, "fleet" the
    fleet collector's (migrations/fleet/, installed as gateway.migrations.fleet)."""
    # The scripts are migrations/ in the repository, installed as the gateway.migrations package.
    # Run from a checkout (a git worktree beside an editable install of another one), the
    # checkout's own scripts go with its own models.
    # (A pyproject.toml beside it tells a checkout from site-packages.)
    root = Path(__file__).resolve().parents[2]
    checkout = root / "migrations" / tree if tree else root / "migrations"
    if (root / "pyproject.toml").is_file() and (checkout / "env.py").is_file():
        return checkout
    return importlib.resources.files(f"gateway.migrations.{tree}" if tree else "gateway.migrations")


def _config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(script_location()))
    return config


def _describe(engine: Engine) -> str:
    return f"database {redact(engine.url.render_as_string(hide_password=False))}"


# What PostgreSQL answers a connection to a database it does not have (no SQLSTATE reaches the
# client before the connection exists, so the words are all there is).
_NO_SUCH_DATABASE_RE = re.compile(r'database "([^"]+)" does not exist')


def check_server(engine: Engine) -> None:
    """Connect once to a database server; a database it does not have is a ConfigError saying
    how to create it, anything else a SinkError (the server may come back)."""
    if engine.dialect.name == "sqlite":
        return
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as exc:
        match = _NO_SUCH_DATABASE_RE.search(str(getattr(exc, "orig", None) or exc))
        if match is None:
            raise SinkError(f"{_describe(engine)}: cannot open it: {first_line(exc)}") from exc
        name, user = match[1], engine.url.username or "USER"
        raise ConfigError(
            f"{_describe(engine)}: database {name!r} does not exist on the server; create it"
            f" with: createdb {name} (as a user allowed to, e.g. sudo -u postgres createdb"
            f" -O {user} {name})"
        ) from None


def _tables(engine: Engine) -> set[str]:
    try:
        return set(inspect(engine).get_table_names())
    except SQLAlchemyError as exc:
        name = getattr(getattr(exc, "orig", None), "sqlite_errorname", None)
        path = engine.url.database or ""
        if name == "SQLITE_CANTOPEN" and os.path.isdir(os.path.dirname(os.path.abspath(path))):
            name = "SQLITE_READONLY"  # the directory is there: it cannot be written (read-only)
        if engine.dialect.name == "sqlite" and name not in _SQLITE_USER_ERRORS:
            # Disk I/O, a read-only or full file system, a lock: storage, which may come back.
            raise SinkError(f"{_describe(engine)}: cannot open it: {first_line(exc)}") from exc
        why = first_line(exc)
        if name == "SQLITE_CANTOPEN":
            raise ConfigError(
                f"{_describe(engine)}: cannot open it ({why}); does its directory exist?"
            ) from None
        if engine.dialect.name != "sqlite":
            raise SinkError(f"{_describe(engine)}: cannot open it: {why}") from exc
        raise ConfigError(
            f"{_describe(engine)}: cannot open it ({why}); is it an amr-gateway database?"
        ) from None


def _check_ours(engine: Engine, tables: set[str]) -> None:
    if tables and "alembic_version" not in tables:
        raise ConfigError(
            f"{_describe(engine)} holds tables of something else ({', '.join(sorted(tables)[:5])});"
            " give amr-gateway a database of its own"
        )


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """Return the revision the database is at (None: not under migration yet)."""
    if "alembic_version" not in _tables(engine):
        return None
    with sink_errors(_describe(engine)), engine.connect() as connection:
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def known_revisions() -> set[str]:
    """Every revision this version's migrations know."""
    from alembic.script import ScriptDirectory

    return {script.revision for script in ScriptDirectory.from_config(_config()).walk_revisions()}


def _check_not_newer(engine: Engine, current: str | None) -> None:
    """Refuse a database a newer amr-gateway migrated: no migration here can touch it."""
    if current is not None and current not in known_revisions():
        from gateway import __version__

        raise ConfigError(
            f"{_describe(engine)} is at revision {current}, from a newer amr-gateway than this "
            f"one ({__version__}, schema {SCHEMA_REVISION}): upgrade amr-gateway to use it"
        )


def upgrade_database(engine: Engine, revision: str = "head") -> None:
    """Bring the database to ``revision`` (creating it if empty); refuse a foreign one."""
    tables = _tables(engine)
    _check_ours(engine, tables)
    current = current_revision(engine) if tables else None
    if revision == "head" and tables and current == SCHEMA_REVISION:
        return  # nothing to do, and no need for Alembic
    _check_not_newer(engine, current)
    from alembic import command

    config = _config()
    with sink_errors(f"{_describe(engine)}: migration failed"), engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade_database(engine: Engine, revision: str) -> None:
    from alembic import command

    config = _config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def check_database(engine: Engine) -> None:
    """Refuse a database that is foreign, empty, or not at the current revision."""
    tables = _tables(engine)
    _check_ours(engine, tables)
    if not tables:
        raise ConfigError(
            f"{_describe(engine)} is empty: run the gateway or 'amr-gateway db upgrade'"
        )
    current = current_revision(engine)
    if current != SCHEMA_REVISION:
        _check_not_newer(engine, current)
        raise ConfigError(
            f"{_describe(engine)} is at revision {current}, not {SCHEMA_REVISION}: "
            "run 'amr-gateway db upgrade'"
        )
