"""How far each sensor run's committed readings reach, per node: the decisions' watermarks.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_marks",
        sa.Column("run_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("node", sa.String(36), primary_key=True),
        sa.Column("reached_us", sa.BigInteger(), nullable=False),
        sa.Column("heard_us", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("run_marks")
