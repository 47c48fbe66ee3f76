"""meter reads: scheduled billing reads (issue #13)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "meter_reads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("meter_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("start_ns", sa.BigInteger(), nullable=False),
        sa.Column("t_ns", sa.BigInteger(), nullable=False),
        sa.Column("register_channel", sa.String(length=4), nullable=False),
        sa.Column("register_wh", sa.BigInteger(), nullable=False),
        sa.Column("energy_wh", sa.BigInteger(), nullable=False),
        sa.Column("edges", sa.BigInteger(), nullable=False),
        sa.Column("peak_window_energy_wh", sa.BigInteger(), nullable=True),
        sa.Column("peak_window_s", sa.Integer(), nullable=False),
        sa.Column("peak_window_end_ns", sa.BigInteger(), nullable=True),
        sa.Column("peak_partial", sa.Boolean(), nullable=True),
        sa.Column("quality", sa.String(length=16), nullable=False),
        sa.Column("gap_s", sa.BigInteger(), nullable=False),
        sa.Column("glitches", sa.BigInteger(), nullable=False),
        sa.Column("inferred", sa.BigInteger(), nullable=False),
        sa.Column("mismatches", sa.BigInteger(), nullable=False),
        sa.Column("estimate_low_wh", sa.BigInteger(), nullable=True),
        sa.Column("estimate_high_wh", sa.BigInteger(), nullable=True),
        sa.Column("estimate_from", sa.String(length=8), nullable=True),
        sa.ForeignKeyConstraint(
            ["meter_id"], ["meters.id"], name=op.f("fk_meter_reads_meter_id_meters")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_meter_reads")),
        sa.UniqueConstraint("meter_id", "t_ns", name=op.f("uq_meter_reads_meter_id")),
    )


def downgrade() -> None:
    op.drop_table("meter_reads")
