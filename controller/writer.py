"""The single database writer: every write of the controller, group-committed.

Ingest hands over batches of readings and gets a future that resolves once
they are committed; commands and acknowledgements go through the same queue,
so SQLite only ever sees one writer and one transaction per group. The queue
is bounded: when the database falls behind, ``add_readings`` waits, the gRPC
stream stops reading, and HTTP/2 flow control slows the senders down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from controller.errors import StorageError
from controller.records import BatchResult, CommandRecord, ReadingRow
from controller.schema import commands
from controller.store import command_values

__all__ = ["CommittedListener", "Writer"]

log = logging.getLogger(__name__)

# Called in the event loop right after a commit with the timestamps and
# payloads of the readings that were newly stored; returns how many were stale.
CommittedListener = Callable[[Sequence[int], Sequence[int]], int]

_INSERT_READINGS = (
    "INSERT INTO readings (sensor_id, boot_id, seq, payload, timestamp, received_at) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (sensor_id, boot_id, seq) DO NOTHING"
)
_EXISTING_SEQS = (
    "SELECT seq FROM readings WHERE sensor_id = ? AND boot_id = ? AND seq BETWEEN ? AND ?"
)
# One transaction holds at most this many readings, so a commit stays short
# and its latency bounded even under a flood.
MAX_GROUP_ROWS = 20_000


@dataclass(slots=True)
class _ReadingBatch:
    rows: Sequence[ReadingRow]
    future: asyncio.Future[BatchResult]


@dataclass(slots=True)
class _Statement:
    statement: Any
    future: asyncio.Future[None]
    params: list[dict[str, Any]] = field(default_factory=list)


class Writer:
    """Owns the write connection and the task that commits queued writes."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        on_committed: CommittedListener,
        on_health: Callable[[bool], None] = lambda healthy: None,
        max_queue: int = 1024,
    ) -> None:
        self._engine = engine
        self._on_committed = on_committed
        # Told False when a write fails and True when writes succeed again, so
        # the controller can report NOT_SERVING while the database is in trouble.
        self._on_health = on_health
        self._queue: asyncio.Queue[_ReadingBatch | _Statement | None] = asyncio.Queue(max_queue)
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self.totals = BatchResult()
        self.commits = 0

    async def start(self) -> None:
        """Start the writer task."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="db-writer")

    async def close(self) -> None:
        """Commit everything queued so far, then stop (idempotent)."""
        if self._task is None:
            return
        if not self._task.done():
            await self._queue.put(None)
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    async def add_readings(self, rows: Sequence[ReadingRow]) -> asyncio.Future[BatchResult]:
        """Queue ``rows``; the returned future resolves once they are committed.

        Waits while the queue is full (backpressure on the caller's stream).
        """
        future: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
        await self._queue.put(_ReadingBatch(rows, future))
        return future

    async def record_command(self, record: CommandRecord) -> None:
        """Insert a command and its decision record; returns once committed."""
        await self._execute(insert(commands), [command_values(record)])

    async def mark_acknowledged(self, command_id: int, at_us: int) -> None:
        """Record when the manipulator acknowledged a command (first ack wins)."""
        statement = (
            update(commands)
            .where(commands.c.id == command_id, commands.c.acknowledged_at.is_(None))
            .values(acknowledged_at=at_us)
        )
        await self._execute(statement, [])

    async def _execute(self, statement: Any, params: list[dict[str, Any]]) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Statement(statement, future, params))
        await future

    async def _run(self) -> None:
        async with self._engine.connect() as conn:
            stopping = False
            while not stopping:
                group: list[_ReadingBatch | _Statement] = []
                item = await self._queue.get()
                rows = 0
                while item is not None:
                    group.append(item)
                    if isinstance(item, _ReadingBatch):
                        rows += len(item.rows)
                    if rows >= MAX_GROUP_ROWS or self._queue.empty():
                        break
                    item = self._queue.get_nowait()
                stopping = item is None
                if group:
                    await self._commit(conn, group)

    async def _commit(self, conn: AsyncConnection, group: list[_ReadingBatch | _Statement]) -> None:
        batches = [item for item in group if isinstance(item, _ReadingBatch)]
        statements = [item for item in group if isinstance(item, _Statement)]
        try:
            inserted = await self._write(conn, batches, statements)
        except Exception as exc:
            with contextlib.suppress(Exception):
                await conn.rollback()
            if not self._failing:
                log.error("database write failed: %s", exc)
                self._failing = True
                self._on_health(False)
            error = StorageError(f"database write failed: {exc}")
            for item in group:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        if self._failing:
            log.info("database writes succeed again")
            self._failing = False
            self._on_health(True)
        self.commits += 1
        for statement in statements:
            if not statement.future.done():
                statement.future.set_result(None)
        for batch, mask in zip(batches, inserted, strict=True):
            result = self._settle(batch, mask)
            self.totals += result
            if not batch.future.done():
                batch.future.set_result(result)

    def _settle(self, batch: _ReadingBatch, mask: list[bool] | None) -> BatchResult:
        rows = (
            batch.rows
            if mask is None
            else [r for r, new in zip(batch.rows, mask, strict=True) if new]
        )
        stale = self._on_committed([r[4] for r in rows], [r[3] for r in rows]) if rows else 0
        return BatchResult(stored=len(rows), duplicates=len(batch.rows) - len(rows), stale=stale)

    async def _write(
        self,
        conn: AsyncConnection,
        batches: list[_ReadingBatch],
        statements: list[_Statement],
    ) -> list[list[bool] | None]:
        """Commit one group; per batch, None (all new) or a mask of the new rows."""
        all_rows = [row for batch in batches for row in batch.rows]
        transaction = await conn.begin()
        try:
            for item in statements:
                await conn.execute(item.statement, item.params or None)
            if all_rows:
                result = await conn.exec_driver_sql(_INSERT_READINGS, all_rows)
                if result.rowcount != len(all_rows):
                    # Some readings were resends. Which ones matters (a duplicate
                    # must not count twice in a window): redo the group knowing them.
                    await transaction.rollback()
                    return await self._write_with_duplicates(conn, batches, statements, all_rows)
            await transaction.commit()
        except BaseException:
            if transaction.is_active:
                await transaction.rollback()
            raise
        return [None] * len(batches)

    async def _write_with_duplicates(
        self,
        conn: AsyncConnection,
        batches: list[_ReadingBatch],
        statements: list[_Statement],
        all_rows: list[ReadingRow],
    ) -> list[list[bool] | None]:
        async with conn.begin():
            for item in statements:
                await conn.execute(item.statement, item.params or None)
            seen = await _existing_keys(conn, all_rows)
            masks: list[list[bool] | None] = []
            new_rows: list[ReadingRow] = []
            for batch in batches:
                mask = []
                for row in batch.rows:
                    key = (row[0], row[1], row[2])
                    is_new = key not in seen
                    seen.add(key)
                    mask.append(is_new)
                    if is_new:
                        new_rows.append(row)
                masks.append(mask)
            if new_rows:
                await conn.exec_driver_sql(_INSERT_READINGS, new_rows)
        return masks


async def _existing_keys(
    conn: AsyncConnection, rows: Sequence[ReadingRow]
) -> set[tuple[str, str, int]]:
    """Keys among ``rows`` already stored, one range query per sensor run."""
    ranges: dict[tuple[str, str], tuple[int, int]] = {}
    for sensor_id, boot_id, seq, *_ in rows:
        low, high = ranges.get((sensor_id, boot_id), (seq, seq))
        ranges[(sensor_id, boot_id)] = (min(low, seq), max(high, seq))
    found: set[tuple[str, str, int]] = set()
    for (sensor_id, boot_id), (low, high) in ranges.items():
        result = await conn.exec_driver_sql(_EXISTING_SEQS, (sensor_id, boot_id, low, high))
        found.update((sensor_id, boot_id, int(seq)) for (seq,) in result.all())
    return found
