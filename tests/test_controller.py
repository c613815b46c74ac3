"""The controller in-process, with a real manipulator, over loopback.

The storage tests (what is stored, duplicates, restarts, History over the
database, database trouble) take the ``database`` fixture and run on SQLite
and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from scipy import stats

from controller.api.paging import QueryFilter, encode_page_token
from controller.decision.windows import window_bounds, window_index
from manipulator.journal import read_journal
from manipulator.server import ManipulatorServer
from tests.controller_harness import Cell, make_reading, running_cell, stream
from tests.databases import (
    READINGS_WITH_RUNS,
    TestDatabase,
    holding_write_lock,
    sqlite_database,
)
from tests.processes import free_port
from workcell.timeconv import US_PER_SECOND, from_timestamp, now_us
from workcell.v1 import command_pb2, history_pb2, telemetry_pb2

PERIOD_US = US_PER_SECOND // 2


def stored_rows(database: TestDatabase) -> list[tuple[str, str, int, int]]:
    rows = database.fetch(
        f"SELECT sensor_id, boot_id, seq, payload FROM {READINGS_WITH_RUNS} ORDER BY sensor_id, seq"
    )
    return [(str(a), str(b), int(c), int(d)) for a, b, c, d in rows]


async def wait_for_entries(
    cell: Cell, count: int, *, acknowledged: bool = True, within: float = 15.0
) -> list[history_pb2.HistoryEntry]:
    """Poll History until ``count`` entries exist (all acknowledged, if asked)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        entries = list((await cell.query(page_size=1000)).entries)
        ready = entries[:count]
        if len(ready) == count and (
            not acknowledged or all(e.HasField("acknowledged_at") for e in ready)
        ):
            return entries
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"only {len(entries)} entries after {within}s: {entries}")
        await asyncio.sleep(0.1)


async def test_stream_is_stored_once_and_a_resend_counts_as_duplicates(
    tmp_path: Path, database: TestDatabase
) -> None:
    async with running_cell(tmp_path, database_url=database.url) as cell:
        now = now_us()
        readings = [make_reading(i, i * 10, now) for i in range(1, 51)]
        first = await stream(cell, readings)
        assert (first.stored, first.duplicates) == (50, 0)
        # Half old, half new: only the new ones are stored.
        again = readings[25:] + [make_reading(i, 0, now) for i in range(51, 76)]
        second = await stream(cell, again, batch=10)
        assert (second.stored, second.duplicates) == (25, 25)
    rows = stored_rows(database)
    assert [r[2] for r in rows] == list(range(1, 76))


async def test_a_window_counts_only_new_readings(tmp_path: Path, database: TestDatabase) -> None:
    async with running_cell(tmp_path, period=5.0, database_url=database.url) as cell:
        now = now_us()
        readings = [make_reading(i, i, now) for i in range(1, 11)]
        await stream(cell, readings)
        await stream(cell, readings)  # a resend must not count twice
        # The window's statistics are in the database, committed with the readings.
        start = window_index(now, 5_000_000) * 5_000_000
        rows = database.fetch(
            f"SELECT count, total, total_sq FROM window_partials WHERE window_start = {start}"
        )
        assert [(int(n), int(t), int(q)) for n, t, q in rows] == [
            (10, sum(range(1, 11)), sum(i * i for i in range(1, 11)))
        ]


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"sensor_id": ""}, "sensor_id"),
        ({"sensor_id": "bad id!"}, "sensor_id"),
        ({"sensor_id": "x" * 65}, "sensor_id"),
        ({"boot_id": ""}, "boot_id"),
        ({"timestamp": None}, "timestamp"),
        ({"timestamp": "future"}, "timestamp"),
        ({"seq": 2**63}, "seq"),
        # Past what the databases can hold: microseconds beyond 64 bits, or
        # outside protobuf's Timestamp range (years 0001-9999).
        ({"timestamp.seconds": -(10**13)}, "timestamp"),
        ({"timestamp.seconds": -62_135_596_801}, "timestamp"),
        ({"timestamp.nanos": -1}, "timestamp"),
        ({"timestamp.nanos": 1_000_000_000}, "timestamp"),
        # PostgreSQL text refuses NUL; varchar(64) counts characters.
        ({"boot_id": "b\x00"}, "boot_id"),
        ({"boot_id": "\u00e9" * 65}, "boot_id"),
    ],
)
async def test_an_invalid_reading_fails_the_stream_but_keeps_what_came_before(
    tmp_path: Path, database: TestDatabase, bad: dict[str, object], field: str
) -> None:
    async with running_cell(tmp_path, database_url=database.url) as cell:
        now = now_us()
        good = [make_reading(i, i, now) for i in range(1, 6)]
        invalid = make_reading(6, 6, now)
        for name, value in bad.items():
            if value is None:
                invalid.ClearField(name)
            elif value == "future":
                invalid.timestamp.seconds += 3600
            elif name.startswith("timestamp."):
                setattr(invalid.timestamp, name.removeprefix("timestamp."), value)
            else:
                setattr(invalid, name, value)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stream(cell, [*good, invalid, make_reading(7, 7, now)])
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in (caught.value.details() or "")
        # The server keeps serving.
        after = await stream(cell, [make_reading(8, 8, now)])
        assert after.stored == 1
    assert [r[2] for r in stored_rows(database)] == [1, 2, 3, 4, 5, 8]


