"""A lost COMMIT reply is resolved by reading back what PostgreSQL holds (issue 10, item 1).

A proxy between the controller and PostgreSQL passes the COMMIT of the transaction that inserts
a command, swallows the server's reply and cuts the connection: the command, and the readings
of the same commit group, are committed, and the controller cannot know it. Before, it retried
the same insert every period for ever (``duplicate key value violates unique constraint
"commands_pkey"``), issued no later command, failed the readings that shared each retry's
transaction, and never counted the committed group's readings in their window. Now the writer
asks the server what became of that transaction before it reports anything.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.decision.windows import window_index
from manipulator.journal import read_journal
from tests.databases import READINGS_WITH_RUNS, PostgresServer, TestDatabase
from tests.pg_commit_proxy import CommitCutter
from tests.processes import Service
from tests.test_faults import cleanup, report, start_controller, start_manipulator, start_sensor
from tests.test_stall import DECISION, wait_decisions
from workcell.timeconv import US_PER_SECOND

PERIOD = 1.0
PERIOD_US = round(PERIOD * US_PER_SECOND)
GRACE_US = 300_000  # start_controller's --grace
# A reading received this long before its window's deadline is surely committed before it.
MARGIN_US = 500_000


@pytest.fixture
def postgres(postgres_server: PostgresServer) -> Iterator[TestDatabase]:
    with postgres_server.fresh_database() as database:
        yield database


def _through(database: TestDatabase, port: int) -> TestDatabase:
    """The same database, reached through the proxy on ``port``."""
    url = re.sub(r"@127\.0\.0\.1:\d+/", f"@127.0.0.1:{port}/", database.url)
    return TestDatabase("postgresql", url)


async def test_a_lost_commit_reply_neither_stops_decisions_nor_loses_counts(
    tmp_path: Path, postgres: TestDatabase
) -> None:
    services: list[Service] = []
    port = int(re.search(r":(\d+)/", postgres.url).group(1))  # type: ignore[union-attr]
    async with CommitCutter(port) as proxy:
        with cleanup(services):
            manipulator = await asyncio.to_thread(start_manipulator, tmp_path)
            assert manipulator.port is not None
            controller = await asyncio.to_thread(
                start_controller, _through(postgres, proxy.port), manipulator.port, period=PERIOD
            )
            services += [manipulator, controller]
            assert controller.port is not None
            sensor = start_sensor("commit-1", controller.port)
            services.append(sensor)
            await asyncio.to_thread(wait_decisions, controller, 2)
            proxy.arm()
            await asyncio.wait_for(proxy.fired.wait(), 10)
            decided = len(DECISION.findall(controller.output()))
            # Decisions go on: the command of the lost reply is not inserted again.
            await asyncio.to_thread(wait_decisions, controller, decided + 4, 20)
            assert await asyncio.to_thread(sensor.stop) == 0, sensor.output()
            assert await asyncio.to_thread(controller.stop) == 0, controller.output()
            assert await asyncio.to_thread(manipulator.stop) == 0, manipulator.output()
    log = controller.output()
    assert "duplicate key" not in log, log
    # The writer asked the server, which had committed the transaction.
    assert re.search(r"the database says commit group \d+ committed", log), log

    commands = postgres.fetch("SELECT id, window_start, window_count FROM commands ORDER BY id")
    ids = [int(c[0]) for c in commands]
    assert ids == list(range(1, len(ids) + 1))
    journaled = [int(r["command_id"]) for r in read_journal(tmp_path / "journal.jsonl")]
    # Each command delivered once, in order; a decision recorded as the controller stopped
    # may not have been sent yet: it stays pending in the database, for the next start.
    assert journaled == ids[: len(journaled)]
    unsent = postgres.fetch(
        "SELECT id FROM commands WHERE id > :last AND acknowledged_at IS NULL", last=len(journaled)
    )
    assert len(unsent) == len(ids) - len(journaled) <= 1, (journaled, ids)
    # Every window decided counted every reading that arrived in time, the committed
    # group whose reply was lost included.
    for _, window_start, counted in commands:
        start = int(window_start)
        deadline = start + PERIOD_US + GRACE_US
        [(stored, in_time)] = postgres.fetch(
            "SELECT count(*), count(*) FILTER (WHERE received_at < :ready) "
            f"FROM {READINGS_WITH_RUNS} WHERE timestamp >= :start AND timestamp < :end",
            start=start,
            end=start + PERIOD_US,
            ready=deadline - MARGIN_US,
        )
        assert int(in_time) <= int(counted) <= int(stored), (
            window_index(start, PERIOD_US),
            in_time,
            counted,
            stored,
        )
    report("lost COMMIT reply", commands=len(ids), decisions_after=len(ids) - decided)
