"""The writer's bookkeeping of sensor runs across failed and retried groups."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

import controller.writer
import controller.writes
from controller.records import ReadingRow
from controller.store import Database
from controller.writer import StreamTally, Writer
from controller.writes import StoredReading, WriteBackend
from tests.controller_harness import CountEverything
from tests.databases import READINGS_WITH_RUNS, TestDatabase


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
    database: TestDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_backend_for = controller.writes.backend_for
    monkeypatch.setattr(
        controller.writer, "backend_for", lambda conn: FailFirstInsert(real_backend_for(conn))
    )
    db = await Database.open(database.url)
    writer = Writer(db.engine, windows=CountEverything())
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