@pytest.mark.parametrize(
    "spoil",
    ["timestamp.seconds", "boot_id"],
)
async def test_a_reading_the_database_cannot_store_fails_only_its_own_stream(
    tmp_path: Path, database: TestDatabase, caplog: pytest.LogCaptureFixture, spoil: str
) -> None:
    # What the issue found: such a reading failed its whole commit group as
    # UNAVAILABLE (every stream in it), health went NOT_SERVING, and its
    # client resent it for ever.
    async with running_cell(tmp_path, database_url=database.url) as cell:
        now = now_us()
        good_sent = asyncio.Event()
        bad_answered = asyncio.Event()

        async def good_requests() -> AsyncIterator[telemetry_pb2.StreamReadingsRequest]:
            for seq in range(1, 21):
                reading = make_reading(seq, seq, now, sensor_id="good", boot_id="\u00e9" * 64)
                yield telemetry_pb2.StreamReadingsRequest(readings=[reading])
                if seq == 10:
                    good_sent.set()
                    await bad_answered.wait()  # open across the bad stream's life

        good = asyncio.ensure_future(cell.telemetry.StreamReadings(good_requests()))
        await good_sent.wait()
        bad = make_reading(3, 3, now, sensor_id="bad")
        if spoil == "boot_id":
            bad.boot_id = "b\x00"
        else:
            bad.timestamp.seconds = -(10**13)  # microseconds below -2^63
        try:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stream(cell, [make_reading(1, 1, now, sensor_id="bad"), bad])
        finally:
            bad_answered.set()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "'bad'" in (caught.value.details() or "")
        response = await good
        assert (response.stored, response.duplicates) == (20, 0)
        assert await _health(cell) == health_pb2.HealthCheckResponse.SERVING
    assert not [
        r for r in caplog.records if r.name == "controller.storage.writer" and r.levelno >= 40
    ]
    assert [(r[0], r[2]) for r in stored_rows(database)] == [("bad", 1)] + [
        ("good", seq) for seq in range(1, 21)
    ]


