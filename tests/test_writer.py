"""The writer's bookkeeping of sensor runs across failed and retried groups."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from controller.errors import InvalidReading, NotLeader, RejectedWrite, StorageError
from controller.records import CloseWindows, ReadingRow, StreamTally
from controller.storage import postgres, sqlite
from controller.storage.database import Database
from controller.storage.write_backend import StoredReading, WriteBackend
from controller.storage.writer import Writer
from tests.databases import READINGS_WITH_RUNS, TestDatabase
from tests.test_retention import command


class FailFirstInsert:
    """A real backend whose first insert of readings fails, after the runs were registered."""

    def __init__(self, inner: WriteBackend) -> None:
        self._inner = inner
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def insert_readings(self, rows: Sequence[StoredReading]) -> int:
        if not self.failed:
            self.failed = True
            raise OSError("disk I/O error (injected)")
        return await self._inner.insert_readings(rows)


def readings(boot: str, first: int, count: int) -> list[ReadingRow]:
    return [("s1", boot, seq, seq, 1_000 + seq, 2_000 + seq) for seq in range(first, first + count)]


async def test_a_run_registered_by_a_failed_group_is_registered_again(
    database: TestDatabase,
) -> None:
    db = await Database.open(database.url)

    def backend(conn: Any) -> WriteBackend:
        return FailFirstInsert(db.write_backend(conn))

    writer = Writer(db.engine, backend=backend)
    await writer.start()
    try:
        failed = StreamTally()
        await (await writer.add_readings(failed, readings("b1", 1, 5)))
        assert failed.failure is not None
        # The failed group's transaction, and the run id it made, are gone;
        # the resend must not use that id.
        resent = StreamTally()
        await (await writer.add_readings(resent, readings("b1", 1, 5)))
        assert resent.failure is None
        assert (resent.stored, resent.duplicates) == (5, 0)
    finally:
        await writer.close()
        await db.close()
    rows = database.fetch(f"SELECT sensor_id, boot_id, seq FROM {READINGS_WITH_RUNS} ORDER BY seq")
    assert rows == [("s1", "b1", seq) for seq in range(1, 6)]
    assert database.fetch("SELECT count(*) FROM sensor_runs") == [(1,)]


# -- a row the database refuses (issue 9 item 2) ---------------------------------------

NOW_US = 1_800_000_000_000_000
# What a value past validation could do to each backend: both refuse a BIGINT
# past 2^63 - 1; only PostgreSQL refuses NUL in text.
REFUSED: dict[str, Callable[[ReadingRow], ReadingRow]] = {
    "timestamp": lambda r: (r[0], r[1], r[2], r[3], 2**63, r[5]),
    "seq": lambda r: (r[0], r[1], 2**63, r[3], r[4], r[5]),
    "boot_id": lambda r: (r[0], r[1] + "\x00", r[2], r[3], r[4], r[5]),
}


def sensor_rows(sensor: str, first: int, count: int, at_us: int = NOW_US) -> list[ReadingRow]:
    return [
        (sensor, "b1", seq, seq * 7, at_us + seq, at_us + seq)
        for seq in range(first, first + count)
    ]


async def queue_operations(writer: Writer, *calls: Any) -> list[asyncio.Task[Any]]:
    """Start the writer's operations as tasks and let each join the pending group."""
    tasks = [asyncio.create_task(call) for call in calls]
    await asyncio.sleep(0)  # each task runs up to its wait for the commit
    return tasks


