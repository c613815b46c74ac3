"""Bring a database's schema up to date with the Alembic migrations.

The controller runs :func:`upgrade` at every start (through
:meth:`controller.storage.database.Database.open`); ``python -m
controller.migrate`` (:mod:`controller.migrate`) does the same without
starting the controller.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

__all__ = ["BASELINE", "UnknownRevision", "alembic_config", "head_revision", "upgrade"]

log = logging.getLogger(__name__)

# Databases made before migrations existed have this schema but no
# alembic_version table: they are stamped here, then upgraded as usual.
BASELINE = "0001"
_MIGRATIONS = Path(__file__).with_name("migrations")
# PostgreSQL advisory lock held while migrating: "workcell" in ASCII.
_LOCK_KEY = int.from_bytes(b"workcell", "big")


class UnknownRevision(Exception):
    """The database was migrated by a newer workcell than this one."""


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for our migrations, to run them on ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "controller/storage/migrations has no revision"
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at; None before any migration ran."""
    with _quiet_alembic():
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(connection: Connection, revision: str = "head") -> str:
    """Migrate the database on ``connection`` to ``revision``; return the one it is at.

    Sync, for ``AsyncConnection.run_sync``. Refuses a database migrated by a
    newer version of workcell (its revision is unknown here) rather than
    running against a schema this code does not know.
    """
    if connection.dialect.name == "postgresql":
        # Controllers starting together on one database take turns; the lock
        # goes with the transaction Database.open runs this in.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    config = alembic_config(connection)
    before = current_revision(connection)
    scripts = ScriptDirectory.from_config(config)
    if before is not None and before not in {s.revision for s in scripts.walk_revisions()}:
        raise UnknownRevision(
            f"database schema is at revision {before}, which this version of workcell "
            f"does not know (newest known: {head_revision()}): run a newer workcell"
        )
    with _quiet_alembic():
        if before is None and _has_baseline_layout(connection):
            log.info("database predates migrations: stamping it at revision %s", BASELINE)
            command.stamp(config, BASELINE)
            before = BASELINE
        if before is not None and before != scripts.get_current_head():
            log.info(
                "upgrading the database schema from revision %s: this can take minutes "
                "on a large database",
                before,
            )
        command.upgrade(config, revision)
    after = current_revision(connection)
    assert after is not None
    if before != after:
        log.info("database schema migrated from %s to %s", before or "empty", after)
    return after


def _has_baseline_layout(connection: Connection) -> bool:
    """Whether the database has the tables of revision BASELINE (made before migrations)."""
    inspector = inspect(connection)
    if not {"readings", "commands"} <= set(inspector.get_table_names()):
        return False
    # Later layouts without alembic_version are not ours to guess at: upgrade()
    # then fails on the existing tables instead of stamping them wrongly.
    return "sensor_id" in {column["name"] for column in inspector.get_columns("readings")}


@contextlib.contextmanager
def _quiet_alembic() -> Iterator[None]:
    # Alembic logs its set-up at INFO on every call; the one line that
    # matters (from which revision to which) is logged by upgrade().
    logger = logging.getLogger("alembic")
    level = logger.level
    logger.setLevel(max(logging.WARNING, level))
    try:
        yield
    finally:
        logger.setLevel(level)
