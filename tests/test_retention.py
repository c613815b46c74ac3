"""``--retain-readings``: old raw readings go, in small batches; commands stay."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from controller.config import parse_config
from controller.decision.rule import WindowSummary
from controller.metrics import ControllerMetrics
from controller.records import CommandRecord, ReadingRow, StreamTally
from controller.storage.database import Database
from controller.storage.retention import Retention
from controller.storage.writer import Writer
from tests.builders import command_record
from tests.databases import READINGS_WITH_RUNS, TestDatabase
from tests.processes import running, start_controller
from workcell.timeconv import now_us as now

HOUR_US = 3_600_000_000
NOW_US = 1_800_000_000_000_000


def rows(sensor: str, first: int, count: int, timestamp_us: int) -> list[ReadingRow]:
    return [
        (sensor, "boot", seq, seq % 10, timestamp_us + seq, timestamp_us + seq)
        for seq in range(first, first + count)
    ]


def command(command_id: int, window_start: int) -> CommandRecord:
    summary = WindowSummary(3, 1.0, 0.5)
    return command_record(
        command_id,
        window_start=window_start,
        outcome="changed",
        changed=True,
        p_value=0.01,
        window=summary,
        previous=summary,
    )


@pytest.fixture
async def writer(database: TestDatabase) -> AsyncIterator[Writer]:
    db = await Database.open(database.url)
    writer = Writer(db.engine, backend=db.write_backend)
    await writer.start()
    try:
        yield writer
    finally:
        await writer.close()
        await db.close()


async def store(writer: Writer, batch: list[ReadingRow]) -> StreamTally:
    tally = StreamTally()
    await (await writer.add_readings(tally, batch))
    assert tally.failure is None
    return tally


async def test_old_readings_go_new_readings_and_all_commands_stay(
    writer: Writer, database: TestDatabase
) -> None:
    await store(writer, rows("old", 0, 450, NOW_US - 3 * HOUR_US))
    await store(writer, rows("new", 0, 50, NOW_US - HOUR_US // 2))
    await writer.record_command(command(1, NOW_US - 3 * HOUR_US))
    await writer.record_command(command(2, NOW_US - HOUR_US // 2))
    metrics = ControllerMetrics()
    retention = Retention(writer, 3600, clock=lambda: NOW_US, metrics=metrics, batch=100, pause=0)

    assert await retention.sweep() == 450

    assert database.fetch(
        f"SELECT sensor_id, count(*) FROM {READINGS_WITH_RUNS} GROUP BY sensor_id"
    ) == [("new", 50)]
    assert database.fetch("SELECT id, window_count FROM commands ORDER BY id") == [
        (1, 3),
        (2, 3),
    ]
    assert metrics.readings_pruned._value.get() == 450
    assert await retention.sweep() == 0


async def test_a_resent_reading_after_retention_is_stored_again_not_lost(
    writer: Writer, database: TestDatabase
) -> None:
    # The unique key only holds while the reading is kept: a resend of a pruned
    # reading is stored anew (and, being old, counted stale by the windows).
    old = rows("s", 0, 10, NOW_US - 3 * HOUR_US)
    await store(writer, old)
    await Retention(writer, 3600, clock=lambda: NOW_US, pause=0).sweep()
    tally = await store(writer, old)
    assert (tally.stored, tally.duplicates) == (10, 0)
    assert database.fetch("SELECT count(*) FROM readings") == [(10,)]


async def test_ingest_keeps_committing_while_a_backlog_is_deleted(writer: Writer) -> None:
    await store(writer, rows("old", 0, 4_000, NOW_US - 3 * HOUR_US))
    retention = Retention(writer, 3600, clock=lambda: NOW_US, batch=200, pause=0.005)
    sweep = asyncio.create_task(retention.sweep())
    committed_during_sweep = 0
    seq = 0
    while not sweep.done():
        await store(writer, rows("live", seq, 20, NOW_US))
        seq += 20
        committed_during_sweep += not sweep.done()
    assert await sweep == 4_000
    # Twenty delete batches, each its own short transaction: live readings
    # commit between them instead of waiting for the whole backlog.
    assert committed_during_sweep >= 10


class RecordingPruner:
    def __init__(self, available: int) -> None:
        self.available = available
        self.calls: list[tuple[int, int]] = []

    async def prune_readings(self, before_us: int, limit: int) -> int:
        self.calls.append((before_us, limit))
        deleted = min(limit, self.available)
        self.available -= deleted
        return deleted


async def test_a_sweep_deletes_in_batches_until_a_short_one() -> None:
    pruner = RecordingPruner(available=250)
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    retention = Retention(pruner, 60, clock=lambda: NOW_US, batch=100, pause=0.5, sleep=sleep)
    assert await retention.sweep() == 250
    assert pruner.calls == [(NOW_US - 60_000_000, 100)] * 3
    assert pauses == [0.5, 0.5]


def test_retain_readings_flag() -> None:
    assert parse_config([]).retain_readings == 24 * 3600
    assert parse_config(["--retain-readings", "7d"]).retain_readings == 7 * 86400
    assert parse_config([], {"WORKCELL_RETAIN_READINGS": "0"}).retain_readings == 0


def test_retain_readings_may_be_shorter_than_two_periods() -> None:
    # Window statistics are in the database (revision 0005): nothing reads raw
    # readings back at a restart any more, so the old limit of two periods is gone.
    assert parse_config(["--retain-readings", "9s", "--period", "5"]).retain_readings == 9


async def test_the_controller_process_sweeps_at_start(database: TestDatabase) -> None:
    db = await Database.open(database.url)
    await db.close()
    now_us = now()
    database.execute("INSERT INTO sensor_runs (id, sensor_id, boot_id) VALUES (1, 's', 'b')")
    for seq, age_us in enumerate((3 * HOUR_US, 2 * HOUR_US, 1_000_000)):
        database.execute(
            "INSERT INTO readings (run_id, seq, payload, timestamp, received_at) "
            "VALUES (1, :seq, 1, :t, :t)",
            seq=seq,
            t=now_us - age_us,
        )
    controller = start_controller(database.url, "--retain-readings=1h")
    with running(controller):
        controller.wait_for_line(r"retention: deleted 2 readings created before")
        assert controller.stop() == 0
    assert database.fetch("SELECT seq FROM readings") == [(2,)]