async def test_a_resend_with_another_payload_is_a_conflict_counted_and_logged_once(
    tmp_path: Path, database: TestDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_cell(tmp_path, database_url=database.url) as cell:
        now = now_us()
        first = [make_reading(i, i, now) for i in range(1, 6)]
        assert (await stream(cell, first)).stored == 5
        changed = [make_reading(i, i, now) for i in range(1, 6)]
        changed[1].payload = 99  # seq 2: another payload
        changed[2].timestamp.seconds -= 1  # seq 3: another time
        response = await stream(cell, changed)
        assert (response.stored, response.duplicates, response.conflicts) == (0, 5, 2)
        # The same conflict again, and then the honest resend: no conflict.
        assert (await stream(cell, changed, batch=5)).conflicts == 2
        same = await stream(cell, first)
        assert (same.duplicates, same.conflicts) == (5, 0)
        metrics = cell.controller.metrics.registry
        conflicts = metrics.get_sample_value("workcell_controller_readings_conflict_total")
    assert conflicts == 4
    assert [r[3] for r in stored_rows(database)] == [1, 2, 3, 4, 5]  # the first is kept
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    conflict_lines = [line for line in lines if "conflict" in line]
    # Once per episode, naming the sensor and showing what differs.
    assert len(conflict_lines) == 1, lines
    assert "'s1'" in conflict_lines[0]
    assert "seq 2" in conflict_lines[0]


async def test_readings_of_a_decided_window_are_stored_but_stale(
    tmp_path: Path, database: TestDatabase
) -> None:
    async with running_cell(tmp_path, database_url=database.url) as cell:
        old = now_us() - 10 * US_PER_SECOND
        response = await stream(cell, [make_reading(i, i, old) for i in range(1, 21)])
        assert (response.stored, response.stale) == (20, 20)
    assert len(stored_rows(database)) == 20


async def test_stale_readings_are_told_per_sensor_with_how_far_behind_they_were(
    tmp_path: Path, database: TestDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    lag_us = 3 * US_PER_SECOND  # a sensor whose clock is 3 s behind
    # Periods of 1 s: 3 s back is always decided; a grace of 1 s keeps the
    # punctual sensor's readings in time even on a slow machine.
    async with running_cell(tmp_path, database_url=database.url, period=1.0, grace=1.0) as cell:
        for round_ in range(3):
            now = now_us()
            seqs = range(round_ * 10 + 1, round_ * 10 + 11)
            late, fresh = await asyncio.gather(
                stream(cell, [make_reading(i, i, now - lag_us, sensor_id="late") for i in seqs]),
                stream(cell, [make_reading(i, i, now, sensor_id="fresh") for i in seqs]),
            )
            # Each stream hears about its own readings.
            assert (late.stored, late.stale) == (10, 10)
            assert (fresh.stored, fresh.stale) == (10, 0)
    # The stale readings' warning (the decision loop may also warn that 'late' is behind).
    warnings = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and "arrived after their window" in r.getMessage()
    ]
    # Once for the episode (rate-limited), naming the sensor and its lag.
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "'late'" in warnings[0].getMessage()
    lag = warnings[0].__dict__["lag_seconds"]
    assert lag_us / US_PER_SECOND <= lag < lag_us / US_PER_SECOND + 5
    assert f"{lag:.3f} s" in warnings[0].getMessage()


async def test_a_level_shift_turns_the_status_up_with_the_right_p_value(tmp_path: Path) -> None:
    async with running_cell(tmp_path) as cell:
        index = window_index(now_us(), PERIOD_US) + 1
        low = [100 + (i % 7) for i in range(40)]
        high = [130 + (i % 5) for i in range(40)]
        start_low = window_bounds(index - 1, PERIOD_US)[0]
        start_high = window_bounds(index, PERIOD_US)[0]
        # Windows index-1 and index are still open (the latter slightly ahead).
        readings = [make_reading(i + 1, v, start_low + i) for i, v in enumerate(low)]
        readings += [make_reading(100 + i, v, start_high + i) for i, v in enumerate(high)]
        await stream(cell, readings)
        entries = await wait_for_entries(cell, 1)
        while not any(from_timestamp(e.from_datetime) == start_high for e in entries):
            entries = await wait_for_entries(cell, len(entries) + 1)
    decided = next(e for e in entries if from_timestamp(e.from_datetime) == start_high)
    expected = stats.ttest_ind(high, low, equal_var=False).pvalue
    assert decided.status == command_pb2.STATUS_UP
    assert decided.changed
    assert decided.p_value == pytest.approx(expected, rel=1e-9)
    assert decided.window.count == 40
    assert decided.previous_window.count == 40
    assert decided.window.mean == pytest.approx(sum(high) / 40)


async def test_every_command_is_journaled_once_in_order_and_acknowledged(tmp_path: Path) -> None:
    async with running_cell(tmp_path) as cell:
        entries = await wait_for_entries(cell, 4)
    journal = read_journal(cell.journal)
    acked = [e.command_id for e in entries if e.HasField("acknowledged_at")]
    assert [r["command_id"] for r in journal][: len(acked)] == acked
    assert acked == list(range(1, len(acked) + 1))
    issued = [from_timestamp(e.issued_at) for e in entries]
    assert issued == sorted(issued)
    for entry in entries:  # one command per period, windows back to back
        assert from_timestamp(entry.to_datetime) - from_timestamp(entry.from_datetime) == PERIOD_US


async def test_history_pages_and_merges_runs(tmp_path: Path, database: TestDatabase) -> None:
    async with running_cell(tmp_path, database_url=database.url) as cell:
        await wait_for_entries(cell, 5)
        everything = list((await cell.query(page_size=1000)).entries)
        to = everything[4].issued_at
        paged: list[history_pb2.HistoryEntry] = []
        token = ""
        while True:
            page = await cell.query(to_datetime=to, page_size=2, page_token=token)
            assert len(page.entries) <= 2
            paged.extend(page.entries)
            token = page.next_page_token
            if not token:
                break
        assert [e.command_id for e in paged] == [e.command_id for e in everything[:4]]
        # Page size may change between pages; the filter may not.
        first = await cell.query(to_datetime=to, page_size=1)
        rest = await cell.query(to_datetime=to, page_size=10, page_token=first.next_page_token)
        assert [e.command_id for e in rest.entries] == [2, 3, 4]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await cell.query(page_size=10, page_token=first.next_page_token)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token" in (caught.value.details() or "")
        # No readings: every decision keeps "down", so one merged run.
        merged = await cell.query(to_datetime=to, merge_runs=True)
    assert len(merged.entries) == 1
    run = merged.entries[0]
    assert (run.command_id, run.last_command_id, run.command_count) == (1, 4, 4)
    assert run.from_datetime == everything[0].from_datetime
    assert run.to_datetime == everything[3].to_datetime


@pytest.mark.parametrize(
    ("request_fields", "named"),
    [
        ({"page_size": -1}, "page_size"),
        ({"page_token": "garbage!"}, "page_token"),
        ({"from_datetime": {"seconds": 20}, "to_datetime": {"seconds": 10}}, "from_datetime"),
        # Out of the Timestamp range (years 1-9999): once an OverflowError, UNKNOWN.
        ({"to_datetime": {"seconds": 2**62}}, "to_datetime"),
        ({"from_datetime": {"seconds": -(2**62)}}, "from_datetime"),
        ({"from_datetime": {"seconds": 0, "nanos": -1}}, "from_datetime"),
        ({"to_datetime": {"seconds": 0, "nanos": 10**9}}, "to_datetime"),
        # A well-formed token whose cursor no database id can hold.
        ({"page_token": encode_page_token(2**63, QueryFilter(None, None, False))}, "page_token"),
    ],
)
async def test_history_rejects_bad_queries(
    tmp_path: Path, request_fields: dict[str, object], named: str
) -> None:
    async with running_cell(tmp_path, with_manipulator=False) as cell:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await cell.query(**request_fields)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert named in (caught.value.details() or "")
        assert (await cell.query(page_size=5000)).next_page_token == ""


async def test_health_and_reflection_are_served(tmp_path: Path) -> None:
    async with running_cell(tmp_path, with_manipulator=False) as cell:
        health = health_pb2_grpc.HealthStub(cell.channel)
        for service in ("", "workcell.v1.Telemetry", "workcell.v1.History"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(cell.channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for reply in stub.ServerReflectionInfo(iter([request])):
            names = {s.name for s in reply.list_services_response.service}
            break
    assert {"workcell.v1.Telemetry", "workcell.v1.History", "grpc.health.v1.Health"} <= names


async def test_commands_wait_for_a_late_manipulator_and_arrive_once_in_order(
    tmp_path: Path,
) -> None:
    port = free_port()
    async with running_cell(tmp_path, with_manipulator=False, manipulator_port=port) as cell:
        await wait_for_entries(cell, 3, acknowledged=False)
        async with ManipulatorServer(journal=tmp_path / "late.jsonl", port=port):
            entries = await wait_for_entries(cell, 5)
    journal = [r["command_id"] for r in read_journal(tmp_path / "late.jsonl")]
    assert journal == sorted(set(journal))
    assert journal[:5] == [e.command_id for e in entries[:5]]


async def test_a_restart_continues_ids_and_status(tmp_path: Path, database: TestDatabase) -> None:
    async with running_cell(tmp_path, database_url=database.url) as cell:
        before = await wait_for_entries(cell, 2)
    async with running_cell(tmp_path, database_url=database.url) as cell:
        after = await wait_for_entries(cell, len(before) + 2)
    ids = [e.command_id for e in after]
    assert ids == list(range(1, len(ids) + 1))


async def _health(cell: Cell) -> int:
    reply = await health_pb2_grpc.HealthStub(cell.channel).Check(health_pb2.HealthCheckRequest())
    return int(reply.status)


async def test_database_trouble_stops_acknowledging_then_recovers(
    tmp_path: Path, database: TestDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_cell(tmp_path, busy_timeout=0.2, database_url=database.url) as cell:
        now = now_us()
        # Another client holding the write lock: every write of ours fails
        # after the busy timeout (PostgreSQL: lock_timeout).
        async with holding_write_lock(database):
            for attempt in range(2):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stream(cell, [make_reading(attempt + 1, 1, now)])
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert await _health(cell) == health_pb2.HealthCheckResponse.NOT_SERVING
        response = await stream(cell, [make_reading(i, i, now) for i in range(1, 4)])
        assert (response.stored, response.duplicates) == (3, 0)
        for _ in range(50):
            if await _health(cell) == health_pb2.HealthCheckResponse.SERVING:
                break
            await asyncio.sleep(0.05)
        assert await _health(cell) == health_pb2.HealthCheckResponse.SERVING
        # Commands kept coming after the episode, ids without a gap.
        entries = await wait_for_entries(cell, 3, acknowledged=False)
    assert [e.command_id for e in entries] == list(range(1, len(entries) + 1))
    failures = [
        r
        for r in caplog.records
        if r.name == "controller.storage.writer" and "database write failed" in r.getMessage()
    ]
    assert len(failures) == 1
    assert [r[2] for r in stored_rows(database)] == [1, 2, 3]


async def test_a_database_file_taken_away_stops_acknowledging_until_it_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    path = folder / "workcell.db"
    away = tmp_path / "away"
    async with running_cell(tmp_path, database_path=path) as cell:
        now = now_us()
        assert (await stream(cell, [make_reading(1, 1, now)])).stored == 1
        folder.rename(away)  # gone from its path; the controller's handle still writes
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stream(cell, [make_reading(2, 2, now)])
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert await _health(cell) == health_pb2.HealthCheckResponse.NOT_SERVING
        # Another file at the path is not the one written either.
        folder.mkdir()
        shutil.copy(away / "workcell.db", path)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stream(cell, [make_reading(2, 2, now)])
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        # The path names the file again: writes resume, nothing was lost.
        shutil.rmtree(folder)
        away.rename(folder)
        response = await stream(cell, [make_reading(i, i, now) for i in range(2, 4)])
        assert (response.stored, response.duplicates) == (2, 0)
        for _ in range(50):
            if await _health(cell) == health_pb2.HealthCheckResponse.SERVING:
                break
            await asyncio.sleep(0.05)
        assert await _health(cell) == health_pb2.HealthCheckResponse.SERVING
    failures = [
        r.getMessage()
        for r in caplog.records
        if r.name == "controller.storage.writer" and "database write failed" in r.getMessage()
    ]
    assert len(failures) == 1, failures  # one line for the episode
    assert str(path) in failures[0]
    database = sqlite_database(folder)
    assert [r[2] for r in stored_rows(database)] == [1, 2, 3]


async def test_decisions_survive_a_restart(tmp_path: Path, database: TestDatabase) -> None:
    period_us = 2 * US_PER_SECOND
    low = [100 + (i % 5) for i in range(30)]
    high = [200 + (i % 3) for i in range(30)]
    async with running_cell(tmp_path, period=2.0, database_url=database.url) as cell:
        # Start right after a window boundary, so the steps below fit in windows.
        await asyncio.sleep((period_us - now_us() % period_us) / 1e6 + 0.05)
        index = window_index(now_us(), period_us)
        start = window_bounds(index, period_us)[0]
        await stream(cell, [make_reading(i + 1, v, start + i) for i, v in enumerate(low)])
        entries = await wait_for_entries(cell, 1, acknowledged=False)
        while from_timestamp(entries[-1].from_datetime) < start:
            entries = await wait_for_entries(cell, len(entries) + 1, acknowledged=False)
        before = entries[-1]
        assert before.window.count == 30
        # The next window is open: its readings are stored, then the controller stops.
        next_start = window_bounds(index + 1, period_us)[0]
        readings = [make_reading(100 + i, v, next_start + i) for i, v in enumerate(high)]
        assert (await stream(cell, readings)).stored == 30
    async with running_cell(tmp_path, period=2.0, database_url=database.url) as cell:
        entries = await wait_for_entries(cell, len(entries) + 1, acknowledged=False)
    after = entries[len(entries) - 1]
    decided = next(e for e in entries if from_timestamp(e.from_datetime) == next_start)
    assert decided.command_id == before.command_id + 1
    assert decided.window.count == 30  # counted though stored before the restart
    assert decided.previous_window.count == 30  # compared with the window decided before
    assert decided.previous_window.mean == pytest.approx(sum(low) / 30)
    assert decided.status == command_pb2.STATUS_UP
    assert decided.changed
    assert after.command_id >= decided.command_id


async def test_a_message_over_the_receive_limit_is_refused_and_nothing_of_it_stored(
    tmp_path: Path, database: TestDatabase
) -> None:
    async with running_cell(tmp_path, database_url=database.url) as cell:
        now = now_us()
        huge = [make_reading(i, i, now, boot_id="b" * 64) for i in range(1, 60_001)]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stream(cell, huge, batch=60_000)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (await stream(cell, [make_reading(1, 1, now)])).stored == 1
    assert len(stored_rows(database)) == 1


async def _journaled_ids(journal: Path, at_least: int, within: float = 15.0) -> list[int]:
    """Poll the journal until it holds ``at_least`` commands; their ids."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        entries = await asyncio.to_thread(read_journal, journal) if journal.exists() else []  # noqa: ASYNC240
        ids = [int(r["command_id"]) for r in entries]
        if len(ids) >= at_least:
            return ids
        assert asyncio.get_running_loop().time() < deadline, f"journal holds only {ids}"
        await asyncio.sleep(0.05)


def _ack_record_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "controller.link"
        and r.levelno >= logging.ERROR
        and "could not record" in r.getMessage()
    ]


async def test_an_ack_that_could_not_be_recorded_is_recorded_once_the_database_recovers(
    tmp_path: Path, database: TestDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    # Commands recorded while no manipulator listens; the manipulator comes
    # up (and acknowledges them) while another client holds the database's
    # write lock, so recording the acks fails; then the lock is released.
    port = free_port()
    async with running_cell(
        tmp_path,
        with_manipulator=False,
        manipulator_port=port,
        busy_timeout=0.2,
        database_url=database.url,
    ) as cell:
        pending = [e.command_id for e in await wait_for_entries(cell, 2, acknowledged=False)]
        manipulator = ManipulatorServer(journal=cell.journal, port=port)
        try:
            async with holding_write_lock(database):
                await manipulator.start()
                await _journaled_ids(cell.journal, len(pending))
                deadline = asyncio.get_running_loop().time() + 15
                while not _ack_record_errors(caplog):
                    assert asyncio.get_running_loop().time() < deadline, "no ack failed"
                    await asyncio.sleep(0.05)
                # Long enough for retries to fail too.
                await asyncio.sleep(1.0)
            entries = await wait_for_entries(cell, len(pending))
        finally:
            await manipulator.close()
    assert [e.command_id for e in entries[: len(pending)]] == pending
    # One error line for the episode, however many acks and retries failed.
    assert len(_ack_record_errors(caplog)) == 1, _ack_record_errors(caplog)


async def test_an_ack_unrecorded_at_a_stop_is_recorded_after_the_restart(
    tmp_path: Path, database: TestDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    async with running_cell(
        tmp_path,
        with_manipulator=False,
        manipulator_port=port,
        busy_timeout=0.2,
        database_url=database.url,
    ) as cell:
        pending = [e.command_id for e in await wait_for_entries(cell, 2, acknowledged=False)]
        async with holding_write_lock(database):
            async with ManipulatorServer(journal=cell.journal, port=port):
                await _journaled_ids(cell.journal, len(pending))
                deadline = asyncio.get_running_loop().time() + 15
                while not _ack_record_errors(caplog):
                    assert asyncio.get_running_loop().time() < deadline, "no ack failed"
                    await asyncio.sleep(0.05)
            # The controller stops with the acks unrecorded (the journal has them).
            await cell.controller.stop()
    caplog.clear()
    caplog.set_level(logging.INFO, logger="manipulator")
    async with running_cell(tmp_path, database_url=database.url) as cell:
        entries = await wait_for_entries(cell, len(pending))
    assert [e.command_id for e in entries[: len(pending)]] == pending
    ids = [int(r["command_id"]) for r in read_journal(cell.journal)]
    assert ids == sorted(set(ids))
    assert set(pending) <= set(ids)
    resends = [r.getMessage() for r in caplog.records if "acknowledged again" in r.getMessage()]
    assert len(resends) >= 1, resends
