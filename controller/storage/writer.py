"""The single database writer: every write of the controller, group-committed.

This is the hot path, so it talks to the DBAPI connection under SQLAlchemy
directly, through a small backend per database (:mod:`controller.storage.write_backend`).
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

A group fails as a whole (every stream in it UNAVAILABLE, health
NOT_SERVING) only for an outage: a lock, a full disk, a lost connection, or
a SQLite file that is no longer the one at its path. When the database
refuses a value instead (a data error), the group is redone in savepoints
and only the stream or operation that brought the value fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import ChainMap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from controller.decision.rule import WindowStats
from controller.decision.windows import split_by_window
from controller.errors import CommitOutcomeUnknown, InvalidReading, RejectedWrite, StorageError
from controller.metrics import ControllerMetrics
from controller.records import (
    BOOT_ID,
    PAYLOAD,
    RECEIVED_AT,
    SENSOR_ID,
    SEQ,
    TIMESTAMP,
    BatchResult,
    ClosedWindows,
    CloseWindows,
    CommandRecord,
    ReadingRow,
    StreamTally,
)
from controller.sensor_runs import SensorRuns
from controller.storage.inserts import (
    CONFLICT,
    NEW,
    REFUSED,
    Conflict,
    insert_all,
    insert_longest_prefix,
    insert_new,
)
from controller.storage.notices import Notice, SensorNotices
from controller.storage.window_stats import (
    Reach,
    close_windows,
    group_reach,
    mark_rows,
    partial_rows,
)
from controller.storage.write_backend import (
    MARK_RETENTION_US,
    Acknowledge,
    BackendFactory,
    InsertCommand,
    Operation,
    PruneReadings,
    RunKey,
    WriteBackend,
)
from workcell.backoff import Backoff
from workcell.timeconv import US_PER_SECOND, to_iso

__all__ = ["Writer"]

log = logging.getLogger(__name__)

DEFAULT_PERIOD_US = 5_000_000
DEFAULT_MAX_PENDING = 50_000
# Readings are committed at most this often by default (--commit-interval).
# Each commit costs a write of the log, a few thread hops and the group's
# bookkeeping (about half a millisecond of CPU), while nobody waits on one
# reading's commit: a stream is answered at its end (a sensor's every second)
# and a window is decided once its readings are in. Scenario (a) of the
# benchmarks at 8 x 300 readings/s: the controller's CPU over the bare
# transport server's was 1.43 at 10 ms, 1.32 at 50 ms, 1.17 at 100 ms (one
# run each). 50 ms keeps a decision within 100 ms of its window's end.
# Commands, acknowledgements and window closes (operations) are committed at
# once: a decision and its command wait for them.
DEFAULT_COMMIT_INTERVAL = 0.05
# Past this many runs remembered (or twice what stayed the last time), the ones silent
# for MARK_RETENTION_US are forgotten.
MAX_REMEMBERED_MARKS = 1_000
# Asking the database whether a transaction whose COMMIT reply was lost committed.
RESOLVE_RETRY = Backoff(initial=0.05, maximum=2.0)


# What the writer is asked to do besides storing readings: the backend's
# operations, and the leader's window closes (controller.storage.window_stats).
Request = Operation | CloseWindows
# What one request gave: rows touched, a close's outcome, or why it was refused.
Outcome = int | ClosedWindows | RejectedWrite


@dataclass(slots=True)
class _Pending:
    request: Request
    future: asyncio.Future[int | ClosedWindows]


Segment = tuple[StreamTally, Sequence[ReadingRow]]


@dataclass(slots=True)
class _Written:
    """What one committed group did."""

    counts: list[Outcome]
    """Per request: what it did, or why the database refused it."""
    decided_until: int
    """Readings stamped before this are stale (as the group's transaction saw it)."""
    states: list[int] | None
    """Per reading of the group, in order (see :mod:`controller.storage.inserts`); None: all new."""
    new_runs: dict[RunKey, int]
    partials: dict[int, WindowStats] = field(default_factory=dict)
    """This node's window statistics the group wrote (by window start), once committed."""
    marks: dict[RunKey, Reach] = field(default_factory=dict)
    """This node's run_marks rows the group wrote, once committed."""
    stale: int = 0
    """How many of the group's new readings are stale."""
    conflicts: list[Conflict] = field(default_factory=list)
    rejections: list[tuple[StreamTally, InvalidReading]] = field(default_factory=list)


class Writer:
    """Owns the write connection and the task that commits buffered writes."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        backend: BackendFactory,
        period_us: int = DEFAULT_PERIOD_US,
        node: str | None = None,
        on_health: Callable[[bool], None] = lambda healthy: None,
        on_commands: Callable[[], None] = lambda: None,
        max_pending: int = DEFAULT_MAX_PENDING,
        commit_interval: float = DEFAULT_COMMIT_INTERVAL,
        metrics: ControllerMetrics | None = None,
    ) -> None:
        self._engine = engine
        # Chosen by whoever chose the database (Database.write_backend): the
        # writer is the same on every backend.
        self._backend = backend
        self._metrics = metrics if metrics is not None else ControllerMetrics()
        self._period_us = period_us
        self.node = node if node is not None else str(uuid.uuid4())
        """This node's name on its window_partials rows (one per process run)."""
        # This node's committed window statistics, by window start: only its
        # own writer writes its rows, so it writes their new totals.
        self._partials: dict[int, WindowStats] = {}
        # This node's run_marks rows as committed (controller.decision.watermarks).
        self._marks: dict[RunKey, Reach] = {}
        self._marks_limit = MAX_REMEMBERED_MARKS
        # Told False when a write fails and True when writes succeed again, so
        # the controller can report NOT_SERVING while the database is in trouble.
        self._on_health = on_health
        # Told after a group that recorded a command or an acknowledgement
        # committed (History/Watch's feed polls at once instead of later).
        self._on_commands = on_commands
        self.runs = SensorRuns(period_us)
        """What this node stored of each sensor run (Sensors/ListRuns), kept as groups settle."""
        self._max_pending = max_pending
        self._commit_interval = commit_interval
        self._segments: list[Segment] = []
        self._operations: list[_Pending] = []
        self._pending_rows = 0
        self._group: asyncio.Future[None] | None = None
        self._work = asyncio.Event()
        # Set with an operation (or the stop): the group commits without its pause.
        self._urgent = asyncio.Event()
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
        # Per sensor, rate-limited: how far behind its stale readings were
        # stamped (µs), and its conflicting resends.
        self._stale_notices: SensorNotices[int] = SensorNotices()
        self._conflict_notices: SensorNotices[Conflict] = SensorNotices()
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
        self._urgent.set()
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

    async def close_windows(self, close: CloseWindows) -> ClosedWindows:
        """Close windows as the leader (see :mod:`controller.storage.window_stats`);
        NotLeader when the database says this term is over."""
        outcome = await self._apply(close)
        assert isinstance(outcome, ClosedWindows)
        return outcome

    async def mark_acknowledged(self, command_id: int, at_us: int) -> None:
        """Record when the manipulator acknowledged a command (first ack wins)."""
        await self._apply(Acknowledge(command_id, at_us))

    async def prune_readings(self, before_us: int, limit: int) -> int:
        """Delete up to ``limit`` of the oldest readings created before ``before_us``.

        Returns how many were deleted, once committed. Small limits keep each
        group's transaction short, so ingest is never held up for long.
        """
        deleted = await self._apply(PruneReadings(before_us, limit))
        assert isinstance(deleted, int)
        return deleted

    async def _apply(self, request: Request) -> int | ClosedWindows:
        future: asyncio.Future[int | ClosedWindows] = asyncio.get_running_loop().create_future()
        self._operations.append(_Pending(request, future))
        self._urgent.set()
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
                pause = self._last_commit + self._commit_interval - loop.time()
                if pause > 0 and not self._urgent.is_set() and not self._stopping:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(pause):
                            await self._urgent.wait()
                self._urgent.clear()
                self._last_commit = loop.time()
                self._work.clear()
                segments, self._segments = self._segments, []
                operations, self._operations = self._operations, []
                group, self._group = self._group, None
                self._pending_rows = 0
                self._room.set()
                if segments and _closes(operations):
                    # Readings received before a close count in the windows it closes (a
                    # group's own readings are stale to a close in it): committed first. A
                    # sensor not heard from yet holds no window back, so its first readings
                    # of a window are counted only if they are in by the time it closes.
                    await self._commit(segments, [])
                    segments = []
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
                writes = self._backend(raw.driver_connection)
                await writes.opened(self.node)
                self._writes = writes
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

    def _set_failing(self) -> None:
        self._failing = True
        self._on_health(False)

    async def _commit(self, segments: list[Segment], operations: list[_Pending]) -> None:
        started = time.perf_counter()
        readings = sum(len(rows) for _, rows in segments)
        # Counted here, once per group, whether or not the group commits.
        self._metrics.readings_received.inc(readings)
        backend: WriteBackend | None = None
        try:
            backend = await self._open_writes()
            written = await self._write(backend, segments, operations)
        except Exception as exc:
            if backend is not None:
                with contextlib.suppress(Exception):
                    await backend.rollback()
                if backend.is_closed():
                    await self._disconnect(broken=True)
            self._metrics.commit_failures.inc()
            if not self._failing:
                log.error("database write failed: %s", exc)
                self._set_failing()
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
        if any(
            _touches_commands(pending.request, count)
            for pending, count in zip(operations, written.counts, strict=True)
        ):
            self._on_commands()
        for pending, count in zip(operations, written.counts, strict=True):
            if pending.future.done():
                continue
            if isinstance(count, RejectedWrite):
                pending.future.set_exception(count)
            else:
                pending.future.set_result(count)
        for tally, rejection in written.rejections:
            tally.rejected = rejection
        if written.rejections:
            # Readings of a rejected stream already waiting for the next
            # group are not stored either: nothing after the refused one is.
            kept = [s for s in self._segments if s[0].rejected is None]
            self._pending_rows -= sum(len(rows) for _, rows in self._segments) - sum(
                len(rows) for _, rows in kept
            )
            self._segments = kept
        self._partials.update(written.partials)
        for start in [s for s in self._partials if s < written.decided_until]:
            del self._partials[start]  # closed: the leader summed and deleted its rows
        if written.marks:
            self._remember_marks(written.marks)
        self._settle(segments, written)
        self._tell(written.conflicts)

    def _remember_marks(self, marks: dict[RunKey, Reach]) -> None:
        self._marks.update(marks)
        if len(self._marks) > self._marks_limit:
            # Runs long silent: the leader deletes their rows; a run that comes back
            # has its row written again at once.
            newest = max(heard for _, heard in self._marks.values())
            self._marks = {
                key: mark
                for key, mark in self._marks.items()
                if mark[1] >= newest - MARK_RETENTION_US
            }
            # Twice what stays, so a minute of many runs (a new run a stream) costs a
            # pass over the map now and then, not at every group.
            self._marks_limit = max(MAX_REMEMBERED_MARKS, 2 * len(self._marks))

    def _settle(self, segments: list[Segment], written: _Written) -> None:
        """Count the committed readings into their streams' tallies (and the stale ones)."""
        states = written.states
        decided_until = written.decided_until
        if states is None:
            news = [rows for _, rows in segments]
            refused = conflicts = [0] * len(segments)
        else:
            news, refused, conflicts = [], [], []
            position = 0
            for _, rows in segments:
                mine = states[position : position + len(rows)]
                position += len(rows)
                news.append([row for row, state in zip(rows, mine, strict=True) if state == NEW])
                self.runs.add_duplicates(
                    row
                    for row, state in zip(rows, mine, strict=True)
                    if state not in (NEW, REFUSED)
                )
                refused.append(mine.count(REFUSED))
                conflicts.append(mine.count(CONFLICT))
        new_rows = [row for new in news for row in new]
        # Per-run tallies (Sensors/ListRuns): one pass over the group's new readings.
        self.runs.add_stored(new_rows)
        # Per-stream stale counts are only worked out in the rare group that
        # has stale readings at all.
        stale = written.stale
        received = 0
        # sensor_id -> (stale readings, the newest of them)
        late: dict[str, tuple[int, ReadingRow]] = {}
        runs = self.runs
        for (tally, rows), new, not_taken, clashes in zip(
            segments, news, refused, conflicts, strict=True
        ):
            taken = len(rows) - not_taken
            received += taken
            tally.stored += len(new)
            tally.duplicates += taken - len(new)
            tally.conflicts += clashes
            if stale:
                stale_rows = [row for row in new if row[TIMESTAMP] < decided_until]
                tally.stale += len(stale_rows)
                runs.add_stale(stale_rows)
                for row in stale_rows:
                    count, newest = late.get(row[SENSOR_ID], (0, row))
                    later = row[TIMESTAMP] > newest[TIMESTAMP]
                    late[row[SENSOR_ID]] = (count + 1, row if later else newest)
        conflicted = sum(conflicts)
        self.totals += BatchResult(len(new_rows), received - len(new_rows), stale, conflicted)
        # Group totals, not per reading: this runs once per commit.
        metrics = self._metrics
        metrics.readings_stored.inc(len(new_rows))
        metrics.readings_duplicate.inc(received - len(new_rows))
        metrics.readings_stale.inc(stale)
        metrics.readings_conflict.inc(conflicted)
        now = time.monotonic()
        for sensor_id, (count, newest) in late.items():
            # How far behind its clock (or its delivery) is: the newest stale
            # reading's time against when the controller received it.
            notice = self._stale_notices.add(
                sensor_id, count, newest[RECEIVED_AT] - newest[TIMESTAMP], now=now
            )
            if notice is not None:
                _log_stale(notice)

    def _tell(self, conflicts: list[Conflict]) -> None:
        """Log the conflicts of a group per sensor, and the counts now due (rate-limited)."""
        now = time.monotonic()
        if conflicts:
            per_sensor: dict[str, tuple[int, Conflict]] = {}
            for conflict in conflicts:
                sensor_id = conflict.reading[SENSOR_ID]
                count, example = per_sensor.get(sensor_id, (0, conflict))
                per_sensor[sensor_id] = (count + 1, example)
            for sensor_id, (count, example) in per_sensor.items():
                notice = self._conflict_notices.add(sensor_id, count, example, now=now)
                if notice is not None:
                    _log_conflicts(notice)
        for stale_notice in self._stale_notices.due(now=now):
            _log_stale(stale_notice)
        for conflict_notice in self._conflict_notices.due(now=now):
            _log_conflicts(conflict_notice)

    async def _write(
        self, backend: WriteBackend, segments: list[Segment], operations: list[_Pending]
    ) -> _Written:
        """Commit one group; a value the database refuses fails only its own
        stream or operation (see :meth:`_write_apart`)."""
        try:
            try:
                written = await self._write_together(backend, segments, operations)
            except Exception as exc:
                if not backend.is_data_error(exc):
                    raise
                # The whole transaction is lost to one value: find whose it
                # is and commit everything else without it.
                await backend.rollback()
                written = await self._write_apart(backend, segments, operations)
            # Before the commit, so a group is not written into a deleted or
            # replaced file at all; after it, because the file may go in
            # between: only then is the group durable, and reported so.
            backend.check_file()
            try:
                await backend.commit()
            except CommitOutcomeUnknown as unknown:
                # Never retried blindly: a committed group redone would count
                # its readings as duplicates, and its command as a clash.
                await self._disconnect(broken=True)
                if not await self._resolve(unknown):
                    raise
            else:
                backend.check_file()
        except BaseException:
            with contextlib.suppress(Exception):
                await backend.rollback()
            raise
        # Only now: a run id from a rolled-back transaction would name nothing.
        self._run_ids.update(written.new_runs)
        return written

    async def _resolve(self, unknown: CommitOutcomeUnknown) -> bool:
        """Whether the transaction whose COMMIT reply was lost committed, asked of
        the database on a connection of its own until it can say."""
        told = False
        for delay in RESOLVE_RETRY.delays():
            try:
                async with self._engine.connect() as connection:
                    raw = await connection.get_raw_connection()
                    backend = self._backend(raw.driver_connection)
                    committed = await backend.committed(self.node, unknown.mark)
            except Exception as exc:
                if self._stopping:
                    log.error(
                        "stopping with the outcome of commit group %d unknown (%s): its "
                        "writes are reported failed and resent",
                        unknown.mark,
                        exc,
                    )
                    return False
                if not told:
                    log.error(
                        "%s; asking the database what became of commit group %d (%s)",
                        unknown,
                        unknown.mark,
                        exc,
                    )
                    told = True
                    if not self._failing:
                        self._set_failing()
                await asyncio.sleep(delay)
                continue
            log.warning(
                "%s; the database says commit group %d %s",
                unknown,
                unknown.mark,
                "committed" if committed else "did not commit",
            )
            return committed
        raise AssertionError("unreachable: the delays never end")

    async def _begin(self, backend: WriteBackend, operations: list[_Pending]) -> int:
        """Start the group's transaction, locking ``decided_until`` first (shared, or
        exclusive when the group closes a window) so that no two nodes' groups wait on
        each other in opposite orders; its value."""
        await backend.begin()
        return await backend.lock_decisions(exclusive=_closes(operations))

    async def _run_request(self, backend: WriteBackend, request: Request) -> int | ClosedWindows:
        if isinstance(request, CloseWindows):
            return await close_windows(backend, request)
        return await backend.apply(request)

    async def _count_windows(
        self,
        backend: WriteBackend,
        written: _Written,
        new_rows: Sequence[ReadingRow],
        segments: Sequence[tuple[object, Sequence[ReadingRow]]],
    ) -> _Written:
        """Add the group's new readings to this node's window statistics, and how far its
        runs reach to their marks, in its transaction."""
        closed = [c for c in written.counts if isinstance(c, ClosedWindows)]
        if closed:  # a close in this very group: its readings of that window are stale
            written.decided_until = await backend.lock_decisions(exclusive=True)
        fresh, written.stale = split_by_window(
            [r[TIMESTAMP] for r in new_rows],
            [r[PAYLOAD] for r in new_rows],
            self._period_us,
            written.decided_until,
        )
        if fresh:
            rows, written.partials = partial_rows(self.node, self._partials, fresh)
            await backend.store_partials(rows)
        reach = group_reach(segments, written.states)
        if reach:
            run_ids = ChainMap(written.new_runs, self._run_ids)
            marks, written.marks = mark_rows(
                self.node, run_ids, self._marks, reach, self._period_us
            )
            if marks:
                await backend.store_marks(marks)
        return written

    async def _write_together(
        self, backend: WriteBackend, segments: list[Segment], operations: list[_Pending]
    ) -> _Written:
        """The group in one go (the transaction is left open for the commit)."""
        decided_until = await self._begin(backend, operations)
        counts: list[Outcome] = [
            await self._run_request(backend, pending.request) for pending in operations
        ]
        total, inserted, new_runs = await insert_all(backend, segments, self._run_ids)
        if inserted == total:
            written = _Written(counts, decided_until, None, new_runs)
            return await self._count_windows(
                backend, written, [r for _, rows in segments for r in rows], segments
            )
        # Some readings were resends. Which ones matters (a duplicate must
        # not count twice in a window, a conflicting one is told): redo the
        # group knowing them.
        await backend.rollback()
        decided_until = await self._begin(backend, operations)
        counts = [await self._run_request(backend, pending.request) for pending in operations]
        flat = [r for _, rows in segments for r in rows]
        done = await insert_new(backend, flat, self._run_ids)
        written = _Written(
            counts, decided_until, done.states, done.new_runs, conflicts=done.conflicts
        )
        return await self._count_windows(backend, written, _new_rows(flat, done.states), segments)

    async def _write_apart(
        self, backend: WriteBackend, segments: list[Segment], operations: list[_Pending]
    ) -> _Written:
        """The group again, each part in a savepoint, without what the database refuses.

        Each operation on its own; the readings as long a run as the database
        takes (:func:`~controller.storage.inserts.insert_longest_prefix`). The reading
        it stops at rejects its stream: that reading and the stream's later
        ones are left out, the rest goes on. An outage at any point fails the
        whole group, as ever: only a data error is pinned on one stream.
        """
        decided_until = await self._begin(backend, operations)
        counts: list[Outcome] = []
        for pending in operations:
            try:
                async with backend.savepoint():
                    counts.append(await self._run_request(backend, pending.request))
            except Exception as exc:
                if not backend.is_data_error(exc):
                    raise
                if isinstance(exc, RejectedWrite):
                    # Ours (a conflict, a term that is over): its own words.
                    log.warning("%s", exc)
                    counts.append(exc)
                    continue
                log.error("the database refused %s: %s", _describe(pending.request), exc)
                counts.append(
                    RejectedWrite(f"the database refused {_describe(pending.request)}: {exc}")
                )
        flat = [(tally, row) for tally, rows in segments for row in rows]
        states = [REFUSED] * len(flat)
        written = _Written(counts, decided_until, states, {})
        runs = dict(self._run_ids)
        # Positions in ``flat`` still to insert, in order.
        todo = list(range(len(flat)))
        while todo:
            done, error = await insert_longest_prefix(backend, [flat[i][1] for i in todo], runs)
            for position, state in zip(todo, done.states, strict=False):
                states[position] = state
            runs.update(done.new_runs)
            written.new_runs.update(done.new_runs)
            written.conflicts += done.conflicts
            if error is None:
                break
            culprit = todo[len(done.states)]
            tally, row = flat[culprit]
            written.rejections.append((tally, _refused_reading(row, error)))
            todo = [i for i in todo[len(done.states) + 1 :] if flat[i][0] is not tally]
        return await self._count_windows(
            backend, written, _new_rows([r for _, r in flat], states), segments
        )


def _closes(operations: Sequence[_Pending]) -> bool:
    """Whether a group's operations close windows (the leader's, once a period)."""
    return any(isinstance(pending.request, CloseWindows) for pending in operations)


def _touches_commands(request: Request, outcome: Outcome) -> bool:
    """Whether a committed request recorded a command or an acknowledgement."""
    if isinstance(request, InsertCommand):
        return True
    if isinstance(request, Acknowledge):
        return outcome == 1
    return isinstance(outcome, ClosedWindows) and outcome.record is not None


def _new_rows(rows: Sequence[ReadingRow], states: Sequence[int]) -> list[ReadingRow]:
    """The rows inserted by this group (not resends, not refused)."""
    return [row for row, state in zip(rows, states, strict=True) if state == NEW]


def _log_stale(notice: Notice[int]) -> None:
    lag = notice.detail / US_PER_SECOND
    if notice.first:
        log.warning(
            "sensor %r: %d readings arrived after their window was decided (stale: stored, "
            "counted in no decision); the newest was stamped %.3f s before the controller "
            "received it: is the sensor's clock behind, or its delivery late?",
            notice.sensor_id,
            notice.count,
            lag,
            extra={"sensor_id": notice.sensor_id, "stale": notice.count, "lag_seconds": lag},
        )
    else:
        log.warning(
            "sensor %r: %d more stale readings in the last %.0f s; the newest was stamped "
            "%.3f s before it was received",
            notice.sensor_id,
            notice.count,
            notice.seconds,
            lag,
            extra={"sensor_id": notice.sensor_id, "stale": notice.count, "lag_seconds": lag},
        )


def _log_conflicts(notice: Notice[Conflict]) -> None:
    example = _describe_conflict(notice.detail)
    if notice.first:
        log.warning(
            "sensor %r: %d conflicting readings: already stored under the same boot_id and "
            "seq with another payload or timestamp (the first is kept, these are not "
            "stored), e.g. %s. Do two processes send as this sensor with one boot_id?",
            notice.sensor_id,
            notice.count,
            example,
            extra={"sensor_id": notice.sensor_id, "conflicts": notice.count},
        )
    else:
        log.warning(
            "sensor %r: %d more conflicting readings in the last %.0f s, e.g. %s",
            notice.sensor_id,
            notice.count,
            notice.seconds,
            example,
            extra={"sensor_id": notice.sensor_id, "conflicts": notice.count},
        )


def _describe_conflict(conflict: Conflict) -> str:
    reading = conflict.reading
    return (
        f"boot_id {reading[BOOT_ID]!r} seq {reading[SEQ]}: stored payload "
        f"{conflict.stored_payload} at {_when(conflict.stored_timestamp_us)}, received payload "
        f"{reading[PAYLOAD]} at {_when(reading[TIMESTAMP])}"
    )


def _when(timestamp_us: int) -> str:
    try:
        return to_iso(timestamp_us)
    except (ValueError, OverflowError, OSError):  # beyond what datetime can show
        return f"{timestamp_us} µs"


def _refused_reading(row: ReadingRow, error: BaseException) -> InvalidReading:
    sensor_id, boot_id, seq, payload, timestamp, _ = row
    return InvalidReading(
        f"the database refused reading seq {seq} of sensor {sensor_id!r} "
        f"(boot_id {boot_id!r}, payload {payload}, timestamp {timestamp} µs): {error}",
        field="reading",
        sensor_id=sensor_id,
        # Named, so the sensor drops this one reading and delivers the rest.
        seq=seq,
    )


def _describe(request: Request) -> str:
    match request:
        case InsertCommand(record):
            return f"command {record.id}"
        case Acknowledge(command_id, _):
            return f"the acknowledgement of command {command_id}"
        case PruneReadings(before_us, _):
            return f"pruning the readings before {before_us} µs"
        case CloseWindows(epoch, until_us):
            return f"closing the windows before {until_us} µs (epoch {epoch})"
