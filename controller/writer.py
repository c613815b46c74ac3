"""The single database writer: every write of the controller, group-committed.

This is the hot path, so it talks to the DBAPI connection under SQLAlchemy
directly, through a small backend per database (:mod:`controller.writes`).
Reads stay on SQLAlchemy.

Ingest appends each message's readings to one shared buffer, tagged with the
:class:`StreamTally` of the stream they came on; the writer task commits
whatever accumulated while its previous commit ran, in one transaction, then
fills in the tallies and resolves one future per group. Per message that is a
list append: no future, no queue item, no task. Commands, acknowledgements
and retention's deletes join the same groups, so SQLite only ever sees one
writer.

The buffer is bounded: when the database falls behind, ``add_readings``
waits, the gRPC stream stops reading, and HTTP/2 flow control slows the
senders down.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from controller.errors import StorageError
from controller.metrics import ControllerMetrics
from controller.records import BatchResult, CommandRecord, ReadingRow
from controller.writes import (
    Acknowledge,
    InsertCommand,
    Operation,
    PruneReadings,
    RunKey,
    StoredReading,
    WriteBackend,
    backend_for,
)

__all__ = ["StreamTally", "WindowSink", "Writer"]

log = logging.getLogger(__name__)


class WindowSink(Protocol):
    """Counts newly stored readings into their windows (the WindowBook).

    Called in the event loop right after each commit, so "stale" means: its
    window was already decided when the reading became durable.
    """

    def add_batch(self, timestamps_us: Sequence[int], payloads: Sequence[int]) -> int:
        """Count the readings; return how many were stale (not counted)."""
        ...

    def is_stale(self, timestamp_us: int) -> bool:
        """Whether a reading of that time would not be counted now."""
        ...


DEFAULT_MAX_PENDING = 50_000
# Commits come at most this often: each one costs an fsync and a few thread
# hops, so at a trickle of readings they are batched a little longer instead
# of committing every message on its own. Under load a commit takes longer
# than this anyway. A response waits for its commit, so this is also the
# most latency the writer adds.
MIN_COMMIT_INTERVAL = 0.01


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
class _Pending:
    operation: Operation
    future: asyncio.Future[int]


Segment = tuple[StreamTally, Sequence[ReadingRow]]


class Writer:
    """Owns the write connection and the task that commits buffered writes."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        windows: WindowSink,
        on_health: Callable[[bool], None] = lambda healthy: None,
        max_pending: int = DEFAULT_MAX_PENDING,
        metrics: ControllerMetrics | None = None,
    ) -> None:
        self._engine = engine
        self._metrics = metrics if metrics is not None else ControllerMetrics()
        self._windows = windows
        # Told False when a write fails and True when writes succeed again, so
        # the controller can report NOT_SERVING while the database is in trouble.
        self._on_health = on_health
        self._max_pending = max_pending
        self._segments: list[Segment] = []
        self._operations: list[_Pending] = []
        self._pending_rows = 0
        self._group: asyncio.Future[None] | None = None
        self._work = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        # The write connection, opened on the first commit and again after a
        # server restart broke it (PostgreSQL).
        self._connection: AsyncConnection | None = None
        self._writes: WriteBackend | None = None
        # Sensor run ids by (sensor_id, boot_id): committed, so valid for good.
        self._run_ids: dict[RunKey, int] = {}
        self._failing = False
        self._last_commit = 0.0
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
        await self._apply(InsertCommand(record))

    async def mark_acknowledged(self, command_id: int, at_us: int) -> None:
        """Record when the manipulator acknowledged a command (first ack wins)."""
        await self._apply(Acknowledge(command_id, at_us))

    async def prune_readings(self, before_us: int, limit: int) -> int:
        """Delete up to ``limit`` of the oldest readings created before ``before_us``.

        Returns how many were deleted, once committed. Small limits keep each
        group's transaction short, so ingest is never held up for long.
        """
        return await self._apply(PruneReadings(before_us, limit))

    async def _apply(self, operation: Operation) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._operations.append(_Pending(operation, future))
        self._work.set()
        return await future

    def _current_group(self) -> asyncio.Future[None]:
        if self._group is None:
            self._group = asyncio.get_running_loop().create_future()
        return self._group

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._work.wait()
                pause = self._last_commit + MIN_COMMIT_INTERVAL - loop.time()
                if pause > 0 and not self._stopping:
                    await asyncio.sleep(pause)
                self._last_commit = loop.time()
                self._work.clear()
                segments, self._segments = self._segments, []
                operations, self._operations = self._operations, []
                group, self._group = self._group, None
                self._pending_rows = 0
                self._room.set()
                if segments or operations:
                    await self._commit(segments, operations)
                if group is not None and not group.done():
                    group.set_result(None)
                if self._stopping and not self._segments and not self._operations:
                    return
        finally:
            await self._disconnect()

    async def _open_writes(self) -> WriteBackend:
        """The write connection's backend, connecting first if there is none."""
        if self._writes is None:
            connection = await self._engine.connect()
            try:
                raw = await connection.get_raw_connection()
                self._writes = backend_for(raw.driver_connection)
            except BaseException:
                await connection.close()
                raise
            self._connection = connection
        return self._writes

    async def _disconnect(self, *, broken: bool = False) -> None:
        connection, self._connection, self._writes = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                if broken:
                    # Not back into the pool: a server restart killed it.
                    await connection.invalidate()
                await connection.close()

    async def _commit(self, segments: list[Segment], operations: list[_Pending]) -> None:
        started = time.perf_counter()
        readings = sum(len(rows) for _, rows in segments)
        # Counted here, once per group, whether or not the group commits.
        self._metrics.readings_received.inc(readings)
        backend: WriteBackend | None = None
        try:
            backend = await self._open_writes()
            counts, masks = await self._write(backend, segments, operations)
        except Exception as exc:
            if backend is not None:
                with contextlib.suppress(Exception):
                    await backend.rollback()
                if backend.is_closed():
                    await self._disconnect(broken=True)
            if not self._failing:
                log.error("database write failed: %s", exc)
                self._failing = True
                self._on_health(False)
            error = StorageError(f"database write failed: {exc}")
            for tally, _ in segments:
                tally.failure = error
            for pending in operations:
                if not pending.future.done():
                    pending.future.set_exception(error)
            return
        if self._failing:
            log.info("database writes succeed again")
            self._failing = False
            self._on_health(True)
        self.commits += 1
        metrics = self._metrics
        metrics.commit_latency.observe(time.perf_counter() - started)
        metrics.commit_batch_size.observe(readings)
        for pending, count in zip(operations, counts, strict=True):
            if not pending.future.done():
                pending.future.set_result(count)
        self._settle(segments, masks)

    def _settle(self, segments: list[Segment], masks: list[list[bool]] | None) -> None:
        """Count the committed readings into their windows and their streams' tallies."""
        if masks is None:
            news = [rows for _, rows in segments]
        else:
            news = [
                [row for row, is_new in zip(rows, mask, strict=True) if is_new]
                for (_, rows), mask in zip(segments, masks, strict=True)
            ]
        new_rows = [row for new in news for row in new]
        # One call for the whole group: per-stream stale counts are only
        # worked out in the rare group that has stale readings at all.
        stale = self._windows.add_batch([r[4] for r in new_rows], [r[3] for r in new_rows])
        received = 0
        for (tally, rows), new in zip(segments, news, strict=True):
            received += len(rows)
            tally.stored += len(new)
            tally.duplicates += len(rows) - len(new)
            if stale:
                tally.stale += sum(1 for row in new if self._windows.is_stale(row[4]))
        self.totals += BatchResult(len(new_rows), received - len(new_rows), stale)
        # Group totals, not per reading: this runs once per commit.
        metrics = self._metrics
        metrics.readings_stored.inc(len(new_rows))
        metrics.readings_duplicate.inc(received - len(new_rows))
        metrics.readings_stale.inc(stale)

    async def _write(
        self, backend: WriteBackend, segments: list[Segment], operations: list[_Pending]
    ) -> tuple[list[int], list[list[bool]] | None]:
        """Commit one group: the operations' row counts, and None if every
        reading was new, else a mask of the new ones per segment."""
        try:
            await backend.begin()
            counts = [await backend.apply(pending.operation) for pending in operations]
            stored, new_runs = await self._stored_readings(backend, segments)
            masks = None
            if stored and await backend.insert_readings(stored) != len(stored):
                # Some readings were resends. Which ones matters (a duplicate
                # must not count twice in a window): redo the group knowing them.
                await backend.rollback()
                await backend.begin()
                counts = [await backend.apply(pending.operation) for pending in operations]
                stored, new_runs = await self._stored_readings(backend, segments)
                masks = await _insert_new(backend, segments, stored)
            await backend.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                await backend.rollback()
            raise
        # Only now: a run id from a rolled-back transaction would name nothing.
        self._run_ids.update(new_runs)
        return counts, masks

    async def _stored_readings(
        self, backend: WriteBackend, segments: list[Segment]
    ) -> tuple[list[StoredReading], dict[RunKey, int]]:
        """The group's readings as rows of the readings table (run ids for
        names), and the runs this transaction registered."""
        runs = self._run_ids
        try:
            rows = [(runs[r[0], r[1]], r[2], r[3], r[4], r[5]) for _, rs in segments for r in rs]
            return rows, {}
        except KeyError:
            # A sensor run seen for the first time (a sensor started): once per run.
            keys = {(r[0], r[1]) for _, rows in segments for r in rows} - runs.keys()
            new = await backend.register_runs(sorted(keys))
            both = runs | new
            rows = [(both[r[0], r[1]], r[2], r[3], r[4], r[5]) for _, rs in segments for r in rs]
            return rows, new


async def _insert_new(
    backend: WriteBackend, segments: list[Segment], stored: list[StoredReading]
) -> list[list[bool]]:
    """Insert the readings not stored yet; return which ones they were, per segment."""
    # One index range per run rather than one lookup per reading.
    ranges: dict[int, tuple[int, int]] = {}
    for run_id, seq, *_ in stored:
        low, high = ranges.get(run_id, (seq, seq))
        ranges[run_id] = (min(low, seq), max(high, seq))
    seen: set[tuple[int, int]] = set()
    for run_id, (low, high) in ranges.items():
        seen.update((run_id, seq) for seq in await backend.stored_seqs(run_id, low, high))
    masks: list[list[bool]] = []
    new_rows: list[StoredReading] = []
    rows = iter(stored)
    for _, segment in segments:
        mask = []
        for row in itertools.islice(rows, len(segment)):
            key = (row[0], row[1])
            is_new = key not in seen
            seen.add(key)
            mask.append(is_new)
            if is_new:
                new_rows.append(row)
        masks.append(mask)
    if new_rows:
        await backend.insert_readings(new_rows)
    return masks
