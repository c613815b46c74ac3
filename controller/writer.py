"""The single database writer: every write of the controller, group-committed.

Ingest appends each message's readings to one shared buffer, tagged with the
:class:`StreamTally` of the stream they came on; the writer task commits
whatever accumulated while its previous commit ran, in one transaction, then
fills in the tallies and resolves one future per group. Per message that is a
list append: no future, no queue item, no task. Commands and
acknowledgements join the same groups, so SQLite only ever sees one writer.

The buffer is bounded: when the database falls behind, ``add_readings``
waits, the gRPC stream stops reading, and HTTP/2 flow control slows the
senders down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from controller.errors import StorageError
from controller.records import BatchResult, CommandRecord, ReadingRow
from controller.schema import commands
from controller.store import command_values

__all__ = ["CommittedListener", "StreamTally", "Writer"]

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
DEFAULT_MAX_PENDING = 50_000


class StreamTally:
    """What became of one stream's readings, filled in as its groups commit."""

    __slots__ = ("duplicates", "failure", "stale", "stored")

    def __init__(self) -> None:
        self.stored = 0
        self.duplicates = 0
        self.stale = 0
        # Set when a group holding some of this stream's readings failed:
        # then the stream must not be acknowledged.
        self.failure: StorageError | None = None

    def result(self) -> BatchResult:
        return BatchResult(self.stored, self.duplicates, self.stale)


@dataclass(slots=True)
class _Statement:
    statement: Any
    params: list[dict[str, Any]]
    future: asyncio.Future[None]


Segment = tuple[StreamTally, Sequence[ReadingRow]]


class Writer:
    """Owns the write connection and the task that commits buffered writes."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        on_committed: CommittedListener,
        on_health: Callable[[bool], None] = lambda healthy: None,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self._engine = engine
        self._on_committed = on_committed
        # Told False when a write fails and True when writes succeed again, so
        # the controller can report NOT_SERVING while the database is in trouble.
        self._on_health = on_health
        self._max_pending = max_pending
        self._segments: list[Segment] = []
        self._statements: list[_Statement] = []
        self._pending_rows = 0
        self._group: asyncio.Future[None] | None = None
        self._work = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self.totals = BatchResult()
        self.commits = 0

    async def start(self) -> None:
        """Start the writer task."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="db-writer")
            self._task.add_done_callback(self._stopped)

    def _stopped(self, task: asyncio.Task[None]) -> None:
        # Everything waits on this task: if it ever dies, say so loudly and
        # report NOT_SERVING instead of silently accepting nothing.
        if not task.cancelled() and task.exception() is not None:
            log.critical("database writer died", exc_info=task.exception())
            self._on_health(False)

    async def close(self) -> None:
        """Commit everything buffered so far, then stop (idempotent)."""
        if self._task is None:
            return
        self._stopping = True
        self._work.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def add_readings(
        self, tally: StreamTally, rows: Sequence[ReadingRow]
    ) -> asyncio.Future[None]:
        """Buffer ``rows`` of the stream counted by ``tally``.

        Returns the future of the group they joined: it resolves (never with
        an error; see ``tally.failure``) once that group is committed, and
        groups commit in order. Waits while the buffer is full.
        """
        while self._pending_rows >= self._max_pending:
            self._room.clear()
            await self._room.wait()
        self._segments.append((tally, rows))
        self._pending_rows += len(rows)
        self._work.set()
        return self._current_group()

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
        self._statements.append(_Statement(statement, params, future))
        self._work.set()
        await future

    def _current_group(self) -> asyncio.Future[None]:
        if self._group is None:
            self._group = asyncio.get_running_loop().create_future()
        return self._group

    async def _run(self) -> None:
        async with self._engine.connect() as conn:
            while True:
                await self._work.wait()
                self._work.clear()
                segments, self._segments = self._segments, []
                statements, self._statements = self._statements, []
                group, self._group = self._group, None
                self._pending_rows = 0
                self._room.set()
                if segments or statements:
                    await self._commit(conn, segments, statements)
                if group is not None and not group.done():
                    group.set_result(None)
                if self._stopping and not self._segments and not self._statements:
                    return

    async def _commit(
        self, conn: AsyncConnection, segments: list[Segment], statements: list[_Statement]
    ) -> None:
        try:
            masks = await self._write(conn, segments, statements)
        except Exception as exc:
            with contextlib.suppress(Exception):
                await conn.rollback()
            if not self._failing:
                log.error("database write failed: %s", exc)
                self._failing = True
                self._on_health(False)
            error = StorageError(f"database write failed: {exc}")
            for tally, _ in segments:
                tally.failure = error
            for statement in statements:
                if not statement.future.done():
                    statement.future.set_exception(error)
            return
        if self._failing:
            log.info("database writes succeed again")
            self._failing = False
            self._on_health(True)
        self.commits += 1
        for statement in statements:
            if not statement.future.done():
                statement.future.set_result(None)
        stored = duplicates = stale = 0
        for (tally, rows), mask in zip(segments, masks, strict=True):
            new = (
                rows
                if mask is None
                else [r for r, is_new in zip(rows, mask, strict=True) if is_new]
            )
            late = self._on_committed([r[4] for r in new], [r[3] for r in new]) if new else 0
            tally.stored += len(new)
            tally.duplicates += len(rows) - len(new)
            tally.stale += late
            stored += len(new)
            duplicates += len(rows) - len(new)
            stale += late
        self.totals += BatchResult(stored, duplicates, stale)

    async def _write(
        self, conn: AsyncConnection, segments: list[Segment], statements: list[_Statement]
    ) -> list[list[bool] | None]:
        """Commit one group; per segment, None (all new) or a mask of the new rows."""
        all_rows = [row for _, rows in segments for row in rows]
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
                    return await self._write_with_duplicates(conn, segments, statements, all_rows)
            await transaction.commit()
        except BaseException:
            if transaction.is_active:
                await transaction.rollback()
            raise
        return [None] * len(segments)

    async def _write_with_duplicates(
        self,
        conn: AsyncConnection,
        segments: list[Segment],
        statements: list[_Statement],
        all_rows: list[ReadingRow],
    ) -> list[list[bool] | None]:
        async with conn.begin():
            for item in statements:
                await conn.execute(item.statement, item.params or None)
            seen = await _existing_keys(conn, all_rows)
            masks: list[list[bool] | None] = []
            new_rows: list[ReadingRow] = []
            for _, rows in segments:
                mask = []
                for row in rows:
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