@pytest.mark.parametrize("refused", sorted(REFUSED))
async def test_a_row_the_database_refuses_fails_only_its_stream(
    database: TestDatabase, refused: str
) -> None:
    if refused == "boot_id" and database.backend == "sqlite":
        pytest.skip("SQLite stores NUL in text")
    spoil = REFUSED[refused]
    db = await Database.open(database.url)
    try:
        # Before: a command (so a duplicate id can be tried) and readings to prune.
        before = Writer(db.engine, backend=db.write_backend)
        await before.start()
        await before.record_command(command(1, NOW_US))
        await (await before.add_readings(StreamTally(), sensor_rows("old", 1, 4, NOW_US - 10**9)))
        await before.close()

        health: list[bool] = []
        writer = Writer(db.engine, backend=db.write_backend, on_health=health.append)
        # Everything below joins one group: the writer starts only afterwards.
        operations = await queue_operations(
            writer,
            # Refused: the id holds another command (the same one again would be
            # read back and taken as recorded: test_recording_a_command_again...).
            writer.record_command(command(1, NOW_US + 1)),
            writer.record_command(command(2, NOW_US)),
            writer.mark_acknowledged(2, NOW_US),
            writer.prune_readings(NOW_US - 10**8, 100),
        )
        good_a, bad_b, good_c, bad_d = (StreamTally() for _ in range(4))
        b_rows = sensor_rows("s-b", 1, 6)
        b_rows[3] = spoil(b_rows[3])  # seq 4 (or its spoiled seq): after three good ones
        segments = [
            (good_a, sensor_rows("s-a", 1, 5)),
            (bad_b, b_rows),
            (good_c, sensor_rows("s-c", 1, 3)),
            (bad_d, [spoil(sensor_rows("s-d", 1, 1)[0])]),
            (bad_b, sensor_rows("s-b", 7, 2)),  # the rest of the rejected stream
            (good_c, sensor_rows("s-c", 4, 2)),
        ]
        group = {id(await writer.add_readings(tally, rows)) for tally, rows in segments}
        assert len(group) == 1
        await writer.start()
        await writer.close()
    finally:
        await db.close()

    results = await asyncio.gather(*operations, return_exceptions=True)
    assert isinstance(results[0], StorageError)
    assert results[1:] == [None, None, 4]
    for tally, stored in ((good_a, 5), (good_c, 5)):
        assert (tally.failure, tally.rejected) == (None, None)
        assert (tally.stored, tally.duplicates) == (stored, 0)
    for tally, sensor in ((bad_b, "s-b"), (bad_d, "s-d")):
        assert tally.failure is None  # not UNAVAILABLE: resending would not help
        assert isinstance(tally.rejected, InvalidReading)
        assert tally.rejected.sensor_id == sensor
        assert tally.rejected.seq is not None  # the sender is told which one to drop
        assert repr(sensor) in str(tally.rejected)
    assert bad_b.stored == 3  # the readings before the refused one are kept
    assert False not in health  # a data error is not an outage
    rows = database.fetch(
        f"SELECT sensor_id, seq FROM {READINGS_WITH_RUNS} ORDER BY sensor_id, seq"
    )
    expected = [("s-a", s) for s in range(1, 6)] + [("s-b", s) for s in range(1, 4)]
    expected += [("s-c", s) for s in range(1, 6)]
    assert [(str(a), int(b)) for a, b in rows] == expected
    # Counted in their windows exactly once, in spite of the group being redone.
    new_rows = sensor_rows("s-a", 1, 5) + sensor_rows("s-b", 1, 3) + sensor_rows("s-c", 1, 5)
    counted = database.fetch(
        f"SELECT count, total FROM window_partials WHERE node = '{writer.node}'"
    )
    assert [(int(n), int(t)) for n, t in counted] == [(len(new_rows), sum(r[3] for r in new_rows))]
    assert database.fetch("SELECT id, acknowledged_at FROM commands ORDER BY id") == [
        (1, None),
        (2, NOW_US),
    ]


class DataErrorThenOutage:
    """A real backend: the first insert of readings hits a data error, the next an outage."""

    def __init__(self, inner: WriteBackend) -> None:
        self._inner = inner
        self.inserts = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def insert_readings(self, rows: Sequence[StoredReading]) -> int:
        self.inserts += 1
        if self.inserts == 1:
            raise OverflowError("Python int too large to convert to SQLite INTEGER (injected)")
        raise OSError("disk I/O error (injected)")


async def test_an_outage_while_isolating_a_data_error_fails_the_whole_group_as_unavailable(
    database: TestDatabase,
) -> None:
    db = await Database.open(database.url)

    def backend(conn: Any) -> WriteBackend:
        return DataErrorThenOutage(db.write_backend(conn))

    health: list[bool] = []
    writer = Writer(db.engine, backend=backend, on_health=health.append)
    try:
        [insert] = await queue_operations(writer, writer.record_command(command(1, NOW_US)))
        tallies = [StreamTally(), StreamTally()]
        for number, tally in enumerate(tallies):
            await writer.add_readings(tally, sensor_rows(f"s-{number}", 1, 3))
        await writer.start()
        await writer.close()
    finally:
        await db.close()
    # Never INVALID_ARGUMENT for what is not the data's fault: every stream resends.
    for tally in tallies:
        assert isinstance(tally.failure, StorageError)
        assert tally.rejected is None
    with pytest.raises(StorageError):
        await insert
    assert health == [False]
    assert database.fetch("SELECT count(*) FROM commands") == [(0,)]


