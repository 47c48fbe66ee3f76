"""Database migrations with Alembic, run from the installed package (no alembic.ini needed)."""

from __future__ import annotations

import importlib.resources
import logging

from alembic.config import Config
from sqlalchemy import inspect
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from gateway.errors import ConfigError
from gateway.sinks.failures import first_line, sink_errors
from gateway.sinks.redact import redact

logger = logging.getLogger(__name__)


def _config() -> Config:
    # The scripts are migrations/ in the repository, installed as the gateway.migrations package.
    scripts = importlib.resources.files("gateway.migrations")
    config = Config()
    config.set_main_option("script_location", str(scripts))
    return config


def _describe(engine: Engine) -> str:
    return f"database {redact(engine.url.render_as_string(hide_password=False))}"


def _tables(engine: Engine) -> set[str]:
    try:
        return set(inspect(engine).get_table_names())
    except SQLAlchemyError as exc:
        why = first_line(exc)
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
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade_database(engine: Engine, revision: str = "head") -> None:
    """Bring the database to ``revision`` (creating it if empty); refuse a foreign one."""
    from alembic import command

    _check_ours(engine, _tables(engine))
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
    if current != head_revision():
        raise ConfigError(
            f"{_describe(engine)} is at revision {current}, not {head_revision()}: "
            "run 'amr-gateway db upgrade'"
        )
