"""One controller per SQLite file: a lock file beside the database, held while the process runs.

Two controllers on one SQLite file would both decide and both issue command
ids from the same counter (the second's commands are refused as conflicts,
its readings are stored but the first's decisions never count them). So the
second one refuses to start: ``workcell.db.lock`` beside the database is
``flock``-ed (:class:`workcell.filelock.PidLock`, released by the kernel
however the process ends) and names the holder's pid for the refusal. Not
for ``:memory:`` databases (private to their process) nor PostgreSQL, where
several nodes on one database are the supported way to grow.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url

from controller.errors import DatabaseInUse
from workcell.filelock import FileLocked, PidLock

__all__ = ["LOCK_SUFFIX", "lock_path", "lock_sqlite_database", "sqlite_file"]

LOCK_SUFFIX = ".lock"
"""The lock file beside the database: ``workcell.db.lock``."""


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite database URL; None for PostgreSQL and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:" or parsed.query.get("mode") == "memory":
        return None
    return Path(database)


def lock_path(database: Path) -> Path:
    """``<database>.lock``, in the database's folder."""
    return database.with_name(database.name + LOCK_SUFFIX)


def lock_sqlite_database(url: str) -> PidLock | None:
    """Lock the SQLite file of ``url`` for this process (None when it is not a SQLite file).

    Raises :class:`DatabaseInUse` naming the file and the other controller's
    pid when another process holds it, OSError when the lock file cannot be
    created. Creates the database's folder, as opening the database would.
    """
    database = sqlite_file(url)
    if database is None:
        return None
    path = lock_path(database)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return PidLock.acquire(path)
    except FileLocked as exc:
        holder = "pid unknown" if exc.holder is None else f"pid {exc.holder}"
        raise DatabaseInUse(
            f"database {database} is in use by another controller ({holder}; lock file {path}): "
            "one controller per SQLite file, several controllers need PostgreSQL"
        ) from exc
