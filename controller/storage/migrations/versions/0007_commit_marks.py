"""A commit mark per writer: what settles a COMMIT whose reply was lost (PostgreSQL).

Each commit group raises its writer's mark in its own transaction; after a lost COMMIT
reply the writer reads the mark back (waiting for the lost transaction to end) instead of
asking the status of the transaction's id, which a crashed server may have given to another
transaction since.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "commit_marks",
        sa.Column("node", sa.String(36), primary_key=True),
        sa.Column("mark", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("commit_marks")
