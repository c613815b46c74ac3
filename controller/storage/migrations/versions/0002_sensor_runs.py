"""Readings refer to their sensor run by a small integer (``sensor_runs``).

Each reading used to carry ``sensor_id`` and ``boot_id`` (two strings of up
to 64 characters), in the table and again in the unique index: 178 bytes per
reading in SQLite, 1.4 GiB an hour at 8 sensors x 300/s. With a run id it is
about 70. Existing readings are copied over, so on a large database this
revision takes a while: 67 s for one hour of readings (8.64 million) on
SQLite on a 2-core machine, during which the controller does not serve.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_READING_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_READING_VALUES = ("seq", "payload", "timestamp", "received_at")


def _create_readings(
    name: str, *run_columns: sa.Column[object], unique: sa.UniqueConstraint
) -> None:
    """A readings table: id, the run's columns, then the reading's values."""
    op.create_table(
        name,
        sa.Column("id", _READING_ID, primary_key=True, autoincrement=True),
        *run_columns,
        *(sa.Column(value, sa.BigInteger(), nullable=False) for value in _READING_VALUES),
        unique,
    )


def _swap_in(new: str) -> None:
    """Replace ``readings`` by the table ``new``, keeping PostgreSQL's names tidy."""
    op.drop_table("readings")
    op.rename_table(new, "readings")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER INDEX {new}_pkey RENAME TO readings_pkey")
        op.execute(f"ALTER SEQUENCE {new}_id_seq RENAME TO readings_id_seq")
        # The copied ids came with the rows; new ones continue after them.
        op.execute(
            "SELECT setval('readings_id_seq', COALESCE((SELECT MAX(id) FROM readings), 0) + 1, "
            "false)"
        )
    op.create_index("ix_readings_timestamp", "readings", ["timestamp"])


def upgrade() -> None:
    op.create_table(
        "sensor_runs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("sensor_id", sa.String(64), nullable=False),
        sa.Column("boot_id", sa.String(64), nullable=False),
        sa.UniqueConstraint("sensor_id", "boot_id", name="uq_sensor_runs_sensor_boot"),
    )
    # Runs numbered in the order they first sent a reading.
    op.execute(
        "INSERT INTO sensor_runs (sensor_id, boot_id) SELECT sensor_id, boot_id FROM readings "
        "GROUP BY sensor_id, boot_id ORDER BY MIN(id)"
    )
    _create_readings(
        "readings_v2",
        sa.Column(
            "run_id",
            sa.Integer(),
            sa.ForeignKey("sensor_runs.id", name="fk_readings_run_id_sensor_runs"),
            nullable=False,
        ),
        unique=sa.UniqueConstraint("run_id", "seq", name="uq_readings_run_seq"),
    )
    op.execute(
        "INSERT INTO readings_v2 (id, run_id, seq, payload, timestamp, received_at) "
        "SELECT r.id, s.id, r.seq, r.payload, r.timestamp, r.received_at FROM readings r "
        "JOIN sensor_runs s ON s.sensor_id = r.sensor_id AND s.boot_id = r.boot_id"
    )
    _swap_in("readings_v2")


def downgrade() -> None:
    _create_readings(
        "readings_v1",
        sa.Column("sensor_id", sa.String(64), nullable=False),
        sa.Column("boot_id", sa.String(64), nullable=False),
        unique=sa.UniqueConstraint(
            "sensor_id", "boot_id", "seq", name="uq_readings_sensor_boot_seq"
        ),
    )
    op.execute(
        "INSERT INTO readings_v1 (id, sensor_id, boot_id, seq, payload, timestamp, received_at) "
        "SELECT r.id, s.sensor_id, s.boot_id, r.seq, r.payload, r.timestamp, r.received_at "
        "FROM readings r JOIN sensor_runs s ON s.id = r.run_id"
    )
    _swap_in("readings_v1")
    op.drop_table("sensor_runs")