def data_error_cases() -> list[tuple[str, BaseException, bool]]:
    import asyncpg

    return [
        ("sqlite", OverflowError("Python int too large to convert to SQLite INTEGER"), True),
        ("sqlite", sqlite3.IntegrityError("UNIQUE constraint failed: commands.id"), True),
        ("sqlite", sqlite3.DataError("string or blob too big"), True),
        ("sqlite", UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), True),
        ("sqlite", sqlite3.OperationalError("database is locked"), False),
        ("sqlite", sqlite3.OperationalError("database or disk is full"), False),
        ("sqlite", sqlite3.DatabaseError("database disk image is malformed"), False),
        ("sqlite", sqlite3.ProgrammingError("Cannot operate on a closed database."), False),
        ("sqlite", ValueError("Connection closed"), False),  # aiosqlite, closed
        ("sqlite", OSError("disk I/O error"), False),
        ("postgresql", asyncpg.exceptions.CharacterNotInRepertoireError("0x00"), True),
        ("postgresql", asyncpg.exceptions.DataError("value out of int64 range"), True),
        ("postgresql", asyncpg.exceptions.StringDataRightTruncationError("too long"), True),
        ("postgresql", asyncpg.exceptions.UniqueViolationError("duplicate key"), True),
        ("postgresql", asyncpg.exceptions.ForeignKeyViolationError("no such run"), True),
        ("postgresql", asyncpg.exceptions.LockNotAvailableError("lock timeout"), False),
        ("postgresql", asyncpg.exceptions.DiskFullError("no space left"), False),
        ("postgresql", asyncpg.exceptions.ReadOnlySQLTransactionError("read-only"), False),
        ("postgresql", asyncpg.exceptions.AdminShutdownError("terminating"), False),
        ("postgresql", asyncpg.exceptions.ConnectionDoesNotExistError("closed"), False),
        ("postgresql", asyncpg.exceptions.InterfaceError("connection is closed"), False),
        ("postgresql", asyncpg.exceptions.QueryCanceledError("statement timeout"), False),
        ("postgresql", ConnectionResetError("reset by peer"), False),
        ("postgresql", TimeoutError(), False),
    ]


@pytest.mark.parametrize(("backend", "error", "is_data"), data_error_cases())
def test_only_errors_about_a_value_count_as_data_errors(
    backend: str, error: BaseException, is_data: bool
) -> None:
    classify = {"sqlite": sqlite.is_data_error, "postgresql": postgres.is_data_error}
    assert classify[backend](error) is is_data


async def test_conflicting_readings_in_one_group_keep_the_first(database: TestDatabase) -> None:
    db = await Database.open(database.url)
    try:
        writer = Writer(db.engine, backend=db.write_backend)
        first, conflicting, resent = StreamTally(), StreamTally(), StreamTally()
        rows = sensor_rows("s1", 1, 3)
        other = list(rows)
        other[1] = (*rows[1][:3], rows[1][3] + 1, *rows[1][4:])  # seq 2, another payload
        for tally, batch in ((first, rows), (conflicting, other), (resent, rows)):
            await writer.add_readings(tally, batch)
        await writer.start()
        await writer.close()
    finally:
        await db.close()
    assert (first.stored, first.duplicates, first.conflicts) == (3, 0, 0)
    assert (conflicting.stored, conflicting.duplicates, conflicting.conflicts) == (0, 3, 1)
    assert (resent.stored, resent.duplicates, resent.conflicts) == (0, 3, 0)
    assert writer.totals.conflicts == 1
    payloads = database.fetch(f"SELECT payload FROM {READINGS_WITH_RUNS} ORDER BY seq")
    assert [int(p) for (p,) in payloads] == [r[3] for r in rows]


async def test_recording_a_command_again_reads_back_what_is_stored(
    database: TestDatabase,
) -> None:
    # A retry after a commit whose outcome was unknown (issue 10, item 1): the command
    # may be stored already. The same command is then taken as recorded, not refused
    # for ever with a duplicate key; a different one under its id still is refused.
    db = await Database.open(database.url)
    try:
        writer = Writer(db.engine, backend=db.write_backend)
        await writer.start()
        try:
            await writer.record_command(command(7, NOW_US))
            await writer.record_command(command(7, NOW_US))
            with pytest.raises(RejectedWrite, match="command 7"):
                await writer.record_command(command(7, NOW_US + 1))
            await writer.record_command(command(8, NOW_US + 5_000_000))
        finally:
            await writer.close()
    finally:
        await db.close()
    rows = database.fetch("SELECT id, window_start FROM commands ORDER BY id")
    assert [(int(i), int(w)) for i, w in rows] == [(7, NOW_US), (8, NOW_US + 5_000_000)]


