"""PostgreSQL crashing under the cell loses nothing acknowledged (issue 10, the tests' PostgreSQL).

The suite's shared PostgreSQL runs without fsync, for speed: stopped like a crash, it loses
commits it confirmed, which would hide (or fake) a durability defect of the controller. This
test starts a durable server of its own (fsync and synchronous commits on), stops it in
immediate mode while a sensor streams and commands are issued, and starts it again: every
reading the sensor had acknowledged is stored once, and every command the manipulator journaled
is in the database.

It also loses a COMMIT on its way to the server and crashes the server before the writer can
ask what became of it: after recovery PostgreSQL hands out the lost transaction's id again
(its WAL was never flushed), so the id's status, "committed", is another transaction's.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from controller.records import StreamTally
from controller.storage.database import Database
from controller.storage.writer import Writer
from manipulator.journal import read_journal
from tests.databases import READINGS_WITH_RUNS, PostgresServer, TestDatabase, running_postgres
from tests.pg_commit_proxy import READINGS_INSERT, CommitCutter
from tests.processes import Service
from tests.test_faults import (
    assert_exactly_once,
    cleanup,
    report,
    start_controller,
    start_manipulator,
    start_sensor,
    wait_all_exit,
    wait_streaming,
)
from tests.test_stall import DECISION, wait_decisions
from tests.test_writer import sensor_rows

COUNT = 1600  # 8 s at the fault suite's 200 readings/s
DOWN = 2.0


@pytest.fixture(scope="module")
def durable_server() -> Iterator[PostgresServer]:
    with running_postgres(durable=True) as server:
        yield server


def test_a_crashed_postgres_loses_nothing_acknowledged(
    tmp_path: Path, durable_server: PostgresServer
) -> None:
    services: list[Service] = []
    with durable_server.fresh_database() as database, cleanup(services):
        manipulator = start_manipulator(tmp_path)
        assert manipulator.port is not None
        controller = start_controller(database, manipulator.port)
        services += [manipulator, controller]
        assert controller.port is not None
        sensor = start_sensor("crash-1", controller.port, count=COUNT)
        services.append(sensor)
        wait_streaming([sensor])
        wait_decisions(controller, 3)
        durable_server.crash()
        time.sleep(DOWN)
        durable_server.restart()
        wait_all_exit([sensor], timeout=90)
        decided = len(DECISION.findall(controller.output()))
        wait_decisions(controller, decided + 2)
        assert controller.stop() == 0, controller.output()
        assert manipulator.stop() == 0, manipulator.output()
        _check(database, tmp_path / "journal.jsonl", sensor)


def _check(database: TestDatabase, journal: Path, sensor: Service) -> None:
    try:
        assert_exactly_once(database, {"crash-1": COUNT})
    except AssertionError as exc:
        # What the sensor says became of its readings tells a loss from a drop.
        counters = [line for line in sensor.lines if "stopped:" in line or "dropped" in line]
        raise AssertionError(f"{exc}; the sensor said: {counters}") from exc
    ids = [int(i) for (i,) in database.fetch("SELECT id FROM commands ORDER BY id")]
    assert ids == list(range(1, len(ids) + 1))
    journaled = [int(r["command_id"]) for r in read_journal(journal)]
    # Every command journaled is in the database; the last one recorded may have been
    # decided as the controller stopped, before it was sent.
    assert journaled in (ids, ids[:-1]), (journaled, ids)
    report("PostgreSQL crash", down_s=DOWN, readings=COUNT, commands=len(ids))


async def test_a_commit_lost_before_a_crash_is_not_taken_for_another_transaction(
    durable_server: PostgresServer,
) -> None:
    # Before: the writer asked txid_status() of the lost transaction's id, which the
    # restarted server had given to the next transaction; "committed", so the five
    # readings were acknowledged (stored=5) and none was in the database.
    with durable_server.fresh_database() as database:
        port = int(re.search(r":(\d+)/", database.url).group(1))  # type: ignore[union-attr]
        async with CommitCutter(port, marker=READINGS_INSERT, drop="commit") as proxy:
            db = await Database.open(database.url.replace(f":{port}/", f":{proxy.port}/"))
            writer = Writer(db.engine, backend=db.write_backend)
            try:
                await writer.start()
                before = StreamTally()
                await (await writer.add_readings(before, sensor_rows("s1", 1, 5)))
                proxy.arm()
                proxy.refusing = True  # the writer cannot ask until the server is back
                lost = StreamTally()
                group = await writer.add_readings(lost, sensor_rows("s1", 6, 5))
                await asyncio.wait_for(proxy.fired.wait(), 10)
                await asyncio.to_thread(durable_server.crash)
                await asyncio.to_thread(durable_server.restart)
                # The restarted server's next transactions: one takes the lost one's id.
                conn = await asyncpg.connect(database.url.replace("+asyncpg", ""))
                try:
                    for _ in range(3):
                        async with conn.transaction():
                            await conn.execute("CREATE TEMP TABLE IF NOT EXISTS t (x int)")
                            await conn.execute("INSERT INTO t VALUES (1)")
                finally:
                    await conn.close()
                proxy.refusing = False
                await asyncio.wait_for(group, 30)
            finally:
                await writer.close()
                await db.close()
        [(stored,)] = database.fetch(f"SELECT count(*) FROM {READINGS_WITH_RUNS} WHERE seq > 5")
    assert (before.stored, before.failure) == (5, None)
    assert lost.stored == int(stored) == 0
    assert lost.failure is not None  # not acknowledged: the sensor resends them
