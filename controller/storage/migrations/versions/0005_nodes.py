"""Several controller nodes on one database: window statistics, the decided boundary, leadership.

``window_partials`` holds each node's statistics of the open windows, written with
the readings; ``decision_state`` the boundary before which readings are stale (the
end of the last window decided, from the commands so far); ``leadership`` the term
and the lease; ``commands.epoch`` the term that issued each command.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN on both backends (a batch would rebuild the SQLite table).
    op.add_column(
        "commands",
        sa.Column("epoch", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
    )
    state = op.create_table(
        "decision_state",
        sa.Column(
            "id", sa.Integer(), sa.CheckConstraint("id = 1"), primary_key=True, autoincrement=False
        ),
        sa.Column("decided_until", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "window_partials",
        sa.Column("window_start", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("node", sa.String(36), primary_key=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.Text(), nullable=False),
        sa.Column("total_sq", sa.Text(), nullable=False),
    )
    leadership = op.create_table(
        "leadership",
        sa.Column(
            "id", sa.Integer(), sa.CheckConstraint("id = 1"), primary_key=True, autoincrement=False
        ),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("node", sa.String(36), nullable=True),
        sa.Column("address", sa.String(255), nullable=True),
        sa.Column("elected_at", sa.BigInteger(), nullable=True),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
    )
    decided = op.get_bind().execute(sa.text("SELECT COALESCE(MAX(window_end), 0) FROM commands"))
    op.bulk_insert(state, [{"id": 1, "decided_until": int(decided.scalar_one())}])
    op.bulk_insert(leadership, [{"id": 1, "epoch": 0}])


def downgrade() -> None:
    op.drop_table("leadership")
    op.drop_table("window_partials")
    op.drop_table("decision_state")
    # SQLite 3.35+ and PostgreSQL both drop a column in place.
    op.execute("ALTER TABLE commands DROP COLUMN epoch")
