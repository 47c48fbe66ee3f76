"""fleet schema: gateways, meters, intervals (monthly partitions on PostgreSQL), reads,
events, seq high-water marks and gaps

Revision ID: f0001
Revises:
Create Date: 2026-12-04 00:00:00
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

from gateway.fleet.partitions import MONTHS_AHEAD, create_partitions, months_from

revision = "f0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fleet_gateways",
        sa.Column("gateway", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("since_ns", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("gateway", name=op.f("pk_fleet_gateways")),
    )
    op.create_table(
        "fleet_meters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("gateway", sa.String(length=64), nullable=False),
        sa.Column("meter", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=32), nullable=True),
        sa.Column("state", sa.Text(), nullable=True),
        sa.Column("energy_wh", sa.BigInteger(), nullable=True),
        sa.Column("first_ns", sa.BigInteger(), nullable=False),
        sa.Column("last_ns", sa.BigInteger(), nullable=False),
        sa.Column("last_interval_end_ns", sa.BigInteger(), nullable=True),
        sa.Column("interval_s", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fleet_meters")),
        sa.UniqueConstraint("gateway", "meter", name=op.f("uq_fleet_meters_gateway")),
    )
    op.create_table(
        "fleet_intervals",
        sa.Column("meter_id", sa.Integer(), nullable=False),
        sa.Column("start_ns", sa.BigInteger(), nullable=False),
        sa.Column("end_ns", sa.BigInteger(), nullable=False),
        sa.Column("energy_wh", sa.BigInteger(), nullable=False),
        sa.Column("edges", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("received_ns", sa.BigInteger(), nullable=False),
        sa.Column("quality", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("meter_id", "start_ns", name=op.f("pk_fleet_intervals")),
        postgresql_partition_by="RANGE (start_ns)",
    )
    # "All meters, one period": the month's partition, then a BRIN range of it (intervals
    # arrive roughly in time order, and BRIN costs next to nothing per row). SQLite: a B-tree.
    op.create_index(
        "ix_fleet_intervals_start", "fleet_intervals", ["start_ns"], postgresql_using="brin"
    )
    op.create_table(
        "fleet_reads",
        sa.Column("meter_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("t_ns", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("meter_id", "seq", name=op.f("pk_fleet_reads")),
    )
    op.create_index("ix_fleet_reads_period", "fleet_reads", ["period"])
    op.create_table(
        "fleet_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("meter_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("t_ns", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fleet_events")),
        sa.UniqueConstraint("meter_id", "seq", name=op.f("uq_fleet_events_meter_id")),
    )
    op.create_index("ix_fleet_events_meter_time", "fleet_events", ["meter_id", "t_ns"])
    op.create_table(
        "fleet_seqs",
        sa.Column("meter_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("high_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("meter_id", "kind", name=op.f("pk_fleet_seqs")),
    )
    op.create_table(
        "fleet_gaps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("meter_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("opened_ns", sa.BigInteger(), nullable=False),
        sa.Column("closed_ns", sa.BigInteger(), nullable=True),
        sa.Column("reported", sa.Boolean(), nullable=False),
        sa.Column("requested_ns", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fleet_gaps")),
    )
    op.create_index("ix_fleet_gaps_meter_id", "fleet_gaps", ["meter_id", "kind"])
    # This month's partition and the next ones; the collector keeps making them as time goes.
    create_partitions(op.get_bind(), months_from(time.time_ns(), MONTHS_AHEAD + 1))


def downgrade() -> None:
    for table in (
        "fleet_gaps",
        "fleet_seqs",
        "fleet_events",
        "fleet_reads",
        "fleet_intervals",
        "fleet_meters",
        "fleet_gateways",
    ):
        op.drop_table(table)
