"""Each command's effect, the policy that decided it, its streak and its window's exact sums.

``commands`` gains nullable columns (NULL in the rows already there: none of this was
recorded for them): ``difference``, ``ci_low``, ``ci_high``, ``effect_size``; ``min_effect``,
``confirm``; ``streak_direction``, ``streak_length``; ``window_total``, ``window_total_sq``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-09
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("difference", sa.Float()),
    ("ci_low", sa.Float()),
    ("ci_high", sa.Float()),
    ("effect_size", sa.Float()),
    ("min_effect", sa.Float()),
    ("confirm", sa.Integer()),
    ("streak_direction", sa.String(4)),
    ("streak_length", sa.BigInteger()),
    ("window_total", sa.Text()),
    ("window_total_sq", sa.Text()),
)


def upgrade() -> None:
    # Plain ADD COLUMNs without a default: instant on both backends (no table rewrite,
    # however many commands there are).
    for name, type_ in _COLUMNS:
        op.add_column("commands", sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    # SQLite 3.35+ and PostgreSQL both drop a column in place.
    for name, _ in reversed(_COLUMNS):
        op.execute(f"ALTER TABLE commands DROP COLUMN {name}")
