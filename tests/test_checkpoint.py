"""SQLite's WAL is checkpointed beside the writer, never inside one of its commits."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from controller.records import StreamTally
from controller.storage.checkpoint import checkpoint, checkpoint_forever
from controller.storage.database import Database
from controller.storage.writer import Writer
from tests.databases import sqlite_database
from tests.test_writer import sensor_rows


async def test_commits_leave_the_log_to_the_checkpointer(tmp_path: Path) -> None:
    database = sqlite_database(tmp_path)
    db = await Database.open(database.url)
    try:
        async with db.engine.connect() as conn:
            setting = await conn.exec_driver_sql("PRAGMA wal_autocheckpoint")
            assert setting.scalar_one() == 0  # no commit checkpoints by itself
        writer = Writer(db.engine, backend=db.write_backend)
        await writer.start()
        try:
            # Well past the 1,000 pages at which a commit used to checkpoint.
            for group in range(40):
                tally = StreamTally()
                await (await writer.add_readings(tally, sensor_rows(f"s{group}", 1, 500)))
                assert tally.failure is None
        finally:
            await writer.close()
        wal = Path(f"{database.sqlite_path}-wal")
        size = (await asyncio.to_thread(wal.stat)).st_size
        assert size > 1_000 * 4096  # all of it still in the log
        done = await checkpoint(db.engine)
        assert not done.busy
        assert done.logged > 1_000
        assert done.copied == done.logged
        # The task does the same every interval until cancelled.
        task = asyncio.create_task(checkpoint_forever(db.engine, interval=0.01))
        await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        await db.close()
