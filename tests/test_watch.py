"""History/Watch: the events of commands as they are issued and acknowledged.

Pure units for the cursor and the events; a controller in-process on both
backends; real controller processes for a resume across a restart and for a
watcher that never reads (cut off while decisions keep their cadence).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import time
from collections.abc import AsyncIterable, Sequence
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from sqlalchemy import insert

from controller.api.command_feed import CommandFeed
from controller.api.watch_events import (
    EventKind,
    WatchCursor,
    WatchEvent,
    cursor_problem,
    take_acknowledged,
    take_issued,
)
from controller.records import CommandRecord
from controller.storage.database import Database
from controller.storage.rows import command_values
from controller.storage.schema import commands
from tests.builders import command_record
from tests.controller_harness import running_cell
from tests.databases import TestDatabase
from tests.processes import Service, running, start_controller, start_manipulator
from workcell.timeconv import US_PER_SECOND, from_timestamp, now_us
from workcell.v1 import history_pb2, history_pb2_grpc

ISSUED = history_pb2.COMMAND_EVENT_KIND_ISSUED
ACKED = history_pb2.COMMAND_EVENT_KIND_ACKNOWLEDGED


def record(command_id: int, *, acked: bool) -> CommandRecord:
    start = 1_700_000_000 * US_PER_SECOND + command_id * 5 * US_PER_SECOND
    return command_record(
        command_id, window_start=start, acknowledged_at=start + 6 * US_PER_SECOND if acked else None
    )


def kinds(events: Sequence[WatchEvent]) -> list[tuple[str, int]]:
    return [(e.kind.value, e.record.id) for e in events]


# ---------------------------------------------------------------- the cursor (pure)


def test_issues_come_in_id_order_each_followed_by_its_acknowledgement_when_due() -> None:
    cursor = WatchCursor(2, 2)
    events = take_issued(
        cursor, [record(2, acked=True), record(3, acked=True), record(4, acked=False)]
    )
    assert kinds(events) == [("issued", 3), ("acknowledged", 3), ("issued", 4)]
    assert [(e.resume.issued_through, e.resume.acknowledged_through) for e in events] == [
        (3, 2),
        (3, 3),
        (4, 3),
    ]
    # 5 is acknowledged before 4: it is held back until 4 is, then both follow in order.
    events = take_issued(cursor, [record(5, acked=True)])
    assert kinds(events) == [("issued", 5)]
    assert take_acknowledged(cursor, [record(4, acked=False), record(5, acked=True)]) == []
    events = take_acknowledged(cursor, [record(4, acked=True), record(5, acked=True)])
    assert kinds(events) == [("acknowledged", 4), ("acknowledged", 5)]
    assert (cursor.issued_through, cursor.acknowledged_through) == (5, 5)


def test_a_resumed_cursor_repeats_nothing_and_skips_nothing() -> None:
    history = [record(i, acked=i <= 6) for i in range(1, 10)]
    told: list[tuple[str, int]] = []
    cursor = WatchCursor(0, 0)
    # Told in two sittings, the second from the cursor of the first's last event.
    for sitting in (history[:5], history):
        events = take_acknowledged(cursor, history) + take_issued(cursor, sitting)
        told += kinds(events)
        if events:
            cursor = events[-1].resume.copy()
    issued = [i for kind, i in told if kind == "issued"]
    acknowledged = [i for kind, i in told if kind == "acknowledged"]
    assert issued == list(range(1, 10))
    assert acknowledged == list(range(1, 7))
    # Each acknowledgement after its own issue.
    assert all(told.index(("issued", i)) < told.index(("acknowledged", i)) for i in acknowledged)


def test_acknowledgements_of_commands_not_told_issued_wait_for_their_issue() -> None:
    cursor = WatchCursor(3, 1)
    events = take_acknowledged(cursor, [record(i, acked=True) for i in (2, 3, 4)])
    assert kinds(events) == [("acknowledged", 2), ("acknowledged", 3)]
    assert take_issued(cursor, [record(4, acked=True)])[-1].kind is EventKind.ACKNOWLEDGED


def test_cursor_problems_name_the_fields() -> None:
    assert cursor_problem(None, None) is None
    assert cursor_problem(5, 5) is None
    assert "acknowledged_through" in (cursor_problem(5, 6) or "")
    assert "after_command_id" in (cursor_problem(None, 3) or "")


# ---------------------------------------------------------------- a controller in-process


async def collect(
    call: AsyncIterable[history_pb2.WatchResponse], *, until_acked: int, within: float = 30.0
) -> list[history_pb2.WatchResponse]:
    """Events until command ``until_acked`` is told acknowledged."""
    events: list[history_pb2.WatchResponse] = []
    async with asyncio.timeout(within):
        async for event in call:
            events.append(event)
            if event.kind == ACKED and event.command.command_id == until_acked:
                return events
    raise AssertionError(f"the stream ended before command {until_acked} was acknowledged")


def check_order(events: list[history_pb2.WatchResponse], first: int) -> None:
    """Issues from ``first`` on and acknowledgements in id order, each after its issue,
    every cursor one step past the previous one: no gap, no repeat."""
    issued = [e.command.command_id for e in events if e.kind == ISSUED]
    acked = [e.command.command_id for e in events if e.kind == ACKED]
    assert issued == list(range(first, first + len(issued)))
    assert acked == list(range(first, first + len(acked)))
    seen: set[int] = set()
    for event in events:
        if event.kind == ISSUED:
            seen.add(event.command.command_id)
            assert event.resume_after_command_id == event.command.command_id
        else:
            assert event.command.command_id in seen
            assert event.command.HasField("acknowledged_at")
            assert event.resume_acknowledged_through == event.command.command_id


async def test_watch_tells_issues_then_acknowledgements_in_order(
    tmp_path: Path, database: TestDatabase
) -> None:
    async with running_cell(tmp_path, database_url=database.url, period=0.3, grace=0.05) as cell:
        stub = history_pb2_grpc.HistoryStub(cell.channel)
        events = await collect(
            stub.Watch(history_pb2.WatchRequest(after_command_id=0)), until_acked=4
        )
        check_order(events, 1)
        assert events[0].kind == ISSUED
        assert events[0].command.command_id == 1
        # Resumed from the cursor of an event in the middle: exactly what followed it.
        middle = events[len(events) // 2]
        resumed = await collect(
            stub.Watch(
                history_pb2.WatchRequest(
                    after_command_id=middle.resume_after_command_id,
                    acknowledged_through=middle.resume_acknowledged_through,
                )
            ),
            until_acked=4,
        )
        assert [(e.kind, e.command.command_id) for e in resumed] == [
            (e.kind, e.command.command_id) for e in events[len(events) // 2 + 1 :]
        ]
        # From now: the first event is a command issued after the call.
        last = (await cell.query(page_size=1000)).entries[-1].command_id
        later = await collect(stub.Watch(history_pb2.WatchRequest()), until_acked=last + 2)
        assert later[0].kind == ISSUED
        assert later[0].command.command_id > last


async def test_watch_refuses_a_cursor_that_cannot_be(tmp_path: Path) -> None:
    async with running_cell(tmp_path) as cell:
        stub = history_pb2_grpc.HistoryStub(cell.channel)
        for request in (
            history_pb2.WatchRequest(after_command_id=3, acknowledged_through=4),
            history_pb2.WatchRequest(acknowledged_through=4),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                async for _ in stub.Watch(request):
                    pass
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "acknowledged_through" in (refused.value.details() or "")


async def test_a_stopping_controller_ends_its_watches_at_once(tmp_path: Path) -> None:
    async with running_cell(tmp_path, period=0.2, shutdown_grace=30.0) as cell:
        stub = history_pb2_grpc.HistoryStub(cell.channel)
        call = stub.Watch(history_pb2.WatchRequest(after_command_id=0))
        await collect(call, until_acked=1)
        started = time.monotonic()
        await cell.controller.stop()
        # Not held for the 30-s grace: the watch was ended first, with how to resume.
        assert time.monotonic() - started < 20
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            async for _ in call:
                pass
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "resume" in (ended.value.details() or "")


# ---------------------------------------------------------------- real controller processes

PERIOD = 0.5


async def drain(
    call: AsyncIterable[history_pb2.WatchResponse], into: list[history_pb2.WatchResponse]
) -> grpc.aio.AioRpcError:
    """Append the rest of ``call``'s events to ``into``; the status it ended with."""
    try:
        async for event in call:
            into.append(event)
    except grpc.aio.AioRpcError as exc:
        return exc
    raise AssertionError("the stream ended without an error status")


