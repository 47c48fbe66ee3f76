"""interval unwatched seconds: how much of each interval nobody watched (SPEC 2, issue 16)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows written before hold 0: those intervals were stored as if watched whole.
    with op.batch_alter_table("intervals") as batch:
        batch.add_column(
            sa.Column("unwatched_s", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("intervals") as batch:
        batch.drop_column("unwatched_s")
