"""Alembic environment of the fleet database: the collector hands over its connection.

Its own version table (``fleet_alembic_version``), so a fleet database is never mistaken for a
gateway's, nor migrated by the gateway's tree.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from gateway.fleet.schema import VERSION_TABLE, FleetBase

config = context.config
target_metadata = FleetBase.metadata


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
        with engine.begin() as conn:
            _migrate(conn)
        return
    _migrate(connection)


def _migrate(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run()
