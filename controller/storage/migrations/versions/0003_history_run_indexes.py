"""Indexes that let a merged History page find where a run ends without reading it.

``ix_commands_status_issued_at_id`` finds the next command of the other
status after a point; ``ix_commands_unacknowledged`` (partial: only the rows
still waiting for their ack) finds whether a range holds an unacknowledged
command. Both are small: commands come one per period. Building them reads
the commands table once (about 6 million rows a year at a 5 s period).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_UNACKNOWLEDGED = sa.text("acknowledged_at IS NULL")


def upgrade() -> None:
    op.create_index("ix_commands_status_issued_at_id", "commands", ["status", "issued_at", "id"])
    op.create_index(
        "ix_commands_unacknowledged",
        "commands",
        ["issued_at", "id"],
        sqlite_where=_UNACKNOWLEDGED,
        postgresql_where=_UNACKNOWLEDGED,
    )


def downgrade() -> None:
    op.drop_index("ix_commands_unacknowledged", table_name="commands")
    op.drop_index("ix_commands_status_issued_at_id", table_name="commands")
