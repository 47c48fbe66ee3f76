"""The fleet database: its engine, its migrations (migrations/fleet/), and telling it apart.

The same engine settings as the gateway's database (:func:`gateway.sinks.database.make_engine`)
but in SQLite's shared mode, so `status` and `bill` read it while a collector writes;
and the same way of finding the Alembic scripts from a checkout or from the installed package
(:func:`gateway.sinks.migrate.script_location`); only the tree and the version table differ.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from gateway.errors import ConfigError, SinkError
from gateway.fleet.schema import FLEET_REVISION, VERSION_TABLE
from gateway.sinks.database import make_engine
from gateway.sinks.failures import first_line, sink_errors
from gateway.sinks.migrate import script_location
from gateway.sinks.redact import redact

logger = logging.getLogger(__name__)

_LOCK_KEY = 0x666C_6565_746D  # the fleet's migration lock (an advisory lock's key)


def _config() -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(script_location("fleet")))
    return config


def fleet_head() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {script.revision for script in ScriptDirectory.from_config(_config()).walk_revisions()}


def _tables(engine: Engine) -> set[str]:
    try:
        return set(inspect(engine).get_table_names())
    except SQLAlchemyError as exc:
        why = first_line(exc)
        raise SinkError(f"database {redact(str(engine.url))}: cannot open it: {why}") from exc


def is_fleet_database(engine: Engine) -> bool:
    """Whether the database is a fleet collector's (it has the fleet's version table)."""
    return VERSION_TABLE in _tables(engine)


def fleet_revision(engine: Engine) -> str | None:
    if not is_fleet_database(engine):
        return None
    with sink_errors(f"database {redact(str(engine.url))}"), engine.connect() as connection:
        return connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


class FleetDatabase:
    """An open fleet database, migrated (``upgrade``) or checked to be at the current schema."""

    def __init__(self, url: str, *, upgrade: bool = True) -> None:
        self.url = url
        self.name = f"database {redact(url)}"
        self.engine = make_engine(url, exclusive=False)
        try:
            tables = _tables(self.engine)
            if tables and VERSION_TABLE not in tables:
                raise ConfigError(
                    f"{self.name} is not a fleet database ({', '.join(sorted(tables)[:5])});"
                    " give the collector a database of its own"
                )
            current = fleet_revision(self.engine) if tables else None
            if current is not None and current not in _known_revisions():
                from gateway import __version__

                raise ConfigError(
                    f"{self.name} is at fleet revision {current}, from a newer amr-gateway than"
                    f" this one ({__version__}, fleet schema {FLEET_REVISION}): upgrade it first"
                )
            if current != FLEET_REVISION:
                if not upgrade:
                    raise ConfigError(
                        f"{self.name} is at fleet revision {current}, not {FLEET_REVISION}:"
                        " run 'amr-gateway collect' (it migrates at start-up)"
                    )
                self._upgrade()
        except BaseException:
            self.engine.dispose()
            raise

    def _upgrade(self) -> None:
        from alembic import command

        config = _config()
        with sink_errors(f"{self.name}: migration failed"), self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Collectors started together on a fresh database: one migrates, the others
                # wait for it here and then find the schema made.
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
                if VERSION_TABLE in inspect(connection).get_table_names():
                    version = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))
                    if version.scalar() == FLEET_REVISION:
                        return
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def close(self) -> None:
        self.engine.dispose()


def downgrade_fleet(engine: Engine, revision: str = "base") -> None:
    """Take the fleet schema down to ``revision`` (tests; a fleet has no other use for it)."""
    from alembic import command

    config = _config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)
