"""Merged History pages cost in proportion to the page, not to the run (issue 9, item 5).

Before: a merged page held every command of a run in memory and read the
whole run from the database: one run of 300,000 commands took 3.1 s for
``page_size 1``, and ten such queries took the controller to 2.46 GB. Here the
rows the servicer reads are counted through the source it is given, on both
backends, and the merged entries are checked against a plain grouping of
every command.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from sqlalchemy import insert

from controller.api.history import MERGE_ROW_BUDGET, HistoryServicer
from controller.records import CommandRecord
from controller.storage.database import Database
from controller.storage.rows import command_values
from controller.storage.schema import commands
from tests.builders import command_record
from tests.databases import TestDatabase
from workcell.timeconv import US_PER_SECOND, to_timestamp
from workcell.v1 import history_pb2, history_pb2_grpc

if TYPE_CHECKING:
    from workcell.v1.history_pb2_grpc import HistoryAsyncStub

PERIOD_US = 5 * US_PER_SECOND
START_US = 1_800_000_000 * US_PER_SECOND


class CountingSource:
    """The Database, counting the command rows History reads from it."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self.rows = 0

    async def commands_page(self, **query: Any) -> list[CommandRecord]:
        page = await self._database.commands_page(**query)
        self.rows += len(page)
        return page

    def __getattr__(self, name: str) -> Any:
        # Anything else History asks (index seeks, one row each) goes through uncounted.
        return getattr(self._database, name)


def _command(command_id: int, status: str, acknowledged: bool) -> CommandRecord:
    issued = START_US + command_id * PERIOD_US
    return command_record(
        command_id,
        window_start=issued - PERIOD_US,
        period_us=PERIOD_US,
        status=status,
        issued_at=issued,
        acknowledged_at=issued + 1000 if acknowledged else None,
    )


def _history(run_lengths: list[int], unacknowledged: set[int]) -> list[CommandRecord]:
    records = []
    ids = itertools.count(1)
    for length, status in zip(run_lengths, itertools.cycle(["down", "up"]), strict=False):
        for _ in range(length):
            command_id = next(ids)
            records.append(_command(command_id, status, command_id not in unacknowledged))
    return records


@dataclass
class Served:
    source: CountingSource
    stub: HistoryAsyncStub

    most_rows_per_page: int = 0

    async def merged(self, **fields: Any) -> list[history_pb2.HistoryEntry]:
        """Every merged entry, page by page (noting the most rows a page read)."""
        entries: list[history_pb2.HistoryEntry] = []
        token = ""
        self.most_rows_per_page = 0
        while True:
            before = self.source.rows
            page = await self.stub.Query(
                history_pb2.QueryRequest(merge_runs=True, page_token=token, **fields)
            )
            self.most_rows_per_page = max(self.most_rows_per_page, self.source.rows - before)
            entries.extend(page.entries)
            token = page.next_page_token
            if not token:
                return entries


@pytest.fixture
async def served(database: TestDatabase) -> AsyncIterator[Any]:
    async def serve(records: list[CommandRecord]) -> Served:
        opened = await Database.open(database.url)
        databases.append(opened)
        async with opened.engine.begin() as conn:
            for start in range(0, len(records), 5000):
                chunk = records[start : start + 5000]
                await conn.execute(insert(commands), [command_values(r) for r in chunk])
        source = CountingSource(opened)
        server = grpc.aio.server()
        history_pb2_grpc.add_HistoryServicer_to_server(HistoryServicer(source), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        channels.append(channel)
        return Served(source, history_pb2_grpc.HistoryStub(channel))

    databases: list[Database] = []
    servers: list[grpc.aio.Server] = []
    channels: list[grpc.aio.Channel] = []
    try:
        yield serve
    finally:
        for channel in channels:
            await channel.close(None)
        for server in servers:
            await server.stop(None)
        for opened in databases:
            await opened.close()


def _expected(
    records: list[CommandRecord], from_us: int | None = None, to_us: int | None = None
) -> Iterator[tuple[int, int, int, str, bool]]:
    """(first id, last id, count, status, all acknowledged) of each run in the range."""
    chosen = [
        r
        for r in records
        if (from_us is None or r.issued_at >= from_us) and (to_us is None or r.issued_at < to_us)
    ]
    for status, run in itertools.groupby(chosen, key=lambda r: r.status):
        commands_of_run = list(run)
        acknowledged = all(c.acknowledged_at is not None for c in commands_of_run)
        yield (
            commands_of_run[0].id,
            commands_of_run[-1].id,
            len(commands_of_run),
            status,
            acknowledged,
        )


def _seen(entries: list[history_pb2.HistoryEntry]) -> list[tuple[int, int, int, str, bool]]:
    return [
        (
            e.command_id,
            e.last_command_id,
            e.command_count,
            "up" if e.status == 1 else "down",
            e.HasField("acknowledged_at"),
        )
        for e in entries
    ]


async def test_a_page_of_one_run_reads_a_bounded_number_of_rows(served: Any) -> None:
    records = _history([20_000, 3], unacknowledged=set())
    cell: Served = await served(records)
    page = await cell.stub.Query(history_pb2.QueryRequest(merge_runs=True, page_size=1))
    assert _seen(list(page.entries)) == [(1, 20_000, 20_000, "down", True)]
    assert page.next_page_token
    assert page.entries[0].to_datetime == to_timestamp(records[19_999].window_end)
    # Before: all 20,000 commands of the run (and more) were read and held.
    assert cell.source.rows <= 4


async def test_merged_pages_match_a_plain_grouping(served: Any) -> None:
    lengths = [1, 3, 2_500, 1, 1, 1_200, 2, 1, 40]
    unacknowledged = {2_600, 3_710, 3_750}  # in the long down run, in the long up run...
    records = _history(lengths, unacknowledged)
    cell: Served = await served(records)
    for page_size in (1, 2, 3, 1000):
        assert _seen(await cell.merged(page_size=page_size)) == list(_expected(records))
        # A page reads a bounded number of pages' worth of rows in chunks, then a
        # row and a few seeks per run: in proportion to the page, whatever the
        # runs' length (the 2,500 and 1,200 long runs are never read through).
        assert cell.most_rows_per_page <= (MERGE_ROW_BUDGET + 1) * (page_size + 1)
    # A range that cuts runs at both ends.
    low, high = records[1_000].issued_at, records[3_000].issued_at
    entries = await cell.merged(
        page_size=2, from_datetime=to_timestamp(low), to_datetime=to_timestamp(high)
    )
    assert _seen(entries) == list(_expected(records, low, high))
