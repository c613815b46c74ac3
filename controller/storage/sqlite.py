"""The writer's statements on SQLite, straight on the aiosqlite connection.

Plain SQL on the DBAPI connection: one thread hop per statement and no
statement compilation on the hot path.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import sqlite3
from collections.abc import AsyncIterator, Sequence

import aiosqlite

from controller.errors import DatabaseFileMoved, RejectedWrite
from controller.storage.rows import command_values
from controller.storage.schema import commands
from controller.storage.write_backend import (
    MARK_RETENTION_US,
    Acknowledge,
    InsertCommand,
    MarkRow,
    Operation,
    PartialRow,
    PartialSums,
    PruneReadings,
    RunKey,
    StoredReading,
    StoredValues,
    command_conflict,
)

__all__ = ["INSERT_CHUNK", "SqliteWrites", "insert_chunks", "is_data_error"]

_INSERT_RUN = (
    "INSERT INTO sensor_runs (sensor_id, boot_id) VALUES (?, ?) "
    "ON CONFLICT (sensor_id, boot_id) DO NOTHING"
)
_RUN_ID = "SELECT id FROM sensor_runs WHERE sensor_id = ? AND boot_id = ?"
# Readings go in as multi-row INSERTs, not executemany: sqlite3 lets go of
# the GIL around every statement it steps, so executemany hands the GIL to the
# event loop and waits to get it back once per row (up to the 5 ms switch
# interval when the loop is busy); one statement per chunk does it once per
# chunk, and SQLite's own work on the chunk runs beside the loop. Chunks are
# powers of two up to this (5 parameters a row, well under SQLite's 32,766),
# so a handful of distinct statements stays in sqlite3's statement cache.
INSERT_CHUNK = 512
_STORED = "SELECT seq, payload, timestamp FROM readings WHERE run_id = ? AND seq BETWEEN ? AND ?"
# A command already stored under its id is read back rather than refused:
# a retry after a commit whose outcome was unknown finds it there.
_INSERT_COMMAND = "INSERT INTO commands ({}) VALUES ({}) ON CONFLICT (id) DO NOTHING".format(
    ", ".join(c.name for c in commands.columns), ", ".join(f":{c.name}" for c in commands.columns)
)
_COMMAND = "SELECT * FROM commands WHERE id = ?"
_ACKNOWLEDGE = "UPDATE commands SET acknowledged_at = ? WHERE id = ? AND acknowledged_at IS NULL"
# Oldest first by the timestamp index, a bounded number per transaction.
_PRUNE = (
    "DELETE FROM readings WHERE id IN "
    "(SELECT id FROM readings WHERE timestamp < ? ORDER BY timestamp LIMIT ?)"
)

_DECIDED = "SELECT decided_until FROM decision_state WHERE id = 1"
# One node on SQLite (its lock file says so): its term never expires.
_LEADS = "SELECT epoch = ? FROM leadership WHERE id = 1"
_LAST_COMMAND_ID = "SELECT COALESCE(MAX(id), 0) FROM commands"
_PARTIALS = "SELECT count, total, total_sq FROM window_partials WHERE window_start = ?"
_STORE_PARTIALS = (
    "INSERT INTO window_partials (window_start, node, count, total, total_sq) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (window_start, node) DO UPDATE SET "
    "count = excluded.count, total = excluded.total, total_sq = excluded.total_sq"
)
_CLOSE = "UPDATE decision_state SET decided_until = ? WHERE id = 1"
_DROP_PARTIALS = "DELETE FROM window_partials WHERE window_start < ?"
_STORE_MARKS = (
    "INSERT INTO run_marks (run_id, node, reached_us, heard_us) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (run_id, node) DO UPDATE SET "
    "reached_us = excluded.reached_us, heard_us = excluded.heard_us"
)
_DROP_MARKS = "DELETE FROM run_marks WHERE heard_us < ?"

_DATA_ERRORS = (
    # Binding a Python int past 64 bits, or a str that cannot be UTF-8.
    OverflowError,
    UnicodeEncodeError,
    # SQLITE_CONSTRAINT (and SQLITE_MISMATCH), SQLITE_TOOBIG.
    sqlite3.IntegrityError,
    sqlite3.DataError,
)


def is_data_error(exc: BaseException) -> bool:
    """Whether SQLite refused a value, rather than failed to write.

    Only the errors listed in ``_DATA_ERRORS``. Everything else is an outage:
    ``OperationalError`` (locked, full, read-only, I/O), ``DatabaseError``
    (a damaged file), ``ProgrammingError`` and aiosqlite's ``ValueError`` (a
    closed connection), ``OSError``.
    """
    # RejectedWrite: the write's own refusal, read back from the database (a
    # command id holding another command, a window close by a term that is over).
    return isinstance(exc, (*_DATA_ERRORS, RejectedWrite))


@functools.cache
def _insert_readings(rows: int) -> str:
    """The INSERT of ``rows`` readings (a few distinct sizes: sqlite3 caches each prepared)."""
    values = ", ".join(["(?, ?, ?, ?, ?)"] * rows)
    return (
        f"INSERT INTO readings (run_id, seq, payload, timestamp, received_at) VALUES {values} "
        "ON CONFLICT (run_id, seq) DO NOTHING"
    )


def insert_chunks(conn: sqlite3.Connection, rows: Sequence[StoredReading]) -> int:
    """Insert ``rows`` (on the connection's thread); how many were new."""
    inserted = 0
    start = 0
    while start < len(rows):
        left = len(rows) - start
        size = INSERT_CHUNK if left >= INSERT_CHUNK else 1 << (left.bit_length() - 1)
        values = list(itertools.chain.from_iterable(rows[start : start + size]))
        inserted += conn.execute(_insert_readings(size), values).rowcount
        start += size
    return inserted


class SqliteWrites:
    """:class:`controller.storage.write_backend.WriteBackend` on an aiosqlite connection."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        # The main database file's path, and the identity (st_dev, st_ino) of
        # the file there when the connection was opened; None in memory.
        self._path: str | None = None
        self._identity: tuple[int, int] | None = None
        # decided_until as committed, and as this transaction set it. Only this
        # connection changes it (one controller per file: its lock file), so it
        # is read once, not in every commit group.
        self._decided: int | None = None
        self._deciding: int | None = None

    async def opened(self, node: str) -> None:
        # This connection's commits never checkpoint the log (an fsync of the database
        # file inside a commit group): the controller's task does, beside it
        # (controller.storage.checkpoint). Other connections (migrations) keep the default.
        await self._conn.execute("PRAGMA wal_autocheckpoint=0")
        async with self._conn.execute("PRAGMA database_list") as cursor:
            files = {str(name): str(path) for _, name, path in await cursor.fetchall()}
        path = files.get("main", "")
        if path:  # "" for an in-memory database
            status = os.stat(path)
            self._path = path
            self._identity = (status.st_dev, status.st_ino)

    async def register_runs(self, runs: Sequence[RunKey]) -> dict[RunKey, int]:
        await self._conn.executemany(_INSERT_RUN, runs)
        ids = {}
        for run in runs:
            async with self._conn.execute(_RUN_ID, run) as cursor:
                row = await cursor.fetchone()
            assert row is not None, "a sensor run just inserted is missing"
            ids[run] = int(row[0])
        return ids

    async def begin(self) -> None:
        # IMMEDIATE takes the write lock up front (or waits busy_timeout).
        await self._conn.execute("BEGIN IMMEDIATE")

    async def apply(self, operation: Operation) -> int:
        match operation:
            case InsertCommand(record):
                cursor = await self._conn.execute(_INSERT_COMMAND, command_values(record))
                if cursor.rowcount == 0:
                    return command_conflict(record, await self._stored_command(record.id))
            case Acknowledge(command_id, at_us):
                cursor = await self._conn.execute(_ACKNOWLEDGE, (at_us, command_id))
            case PruneReadings(before_us, limit):
                cursor = await self._conn.execute(_PRUNE, (before_us, limit))
        return cursor.rowcount

    async def insert_readings(self, rows: Sequence[StoredReading]) -> int:
        # Every chunk in one hop to the connection's thread: aiosqlite's _execute
        # (untyped) is how its own public methods get there (the version is pinned).
        on_thread = self._conn._execute
        return int(await on_thread(insert_chunks, self._conn._conn, rows))  # type: ignore[no-untyped-call]

    async def stored_readings(self, run_id: int, low: int, high: int) -> list[StoredValues]:
        async with self._conn.execute(_STORED, (run_id, low, high)) as cursor:
            return [(int(s), int(p), int(t)) for s, p, t in await cursor.fetchall()]

    async def lock_decisions(self, *, exclusive: bool) -> int:
        # BEGIN IMMEDIATE already holds the whole file: one writer at a time.
        if self._deciding is not None:
            return self._deciding
        if self._decided is None:
            self._decided = await self._value(_DECIDED, ())
        return self._decided

    async def leads(self, epoch: int) -> bool:
        return bool(await self._value(_LEADS, (epoch,)))

    async def last_command_id(self) -> int:
        return await self._value(_LAST_COMMAND_ID, ())

    async def window_partials(self, window_start: int) -> list[PartialSums]:
        async with self._conn.execute(_PARTIALS, (window_start,)) as cursor:
            return [(int(c), str(t), str(q)) for c, t, q in await cursor.fetchall()]

    async def store_partials(self, rows: Sequence[PartialRow]) -> None:
        await self._conn.executemany(_STORE_PARTIALS, rows)

    async def store_marks(self, rows: Sequence[MarkRow]) -> None:
        await self._conn.executemany(_STORE_MARKS, rows)

    async def close_until(self, until_us: int) -> None:
        await self._conn.execute(_CLOSE, (until_us,))
        await self._conn.execute(_DROP_PARTIALS, (until_us,))
        await self._conn.execute(_DROP_MARKS, (until_us - MARK_RETENTION_US,))
        self._deciding = until_us

    async def _value(self, query: str, args: tuple[int, ...]) -> int:
        # One hop to the connection's thread (execute + fetchone + close would
        # be three): lock_decisions runs in every commit group.
        rows = await self._conn.execute_fetchall(query, args)
        assert rows, f"no row for {query}"
        return int(next(iter(rows))[0])

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        await self._conn.execute("SAVEPOINT isolate")
        try:
            yield
        except Exception:
            await self._conn.execute("ROLLBACK TO isolate")
            await self._conn.execute("RELEASE isolate")
            raise
        await self._conn.execute("RELEASE isolate")

    def is_data_error(self, exc: BaseException) -> bool:
        return is_data_error(exc)

    async def _stored_command(self, command_id: int) -> dict[str, object] | None:
        async with self._conn.execute(_COMMAND, (command_id,)) as cursor:
            row = await cursor.fetchone()
            names = [column[0] for column in cursor.description]
        return None if row is None else dict(zip(names, row, strict=True))

    async def commit(self) -> None:
        # A local file: a failed COMMIT did not commit, its outcome is never unknown.
        await self._conn.commit()
        if self._deciding is not None:
            self._decided, self._deciding = self._deciding, None

    async def committed(self, node: str, mark: int) -> bool:
        raise NotImplementedError("SQLite commits are never of unknown outcome")

    async def rollback(self) -> None:
        if self._conn.in_transaction:
            await self._conn.rollback()
        self._deciding = None

    def is_closed(self) -> bool:
        # A file on this machine: the connection itself does not go away.
        return False

    def check_file(self) -> None:
        # SQLite goes on writing into a file that was deleted or renamed (its
        # handle is open), and those writes vanish when the controller stops.
        # A stat of a local file costs microseconds; the writer asks twice
        # per commit, so it runs on the event loop rather than a thread hop.
        if self._path is None:
            return
        try:
            status = os.stat(self._path)
        except OSError as exc:
            raise DatabaseFileMoved(
                f"the database file {self._path} is gone ({exc.strerror}): it was deleted "
                "or moved while the controller wrote it; nothing more is acknowledged until "
                "the file is back at its path (or the controller is restarted)"
            ) from exc
        if (status.st_dev, status.st_ino) != self._identity:
            raise DatabaseFileMoved(
                f"the database file {self._path} was replaced by another file while the "
                "controller wrote it; nothing more is acknowledged until the file it opened "
                "is back at its path (or the controller is restarted)"
            )
