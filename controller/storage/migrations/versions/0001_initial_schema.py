"""The initial schema: readings and commands.

This is exactly what ``metadata.create_all`` made before migrations existed,
so such a database is stamped at this revision rather than migrated.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# SQLite's rowid alias must be exactly INTEGER; elsewhere a 32-bit id would
# run out after about ten days at 2,400 readings a second.
_READING_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "readings",
        sa.Column("id", _READING_ID, primary_key=True, autoincrement=True),
        sa.Column("sensor_id", sa.String(64), nullable=False),
        sa.Column("boot_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.BigInteger(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("sensor_id", "boot_id", "seq", name="uq_readings_sensor_boot_seq"),
    )
    op.create_index("ix_readings_timestamp", "readings", ["timestamp"])
    op.create_table(
        "commands",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column(
            "status", sa.String(4), sa.CheckConstraint("status IN ('up', 'down')"), nullable=False
        ),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("window_end", sa.BigInteger(), nullable=False),
        sa.Column("issued_at", sa.BigInteger(), nullable=False),
        sa.Column("acknowledged_at", sa.BigInteger(), nullable=True),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("changed", sa.Boolean(), nullable=False),
        sa.Column("p_value", sa.Float(), nullable=True),
        sa.Column("alpha", sa.Float(), nullable=False),
        sa.Column("window_count", sa.BigInteger(), nullable=False),
        sa.Column("window_mean", sa.Float(), nullable=False),
        sa.Column("window_std", sa.Float(), nullable=False),
        sa.Column("previous_count", sa.BigInteger(), nullable=False),
        sa.Column("previous_mean", sa.Float(), nullable=False),
        sa.Column("previous_std", sa.Float(), nullable=False),
    )
    op.create_index("ix_commands_issued_at_id", "commands", ["issued_at", "id"])


def downgrade() -> None:
    op.drop_table("commands")
    op.drop_table("readings")