async def test_a_close_by_a_term_that_is_over_is_refused_alone_and_ingest_goes_on(
    database: TestDatabase,
) -> None:
    db = await Database.open(database.url)
    try:
        health: list[bool] = []
        writer = Writer(db.engine, backend=db.write_backend, on_health=health.append)
        close = CloseWindows(
            epoch=5,  # nobody holds term 5: the database refuses the close
            until_us=NOW_US + 1_000_000,
            window_start=NOW_US,
            next_id=1,
            decide=lambda stats: command(1, NOW_US),
        )
        tally = StreamTally()
        group = await writer.add_readings(tally, sensor_rows("s-a", 1, 5))
        closing = asyncio.create_task(writer.close_windows(close))
        await asyncio.sleep(0)  # both join one group
        await writer.start()
        await group
        with pytest.raises(NotLeader, match="epoch 5 no longer leads"):
            await closing
        await writer.close()
    finally:
        await db.close()
    assert (tally.failure, tally.stored) == (None, 5)  # the readings of its group committed
    assert False not in health  # not an outage
    assert database.fetch("SELECT COUNT(*) FROM commands") == [(0,)]


# -- commit pacing and chunked inserts (issue 15) -----------------------------------------


async def test_readings_wait_for_the_commit_interval_but_a_command_does_not(
    database: TestDatabase,
) -> None:
    db = await Database.open(database.url)
    # An interval no test would sit out: the command must not wait for it.
    writer = Writer(db.engine, backend=db.write_backend, commit_interval=30.0)
    await writer.start()
    try:
        first = StreamTally()
        await (await writer.add_readings(first, readings("b1", 1, 3)))  # the first group: at once
        tallies = [StreamTally() for _ in range(5)]
        groups = [
            await writer.add_readings(t, readings("b1", 10 * i + 10, 2))
            for i, t in enumerate(tallies)
        ]
        await asyncio.sleep(0.2)
        # Inside the interval: nothing more committed on its own.
        assert not any(g.done() for g in groups)
        assert writer.commits == 1
        # A command is committed at once, and the readings buffered before it with it.
        await asyncio.wait_for(writer.record_command(command(1, 0)), timeout=10)
        await asyncio.wait_for(asyncio.gather(*groups), timeout=10)
        assert writer.commits == 2
        assert [t.stored for t in tallies] == [2] * 5
    finally:
        await writer.close()
        await db.close()


async def test_a_group_of_many_readings_goes_in_chunks_and_counts_its_resends(
    database: TestDatabase,
) -> None:
    db = await Database.open(database.url)
    writer = Writer(db.engine, backend=db.write_backend)
    await writer.start()
    try:
        await (await writer.add_readings(StreamTally(), readings("b1", 600, 100)))
        # 1,300 readings (chunks of 512, 512, 256, 16, 4), 100 of them resends.
        tally = StreamTally()
        await (await writer.add_readings(tally, readings("b1", 1, 1_300)))
        assert tally.failure is None
        assert (tally.stored, tally.duplicates) == (1_200, 100)
    finally:
        await writer.close()
        await db.close()
    stored = database.fetch(f"SELECT seq, payload FROM {READINGS_WITH_RUNS} ORDER BY seq")
    assert stored == [(seq, seq) for seq in range(1, 1_301)]


async def test_readings_received_before_a_close_count_in_the_window_it_closes(
    database: TestDatabase,
) -> None:
    """Both wait for the same group (the interval): the readings are committed first, so the
    close sums them (a sensor just started holds no window back; its readings must not be
    stale only because they waited for the commit with the close)."""
    db = await Database.open(database.url)  # makes the tables
    database.execute("UPDATE leadership SET epoch = 3, expires_at = :never", never=2**62)
    writer = Writer(db.engine, backend=db.write_backend, commit_interval=30.0)
    await writer.start()
    try:
        await (await writer.add_readings(StreamTally(), sensor_rows("s-a", 1, 2)))
        tally = StreamTally()
        group = await writer.add_readings(tally, sensor_rows("s-b", 1, 3))
        close = CloseWindows(
            epoch=3,
            until_us=NOW_US + 1_000_000,
            window_start=NOW_US,
            next_id=1,
            decide=lambda stats: command(1, NOW_US),
        )
        closed = await asyncio.wait_for(writer.close_windows(close), timeout=10)
        await group
    finally:
        await writer.close()
        await db.close()
    assert (tally.stored, tally.stale) == (3, 0)
    assert closed.stats.count == 5  # what the decision was given
