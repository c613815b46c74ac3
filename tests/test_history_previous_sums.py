"""History/Query serves the exact sums of the window each decision was compared with.

The window a decision compares with is the last window decided before it: the window of the
command just before (``controller.decision.loop``). History already served each command's
own exact sums (revision 0006); a replay of the first decision of a range needs those of
the command before it too, which lies outside the range. So every Query entry carries them
on ``previous_window`` (from that command's row), on every page and in merged runs alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from sqlalchemy import insert

from controller.api.history import HistoryServicer
from controller.records import CommandRecord
from controller.storage.database import Database
from controller.storage.rows import command_values
from controller.storage.schema import commands
from tests.builders import command_record
from tests.databases import TestDatabase
from workcell.timeconv import US_PER_SECOND, to_timestamp
from workcell.v1 import history_pb2, history_pb2_grpc

PERIOD_US = 5 * US_PER_SECOND
START_US = 1_800_000_000 * US_PER_SECOND
OLD = {5}  # recorded before revision 0006: no exact sums


def _records() -> list[CommandRecord]:
    records = []
    for command_id in range(1, 13):
        record = command_record(
            command_id,
            window_start=START_US + command_id * PERIOD_US,
            period_us=PERIOD_US,
            status="up" if command_id % 4 < 2 else "down",
        )
        if command_id not in OLD:
            sums = (1000 * command_id + 7, 10**25 * command_id + 3)  # beyond 64 bits
            record = dataclasses.replace(record, window_sums=sums)
        records.append(record)
    return records


def _sums(record: CommandRecord | None) -> tuple[str, str]:
    if record is None or record.window_sums is None:
        return "", ""
    return str(record.window_sums[0]), str(record.window_sums[1])


@pytest.fixture
async def stub(database: TestDatabase) -> AsyncIterator[Any]:
    opened = await Database.open(database.url)
    server = grpc.aio.server()
    try:
        async with opened.engine.begin() as conn:
            await conn.execute(insert(commands), [command_values(r) for r in _records()])
        history_pb2_grpc.add_HistoryServicer_to_server(HistoryServicer(opened), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield history_pb2_grpc.HistoryStub(channel)
    finally:
        await server.stop(None)
        await opened.close()


async def _entries(stub: Any, **fields: Any) -> list[history_pb2.HistoryEntry]:
    entries: list[history_pb2.HistoryEntry] = []
    token = ""
    while True:
        page = await stub.Query(history_pb2.QueryRequest(page_token=token, **fields))
        entries.extend(page.entries)
        token = page.next_page_token
        if not token:
            return entries


@pytest.mark.parametrize("merge_runs", [False, True])
async def test_every_entry_carries_the_previous_commands_exact_sums(
    stub: Any, merge_runs: bool
) -> None:
    records = {r.id: r for r in _records()}
    # From command 4 on, 2 entries a page: the first entry of the range and of every page
    # has its previous command on no page served.
    entries = await _entries(
        stub,
        from_datetime=to_timestamp(records[4].issued_at),
        page_size=2,
        merge_runs=merge_runs,
    )
    assert entries[0].command_id == 4
    for entry in entries:
        previous = records.get(entry.command_id - 1)
        got = (entry.previous_window.total, entry.previous_window.total_sq)
        assert got == _sums(previous), entry.command_id
        assert (entry.window.total, entry.window.total_sq) == _sums(records[entry.command_id])
    # The command after one recorded before revision 0006 has no previous sums to serve.
    if not merge_runs:
        (after_old,) = [e for e in entries if e.command_id == 6]
        assert after_old.previous_window.total == ""


async def test_the_first_command_has_no_previous_sums(stub: Any) -> None:
    (first, *_) = await _entries(stub, page_size=1)
    assert first.command_id == 1
    assert (first.previous_window.total, first.previous_window.total_sq) == ("", "")
