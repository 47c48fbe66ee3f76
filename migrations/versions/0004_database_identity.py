"""database identity: a random id and signing secret, created once per database

The published state carries the id and a signature made with the secret, so the gateway takes
a floor for its published total only from a retained state this database itself published.
Downgrading drops the identity; upgrading again creates a new one (a new database to the broker).

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-04 00:00:00
"""

from __future__ import annotations

import secrets
import time

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "database_identity",
        sa.Column("database_id", sa.String(length=32), nullable=False),
        sa.Column("secret", sa.String(length=64), nullable=False),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("database_id", name=op.f("pk_database_identity")),
    )
    op.bulk_insert(
        table,
        [
            {
                "database_id": secrets.token_hex(16),
                "secret": secrets.token_hex(32),
                "created_ns": time.time_ns(),
            }
        ],
    )


def downgrade() -> None:
    op.drop_table("database_identity")
