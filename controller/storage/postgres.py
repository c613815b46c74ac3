"""The writer's statements on PostgreSQL, straight on the asyncpg connection.

A group's readings go in as one ``INSERT ... SELECT FROM unnest(...)`` of five
column arrays: one round trip and one statement, whatever the group's size.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

import asyncpg

from controller.errors import CommitOutcomeUnknown, RejectedWrite
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

__all__ = ["DATABASE_NOW_US", "PostgresWrites", "is_data_error"]

_INSERT_RUN = (
    "INSERT INTO sensor_runs (sensor_id, boot_id) VALUES ($1, $2) "
    "ON CONFLICT (sensor_id, boot_id) DO NOTHING"
)
_RUN_ID = "SELECT id FROM sensor_runs WHERE sensor_id = $1 AND boot_id = $2"
_INSERT_READINGS = (
    "INSERT INTO readings (run_id, seq, payload, timestamp, received_at) "
    "SELECT * FROM unnest($1::integer[], $2::bigint[], $3::bigint[], $4::bigint[], "
    "$5::bigint[]) ON CONFLICT (run_id, seq) DO NOTHING"
)
_STORED = "SELECT seq, payload, timestamp FROM readings WHERE run_id = $1 AND seq BETWEEN $2 AND $3"
_COMMAND_COLUMNS = [c.name for c in commands.columns]
# A command already stored under its id is read back rather than refused:
# a retry after a commit whose outcome was unknown finds it there.
_INSERT_COMMAND = "INSERT INTO commands ({}) VALUES ({}) ON CONFLICT (id) DO NOTHING".format(
    ", ".join(_COMMAND_COLUMNS), ", ".join(f"${i}" for i in range(1, len(_COMMAND_COLUMNS) + 1))
)
_COMMAND = "SELECT * FROM commands WHERE id = $1"
# The writer's commit mark (controller.storage.schema.commit_marks): raised in every
# group's transaction, read back if the COMMIT's reply is lost. FOR SHARE waits for a
# transaction still holding the row (its COMMIT still on its way) to end.
_REGISTER_MARK = "INSERT INTO commit_marks (node, mark) VALUES ($1, 0) ON CONFLICT DO NOTHING"
_RAISE_MARK = "UPDATE commit_marks SET mark = mark + 1 WHERE node = $1 RETURNING mark"
_MARK = "SELECT mark FROM commit_marks WHERE node = $1 FOR SHARE"
# How long reading a mark back may wait for the lost transaction to end (the server
# ends an idle one within idle_in_transaction_session_timeout); then it is asked again.
MARK_WAIT = 10.0
# The database's clock in Unix microseconds: leases are judged by it alone, so
# the nodes' clocks never need to agree (controller.leadership).
DATABASE_NOW_US = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"
# What a connection lost under a statement raises.
_CONNECTION_LOST = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError)
_ACKNOWLEDGE = "UPDATE commands SET acknowledged_at = $1 WHERE id = $2 AND acknowledged_at IS NULL"
_PRUNE = (
    "DELETE FROM readings WHERE id IN "
    "(SELECT id FROM readings WHERE timestamp < $1 ORDER BY timestamp LIMIT $2)"
)

# Every node locks the one decision_state row: shared to count readings, exclusive
# to close a window (controller.storage.window_stats).
_DECIDED_SHARED = "SELECT decided_until FROM decision_state WHERE id = 1 FOR SHARE"
_DECIDED_EXCLUSIVE = "SELECT decided_until FROM decision_state WHERE id = 1 FOR UPDATE"
_LEADS = f"SELECT epoch = $1 AND expires_at > {DATABASE_NOW_US} FROM leadership WHERE id = 1"
_LAST_COMMAND_ID = "SELECT COALESCE(MAX(id), 0) FROM commands"
_PARTIALS = "SELECT count, total, total_sq FROM window_partials WHERE window_start = $1"
_STORE_PARTIALS = (
    "INSERT INTO window_partials (window_start, node, count, total, total_sq) "
    "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (window_start, node) DO UPDATE SET "
    "count = excluded.count, total = excluded.total, total_sq = excluded.total_sq"
)
_CLOSE = "UPDATE decision_state SET decided_until = $1 WHERE id = 1"
_DROP_PARTIALS = "DELETE FROM window_partials WHERE window_start < $1"
_STORE_MARKS = (
    "INSERT INTO run_marks (run_id, node, reached_us, heard_us) VALUES ($1, $2, $3, $4) "
    "ON CONFLICT (run_id, node) DO UPDATE SET "
    "reached_us = excluded.reached_us, heard_us = excluded.heard_us"
)
_DROP_MARKS = "DELETE FROM run_marks WHERE heard_us < $1"

# SQLSTATE classes 22 (data exception: out of range, NUL in text, too long;
# asyncpg raises DataError too when it cannot encode an argument) and 23
# (integrity constraint violation).
_DATA_ERRORS = (
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.IntegrityConstraintViolationError,
)


def is_data_error(exc: BaseException) -> bool:
    """Whether PostgreSQL (or asyncpg, encoding an argument) refused a value.

    Everything else is an outage: lock timeouts, a full disk, a read-only
    server, a shutdown, a lost connection, a cancelled statement.
    """
    # RejectedWrite: the write's own refusal, read back from the database (a
    # command id holding another command, a window close by a term that is over).
    return isinstance(exc, (*_DATA_ERRORS, RejectedWrite))


def _row_count(status: str) -> int:
    # asyncpg returns the command tag: "INSERT 0 12", "UPDATE 1", "DELETE 500".
    return int(status.rsplit(" ", 1)[-1])


class PostgresWrites:
    """:class:`controller.storage.write_backend.WriteBackend` on an asyncpg connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self._transaction: asyncpg.transaction.Transaction | None = None
        self._node = ""

    async def opened(self, node: str) -> None:
        # Committed on its own before any group: a mark row inserted by the group whose
        # reply is lost would be invisible to the FOR SHARE that reads it back, which
        # would then not wait for that group's transaction to end.
        self._node = node
        await self._conn.execute(_REGISTER_MARK, node)

    async def register_runs(self, runs: Sequence[RunKey]) -> dict[RunKey, int]:
        await self._conn.executemany(_INSERT_RUN, runs)
        return {run: int(await self._conn.fetchval(_RUN_ID, *run)) for run in runs}

    async def begin(self) -> None:
        self._transaction = self._conn.transaction()
        await self._transaction.start()

    async def apply(self, operation: Operation) -> int:
        match operation:
            case InsertCommand(record):
                values = command_values(record)
                args = [values[name] for name in _COMMAND_COLUMNS]
                status = await self._conn.execute(_INSERT_COMMAND, *args)
                if _row_count(status) == 0:
                    stored = await self._conn.fetchrow(_COMMAND, record.id)
                    return command_conflict(record, None if stored is None else dict(stored))
            case Acknowledge(command_id, at_us):
                status = await self._conn.execute(_ACKNOWLEDGE, at_us, command_id)
            case PruneReadings(before_us, limit):
                status = await self._conn.execute(_PRUNE, before_us, limit)
        return _row_count(status)

    async def insert_readings(self, rows: Sequence[StoredReading]) -> int:
        columns = [list(column) for column in zip(*rows, strict=True)]
        return _row_count(await self._conn.execute(_INSERT_READINGS, *columns))

    async def stored_readings(self, run_id: int, low: int, high: int) -> list[StoredValues]:
        rows = await self._conn.fetch(_STORED, run_id, low, high)
        return [(int(r["seq"]), int(r["payload"]), int(r["timestamp"])) for r in rows]

    async def lock_decisions(self, *, exclusive: bool) -> int:
        return int(await self._conn.fetchval(_DECIDED_EXCLUSIVE if exclusive else _DECIDED_SHARED))

    async def leads(self, epoch: int) -> bool:
        return bool(await self._conn.fetchval(_LEADS, epoch))

    async def last_command_id(self) -> int:
        return int(await self._conn.fetchval(_LAST_COMMAND_ID))

    async def window_partials(self, window_start: int) -> list[PartialSums]:
        rows = await self._conn.fetch(_PARTIALS, window_start)
        return [(int(r["count"]), str(r["total"]), str(r["total_sq"])) for r in rows]

    async def store_partials(self, rows: Sequence[PartialRow]) -> None:
        await self._conn.executemany(_STORE_PARTIALS, rows)

    async def store_marks(self, rows: Sequence[MarkRow]) -> None:
        await self._conn.executemany(_STORE_MARKS, rows)

    async def close_until(self, until_us: int) -> None:
        await self._conn.execute(_CLOSE, until_us)
        await self._conn.execute(_DROP_PARTIALS, until_us)
        await self._conn.execute(_DROP_MARKS, until_us - MARK_RETENTION_US)

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        # Nested in the open transaction, asyncpg's transaction is a savepoint.
        async with self._conn.transaction():
            yield

    def is_data_error(self, exc: BaseException) -> bool:
        return is_data_error(exc)

    async def commit(self) -> None:
        transaction, self._transaction = self._transaction, None
        assert transaction is not None, "commit without begin"
        # One round trip more per group: what makes a lost reply answerable. Not the
        # transaction's id (txid_status): after a crash the server gives the ids of
        # transactions whose WAL it lost to new ones, which may commit.
        mark = int(await self._conn.fetchval(_RAISE_MARK, self._node))
        try:
            await transaction.commit()
        except _CONNECTION_LOST as exc:
            # The COMMIT may have reached the server and committed: only the
            # server can say, on another connection (Writer._resolve).
            raise CommitOutcomeUnknown(mark, exc) from exc

    async def committed(self, node: str, mark: int) -> bool:
        stored = await self._conn.fetchval(_MARK, node, timeout=MARK_WAIT)
        return stored is not None and int(stored) >= mark

    async def rollback(self) -> None:
        transaction, self._transaction = self._transaction, None
        if transaction is not None:
            await transaction.rollback()

    def is_closed(self) -> bool:
        return bool(self._conn.is_closed())

    def check_file(self) -> None:
        pass  # a server's database: no file of ours to lose
