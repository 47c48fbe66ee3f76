"""The database's identity (migration 0004): the id its published states carry, and their key."""

from __future__ import annotations

import secrets
import time

from sqlalchemy import select

from gateway.sinks.database import Database
from gateway.sinks.payloads import DatabaseIdentity
from gateway.sinks.schema import DatabaseIdentityRow


def database_identity(database: Database) -> DatabaseIdentity:
    """Return the database's identity, creating it if the row is missing (created once)."""
    with database.transaction() as session:
        row = session.scalar(select(DatabaseIdentityRow).order_by(DatabaseIdentityRow.created_ns))
        if row is None:
            row = DatabaseIdentityRow(
                database_id=secrets.token_hex(16),
                secret=secrets.token_hex(32),
                created_ns=time.time_ns(),
            )
            session.add(row)
        return DatabaseIdentity(row.database_id, row.secret)