async def read_until(
    call: AsyncIterable[history_pb2.WatchResponse],
    events: list[history_pb2.WatchResponse],
    *,
    acked: int,
    within: float = 60.0,
) -> None:
    """Append ``call``'s events to ``events`` until command ``acked`` is told acknowledged."""
    async with asyncio.timeout(within):
        async for event in call:
            events.append(event)
            if event.kind == ACKED and event.command.command_id >= acked:
                return


async def test_watch_resumes_after_a_controller_restart_without_gap_or_repeat(
    tmp_path: Path, database: TestDatabase
) -> None:
    manipulator = start_manipulator(tmp_path / "journal.jsonl")
    assert manipulator.port is not None
    flags = ("--period", str(PERIOD), "--grace", "0.05")
    controllers: list[Service] = []
    with running(manipulator):
        controllers.append(
            start_controller(database.url, *flags, manipulator_port=manipulator.port)
        )
        events: list[history_pb2.WatchResponse] = []
        async with grpc.aio.insecure_channel(f"127.0.0.1:{controllers[0].port}") as channel:
            call = history_pb2_grpc.HistoryStub(channel).Watch(
                history_pb2.WatchRequest(after_command_id=0)
            )
            await read_until(call, events, acked=3)
            # Killed between events: whatever it issued or recorded next, the
            # watcher has not been told.
            controllers[0].signal(signal.SIGKILL)
            cut = await drain(call, events)
            assert cut.code() == grpc.StatusCode.UNAVAILABLE
        controllers[0].wait()
        last = events[-1]
        before = len(events)
        controllers.append(
            start_controller(database.url, *flags, manipulator_port=manipulator.port)
        )
        with running(*controllers):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{controllers[1].port}") as channel:
                resumed = history_pb2_grpc.HistoryStub(channel).Watch(
                    history_pb2.WatchRequest(
                        after_command_id=last.resume_after_command_id,
                        acknowledged_through=last.resume_acknowledged_through,
                    )
                )
                await read_until(resumed, events, acked=last.resume_after_command_id + 3)
                resumed.cancel()
            controllers[1].stop()
        manipulator.stop()
    assert len(events) > before
    check_order(events, 1)
    # Every command the database holds up to the last one told was told, acknowledged as stored.
    told = max(e.command.command_id for e in events)
    stored = database.fetch(
        "SELECT id, acknowledged_at FROM commands WHERE id <= :told ORDER BY id", told=told
    )
    assert [row[0] for row in stored] == list(range(1, told + 1))
    acked = {
        e.command.command_id: from_timestamp(e.command.acknowledged_at)
        for e in events
        if e.kind == ACKED
    }
    assert all(stored[i - 1][1] == at for i, at in acked.items())


