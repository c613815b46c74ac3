"""The database layout (user-facing: documented in docs/storage.md).

The tables are created and changed by the Alembic migrations in
``controller/storage/migrations``; this metadata is what the code queries, and a test
checks that the migrations produce exactly it on every backend.

Times are INTEGER microseconds since the Unix epoch, UTC: exact, compact, and
cheap to compare and aggregate. In SQLite, ``datetime(timestamp / 1e6,
'unixepoch')`` shows one for people.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

__all__ = [
    "commands",
    "commit_marks",
    "database_origin",
    "decision_state",
    "leadership",
    "metadata",
    "readings",
    "run_marks",
    "sensor_runs",
    "window_partials",
]

metadata = MetaData()

# One row per sensor process run: readings refer to it by a small integer
# instead of repeating two strings of up to 64 characters in every row and in
# the unique index, which made up more than half of the database's size.
sensor_runs = Table(
    "sensor_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sensor_id", String(64), nullable=False),
    Column("boot_id", String(64), nullable=False),
    UniqueConstraint("sensor_id", "boot_id", name="uq_sensor_runs_sensor_boot"),
)

readings = Table(
    "readings",
    metadata,
    # SQLite's rowid alias must be exactly INTEGER; elsewhere 64 bits, as a
    # 32-bit id runs out after about ten days at 2,400 readings a second.
    Column(
        "id",
        BigInteger().with_variant(Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column(
        "run_id",
        Integer,
        ForeignKey("sensor_runs.id", name="fk_readings_run_id_sensor_runs"),
        nullable=False,
    ),
    Column("seq", BigInteger, nullable=False),
    Column("payload", BigInteger, nullable=False),
    Column("timestamp", BigInteger, nullable=False),
    Column("received_at", BigInteger, nullable=False),
    # A resent reading hits this key and is ignored: stored exactly once.
    UniqueConstraint("run_id", "seq", name="uq_readings_run_seq"),
    # Restoring the open windows at start, and retention, read by creation time.
    Index("ix_readings_timestamp", "timestamp"),
)

commands = Table(
    "commands",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("status", String(4), CheckConstraint("status IN ('up', 'down')"), nullable=False),
    Column("window_start", BigInteger, nullable=False),
    Column("window_end", BigInteger, nullable=False),
    Column("issued_at", BigInteger, nullable=False),
    # NULL until the manipulator's CommandAck arrives: the delivery state.
    Column("acknowledged_at", BigInteger, nullable=True),
    # The decision record: what the status was decided from.
    Column("outcome", String(20), nullable=False),
    Column("changed", Boolean, nullable=False),
    Column("p_value", Float, nullable=True),
    Column("alpha", Float, nullable=False),
    Column("window_count", BigInteger, nullable=False),
    Column("window_mean", Float, nullable=False),
    Column("window_std", Float, nullable=False),
    Column("previous_count", BigInteger, nullable=False),
    Column("previous_mean", Float, nullable=False),
    Column("previous_std", Float, nullable=False),
    # The leadership term of the node that issued the command (0: before revision 0005).
    Column("epoch", BigInteger, nullable=False, server_default=text("0")),
    # Revision 0006, NULL in older rows. The effect (NULL where undefined): current mean minus
    # previous mean, its Welch interval at 1 - alpha, Hedges' g.
    Column("difference", Float, nullable=True),
    Column("ci_low", Float, nullable=True),
    Column("ci_high", Float, nullable=True),
    Column("effect_size", Float, nullable=True),
    # The guards of the policy that decided it (alpha is above) and the streak after it
    # (direction NULL with length 0: none), which a restart or a new leader resumes.
    Column("min_effect", Float, nullable=True),
    Column("confirm", Integer, nullable=True),
    Column("streak_direction", String(4), nullable=True),
    Column("streak_length", BigInteger, nullable=True),
    # The window's exact sum and sum of squares of payloads, as decimal text (a sum of
    # squares of int64 payloads outgrows every integer column), to recompute it exactly.
    Column("window_total", Text, nullable=True),
    Column("window_total_sq", Text, nullable=True),
    # History pages walk commands by (issued_at, id): a range of issue times
    # and a cursor are one index range, whatever the table's size.
    Index("ix_commands_issued_at_id", "issued_at", "id"),
    # Merged History pages find where a run of one status ends, and whether
    # all of it is acknowledged, by a seek each instead of reading the run.
    Index("ix_commands_status_issued_at_id", "status", "issued_at", "id"),
    Index(
        "ix_commands_unacknowledged",
        "issued_at",
        "id",
        sqlite_where=text("acknowledged_at IS NULL"),
        postgresql_where=text("acknowledged_at IS NULL"),
    ),
)

# One row: the database's identity, made with it (revision 0004) and sent with
# every command, so the manipulator tells this database's command 12 from
# another one's. Replaced by ``python -m controller.migrate --new-origin``.
database_origin = Table(
    "database_origin",
    metadata,
    Column("origin", String(36), primary_key=True),
    Column("created_at", BigInteger, nullable=False),
    # Commands with a lower id were issued before the database had an origin
    # (an upgrade from revision 0002) and keep the empty origin they were
    # journaled under.
    Column("first_command_id", BigInteger, nullable=False),
)

# Where ingest and decisions meet (revision 0005; docs/design.md, "Several nodes"). One row:
# readings stamped before ``decided_until`` are stale. Every ingest transaction reads it
# FOR SHARE before it counts its readings; the leader takes it FOR UPDATE to close a
# window, so the two never interleave, on any number of nodes.
decision_state = Table(
    "decision_state",
    metadata,
    Column("id", Integer, CheckConstraint("id = 1"), primary_key=True, autoincrement=False),
    Column("decided_until", BigInteger, nullable=False),
)

# Each node's running count / sum / sum of squares of the readings it stored per open
# window, written in the transaction that stores them (by that node alone). The leader
# sums a window's rows when it closes the window, then deletes them. Sums are decimal
# text: a sum of squares of int64 payloads outgrows every integer column type.
window_partials = Table(
    "window_partials",
    metadata,
    Column("window_start", BigInteger, primary_key=True, autoincrement=False),
    Column("node", String(36), primary_key=True),
    Column("count", BigInteger, nullable=False),
    Column("total", Text, nullable=False),
    Column("total_sq", Text, nullable=False),
)

# One row: the leadership term. ``epoch`` grows by one with every new leader; on
# PostgreSQL the leader holds a lease that expires at ``expires_at`` by the database's
# clock (NULL: nobody leads); on SQLite the only node leads with no expiry.
leadership = Table(
    "leadership",
    metadata,
    Column("id", Integer, CheckConstraint("id = 1"), primary_key=True, autoincrement=False),
    Column("epoch", BigInteger, nullable=False),
    Column("node", String(36), nullable=True),
    Column("address", String(255), nullable=True),
    Column("elected_at", BigInteger, nullable=True),
    Column("expires_at", BigInteger, nullable=True),
)

# One row per writer (node = one controller process run, as in window_partials): a counter
# that every commit group on PostgreSQL raises in its own transaction (revision 0007). When
# a COMMIT's outcome is lost with the connection, the row says whether it committed: the
# transaction's id cannot, as a server that crashed hands out again the ids whose WAL it
# lost. Unused on SQLite, whose commits are never of unknown outcome.
commit_marks = Table(
    "commit_marks",
    metadata,
    Column("node", String(36), primary_key=True),
    Column("mark", BigInteger, nullable=False),
)

# How far each sensor run's committed readings reach, per node that stored them (revision
# 0008): the leader decides a window once every live run has passed its end (the
# watermarks, controller.decision.watermarks). ``reached_us``: the newest reading's
# timestamp (sensors send in order); ``heard_us``: when the node received it, by the node's
# clock. Written by each node's writer with the readings, at most a few times a second per
# run; rows of runs silent for a minute are deleted by the leader's closes.
run_marks = Table(
    "run_marks",
    metadata,
    Column("run_id", Integer, primary_key=True, autoincrement=False),
    Column("node", String(36), primary_key=True),
    Column("reached_us", BigInteger, nullable=False),
    Column("heard_us", BigInteger, nullable=False),
)
