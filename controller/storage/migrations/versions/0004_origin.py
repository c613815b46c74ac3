"""The database's origin: an identity made with it, sent with every command it issues.

The manipulator's journal identifies a command by (origin, id), so a new
database (ids from 1 again) or one restored from a backup (ids the journal
already holds for other commands) can no longer be taken for resends of
commands it never issued. ``first_command_id``: the commands of a database
that existed before this revision (ids below it) were journaled without an
origin, and are still sent with the empty one, so that one of them resent
after the upgrade is recognised as a resend.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import time
import uuid

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    origin = op.create_table(
        "database_origin",
        sa.Column("origin", sa.String(36), primary_key=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("first_command_id", sa.BigInteger(), nullable=False),
    )
    next_id = op.get_bind().execute(sa.text("SELECT COALESCE(MAX(id), 0) + 1 FROM commands"))
    op.bulk_insert(
        origin,
        [
            {
                "origin": str(uuid.uuid4()),
                "created_at": time.time_ns() // 1000,
                "first_command_id": int(next_id.scalar_one()),
            }
        ],
    )


def downgrade() -> None:
    op.drop_table("database_origin")
