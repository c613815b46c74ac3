"""What the writer asks of a database backend, one transaction at a time.

The writer (:mod:`controller.storage.writer`) owns grouping, duplicates, windows and
futures; a backend only runs these primitive statements on its own
connection, in its own dialect: :mod:`controller.storage.sqlite` and
:mod:`controller.storage.postgres`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from controller.errors import CommandConflict
from controller.records import CommandRecord
from controller.storage.rows import command_values

__all__ = [
    "MARK_RETENTION_US",
    "Acknowledge",
    "BackendFactory",
    "InsertCommand",
    "MarkRow",
    "Operation",
    "PartialRow",
    "PartialSums",
    "PruneReadings",
    "RunKey",
    "StoredReading",
    "StoredValues",
    "WriteBackend",
    "command_conflict",
]

# Makes the backend for a new write connection from its DBAPI driver
# connection; chosen by whoever chose the database (Database.open).
BackendFactory = Callable[[Any], "WriteBackend"]
# (sensor_id, boot_id): one run of a sensor process, a row of sensor_runs.
RunKey = tuple[str, str]
# A readings row as inserted: (run_id, seq, payload, timestamp_us, received_at_us).
StoredReading = tuple[int, int, int, int, int]
# What a resend is compared with: (seq, payload, timestamp_us) as stored.
StoredValues = tuple[int, int, int]
# A window_partials row: (window_start, node, count, total, total_sq), sums as decimal text.
PartialRow = tuple[int, str, int, str, str]
# A window's partial sums as read back: (count, total, total_sq).
PartialSums = tuple[int, str, str]
# A run_marks row: (run_id, node, reached_us, heard_us).
MarkRow = tuple[int, str, int, int]
# A run silent this long has its run_marks rows deleted by the next close: it holds
# no window back any more (controller.decision.watermarks), and the table stays small.
MARK_RETENTION_US = 60_000_000


@dataclass(frozen=True, slots=True)
class InsertCommand:
    """Insert a command and its decision record."""

    record: CommandRecord


@dataclass(frozen=True, slots=True)
class Acknowledge:
    """Record the manipulator's acknowledgement of a command (the first one wins)."""

    command_id: int
    at_us: int


@dataclass(frozen=True, slots=True)
class PruneReadings:
    """Delete up to ``limit`` of the oldest readings created before ``before_us``."""

    before_us: int
    limit: int


Operation = InsertCommand | Acknowledge | PruneReadings


class WriteBackend(Protocol):
    """One write connection; every method between ``begin`` and ``commit`` or
    ``rollback`` runs in that transaction."""

    async def opened(self, node: str) -> None:
        """Called once, right after the connection is opened (before any other method),
        with the name of the writer (see ``commit_marks``)."""
        ...

    async def register_runs(self, runs: Sequence[RunKey]) -> dict[RunKey, int]:
        """The ids of these sensor runs, adding the ones not stored yet."""
        ...

    async def begin(self) -> None:
        """Start a transaction that holds the write lock (or waits for it)."""
        ...

    async def apply(self, operation: Operation) -> int:
        """Run one operation; return the number of rows it touched."""
        ...

    async def insert_readings(self, rows: Sequence[StoredReading]) -> int:
        """Insert readings, skipping ones already stored; return how many were inserted."""
        ...

    async def stored_readings(self, run_id: int, low: int, high: int) -> list[StoredValues]:
        """(seq, payload, timestamp) of the readings of run ``run_id`` stored with
        seqs from ``low`` to ``high`` (inclusive)."""
        ...

    async def lock_decisions(self, *, exclusive: bool) -> int:
        """``decided_until``, locked until the transaction ends: shared for ingest (many
        nodes at once), exclusive for a window close (see :mod:`controller.storage.window_stats`).
        """
        ...

    async def leads(self, epoch: int) -> bool:
        """Whether term ``epoch`` still leads (on PostgreSQL: its lease has not expired by
        the database's clock)."""
        ...

    async def last_command_id(self) -> int:
        """The highest command id stored (0: none)."""
        ...

    async def window_partials(self, window_start: int) -> list[PartialSums]:
        """Every node's partial sums of the window starting at ``window_start``."""
        ...

    async def store_partials(self, rows: Sequence[PartialRow]) -> None:
        """Insert or replace this node's partial rows."""
        ...

    async def store_marks(self, rows: Sequence[MarkRow]) -> None:
        """Insert or replace this node's run_marks rows."""
        ...

    async def close_until(self, until_us: int) -> None:
        """Move ``decided_until`` to ``until_us``, delete the partial rows before it, and the
        run_marks rows not heard from for MARK_RETENTION_US before it."""
        ...

    def savepoint(self) -> AbstractAsyncContextManager[None]:
        """A savepoint for the block: released when it succeeds, rolled back to
        (and the error raised on) when it fails, the transaction still usable."""
        ...

    def is_data_error(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the database refusing a value of the statement (so
        that statement alone is at fault), rather than failing to write at all
        (a lock, a full disk, a lost connection: then everything may be)."""
        ...

    async def commit(self) -> None:
        """Commit; CommitOutcomeUnknown when the connection was lost during the COMMIT."""
        ...

    async def committed(self, node: str, mark: int) -> bool:
        """Whether the transaction of writer ``node`` that set commit mark ``mark`` (on
        another, lost connection) committed; waits until that transaction has ended."""
        ...

    async def rollback(self) -> None:
        """Roll back the open transaction, if any."""
        ...

    def is_closed(self) -> bool:
        """Whether the connection is gone (a new one is needed)."""
        ...

    def check_file(self) -> None:
        """Raise DatabaseFileMoved unless the file written is still the one at
        its path (a database without a file: never)."""
        ...


def command_conflict(record: CommandRecord, stored: Mapping[str, Any] | None) -> int:
    """After an insert of ``record`` that inserted nothing: 1 when ``stored`` (the row
    under its id) is that very command, recorded before; CommandConflict otherwise.

    What a retry of an insert whose commit outcome was unknown finds: the
    database is read back, never written twice or refused for ever.
    """
    if stored is not None:
        expected = command_values(record)
        same = all(
            bool(stored[name]) == bool(value) if name == "changed" else stored[name] == value
            for name, value in expected.items()
            if name != "acknowledged_at"
        )
        if same:
            return 1
    raise CommandConflict(
        f"command {record.id}: its id already holds a different command"
        + (
            ""
            if stored is None
            else f" (status {stored['status']}, window from {stored['window_start']} µs)"
        )
    )
