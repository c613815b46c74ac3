"""SQLite's WAL is checkpointed beside the writer, never inside one of its commits."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

from controller.records import StreamTally
from controller.storage.checkpoint import checkpoint, checkpoint_forever
from controller.storage.database import Database
from controller.storage.writer import Writer
from tests.databases import sqlite_database
from tests.test_writer import sensor_rows

GROUPS, PER_GROUP = 40, 500  # well past the 1,000 pages at which a commit used to checkpoint


def in_main_file(path: Path) -> int:
    """Readings in the database file itself, the log left out (``immutable`` ignores it)."""
    uri = f"file:{path}?immutable=1"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        return int(db.execute("SELECT count(*) FROM readings").fetchone()[0])


async def write(writer: Writer, first_group: int) -> None:
    for group in range(first_group, first_group + GROUPS):
        tally = StreamTally()
        await (await writer.add_readings(tally, sensor_rows(f"s{group}", 1, PER_GROUP)))
        assert tally.failure is None


async def test_commits_leave_the_log_to_the_checkpointer(tmp_path: Path) -> None:
    database = sqlite_database(tmp_path)
    assert database.sqlite_path is not None
    path = Path(database.sqlite_path)
    db = await Database.open(database.url)
    writer = Writer(db.engine, backend=db.write_backend)
    try:
        await checkpoint(db.engine)  # the schema the migrations left in the log
        await writer.start()
        await write(writer, 0)
        # Not one of the writer's 40 commits copied the log into the file (before: the one
        # that passed 1,000 pages did, fsync and all, while its streams waited) ...
        assert await asyncio.to_thread(in_main_file, path) == 0
        # ... the checkpoint does, on a connection of its own.
        done = await checkpoint(db.engine)
        assert (done.busy, done.copied) == (False, done.logged)
        assert await asyncio.to_thread(in_main_file, path) == GROUPS * PER_GROUP
        # The task does the same every interval while the writer goes on.
        task = asyncio.create_task(checkpoint_forever(db.engine, interval=0.01))
        try:
            await write(writer, GROUPS)
            for _ in range(200):
                if await asyncio.to_thread(in_main_file, path) == 2 * GROUPS * PER_GROUP:
                    break
                await asyncio.sleep(0.01)
            assert await asyncio.to_thread(in_main_file, path) == 2 * GROUPS * PER_GROUP
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        await writer.close()
        await db.close()