async def _old_history(url: str, count: int) -> None:
    """``count`` acknowledged commands of long ago, as a long-running cell leaves them."""
    database = await Database.open(url)
    try:
        start = (now_us() // US_PER_SECOND - 10 * count) * US_PER_SECOND
        records = [record_at(i, start + (i - 1) * US_PER_SECOND) for i in range(1, count + 1)]
        async with database.engine.begin() as conn:
            await conn.execute(insert(commands), [command_values(r) for r in records])
    finally:
        await database.close()


def record_at(command_id: int, window_start: int) -> CommandRecord:
    return command_record(
        command_id,
        window_start=window_start,
        period_us=US_PER_SECOND,
        acknowledged_at=window_start + 2 * US_PER_SECOND,
    )


async def test_a_watcher_that_never_reads_is_cut_off_while_decisions_keep_their_cadence(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'workcell.db'}"
    old = 3000
    await _old_history(url, old)
    manipulator = start_manipulator(tmp_path / "journal.jsonl")
    assert manipulator.port is not None
    controller = start_controller(
        url, "--period", str(PERIOD), "--grace", "0.1", manipulator_port=manipulator.port
    )
    with running(manipulator, controller):
        address = f"127.0.0.1:{controller.port}"
        # A client with a fixed flow-control window (no BDP probing) that never
        # reads: the transport stops taking messages once the window is full.
        slow_channel = grpc.aio.insecure_channel(address, options=[("grpc.http2.bdp_probe", 0)])
        async with slow_channel, grpc.aio.insecure_channel(address) as channel:
            slow = history_pb2_grpc.HistoryStub(slow_channel).Watch(
                history_pb2.WatchRequest(after_command_id=0, acknowledged_through=0)
            )
            # Another watcher, reading, from now: served all along.
            live: list[history_pb2.WatchResponse] = []
            reader = asyncio.create_task(
                read_until(
                    history_pb2_grpc.HistoryStub(channel).Watch(history_pb2.WatchRequest()),
                    live,
                    acked=10**9,
                    within=120,
                )
            )
            await asyncio.to_thread(controller.wait_for_line, "cut off a watcher", 60)
            await asyncio.sleep(2 * PERIOD)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            received: list[history_pb2.WatchResponse] = []
            cut = await drain(slow, received)
        controller.stop()
        manipulator.stop()
    assert cut.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = cut.details() or ""
    assert "1000 events" in details, details
    assert "resume_after_command_id" in details, details
    # What it did receive is the start of the history, in order, and far from all of it.
    check_order(received, 1)
    assert 0 < len(received) < 2 * old
    # Decisions kept their cadence meanwhile: one command per window, no window
    # skipped, each issued within a period of its deadline; the reading watcher
    # was told each of them.
    database = await Database.open(url)
    try:
        new = await database.commands_after(old + 1, limit=10_000)  # the first follows a skip
    finally:
        await database.close()
    assert len(new) >= 5
    period_us = round(PERIOD * US_PER_SECOND)
    for before, after in itertools.pairwise(new):
        assert after.window_start == before.window_end, (before, after)
    for command in new:
        assert command.issued_at - command.window_end < period_us, command
    told = {e.command.command_id for e in live if e.kind == ISSUED}
    assert {c.id for c in new[:-1] if c.id <= max(told)} <= told


# ---------------------------------------------------------------- the node's command feed


async def test_the_feed_keeps_the_tail_polls_by_id_and_is_woken_by_the_writer(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'feed.db'}"
    await _old_history(url, 40)
    database = await Database.open(url)
    try:
        # A long poll interval: only notify() makes it look again within the test.
        feed = CommandFeed(database, poll_interval=60.0, keep_recent=10, keep=20)
        async with feed.watching():
            assert [r.id for r in await feed.read_after(30, 3)] == [31, 32, 33]
            # Older than the tail it holds (the last 10): read from the database.
            assert [r.id for r in await feed.read_after(5, 2)] == [6, 7]
            # A pending command, then its acknowledgement: each one change, seen at notify().
            pending = replace(record_at(41, now_us()), acknowledged_at=None)
            async with database.engine.begin() as conn:
                await conn.execute(insert(commands), [command_values(pending)])
            changed = feed.changed
            feed.notify()
            await asyncio.wait_for(changed.wait(), 10)
            [seen] = await feed.read_after(40, 5)
            assert (seen.id, seen.acknowledged_at) == (41, None)
            async with database.engine.begin() as conn:
                await conn.execute(
                    commands.update().where(commands.c.id == 41).values(acknowledged_at=now_us())
                )
            changed = feed.changed
            feed.notify()
            await asyncio.wait_for(changed.wait(), 10)
            [seen] = await feed.read_after(40, 5)
            assert seen.acknowledged_at is not None
            assert feed.polls == 2
        await feed.close()
        assert feed.closed
    finally:
        await database.close()
