"""What only PostgreSQL has: a server that can drop the controller's connections.

The rest of the storage, fault and end-to-end tests run on both backends
through the ``database`` fixture.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from controller.storage.database import Database
from controller.storage.migrate import head_revision
from tests.controller_harness import Cell, make_reading, running_cell, stream
from tests.databases import PostgresServer, TestDatabase
from workcell.timeconv import now_us


@pytest.fixture
def postgres(postgres_server: PostgresServer) -> Iterator[TestDatabase]:
    with postgres_server.fresh_database() as database:
        yield database


async def terminate_other_connections(database: TestDatabase) -> int:
    """What a server restart does to the controller: every connection dropped."""
    conn = await asyncpg.connect(database.postgres_dsn)
    try:
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(killed)
    finally:
        await conn.close()


async def health(cell: Cell) -> int:
    stub = health_pb2_grpc.HealthStub(cell.channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=""))
    return int(response.status)


async def test_the_writer_reconnects_after_its_connection_is_dropped(
    tmp_path: Path, postgres: TestDatabase
) -> None:
    async with running_cell(tmp_path, database_url=postgres.url) as cell:
        now = now_us()
        first = await stream(cell, [make_reading(i, i, now) for i in range(1, 11)])
        assert first.stored == 10
        assert await terminate_other_connections(postgres) >= 1

        # The first write after the drop may fail (UNAVAILABLE, nothing of it
        # kept); the client resends, as sensors do, until it is stored.
        readings = [make_reading(i, i, now) for i in range(11, 21)]
        refusals: list[grpc.StatusCode] = []
        for _ in range(20):
            try:
                second = await stream(cell, readings)
                break
            except grpc.aio.AioRpcError as error:
                refusals.append(error.code())
                await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"the writer never reconnected: {refusals}")
        assert set(refusals) <= {grpc.StatusCode.UNAVAILABLE}
        assert second.stored + second.duplicates == 10
        assert await health(cell) == health_pb2.HealthCheckResponse.SERVING
        # History reads come from the pool, whose connections were dropped too:
        # it still answers (this raises otherwise).
        await cell.query(page_size=10)
    rows = postgres.fetch("SELECT seq FROM readings ORDER BY seq")
    assert [seq for (seq,) in rows] == list(range(1, 21))


async def test_two_controllers_starting_at_once_migrate_once(postgres: TestDatabase) -> None:
    first, second = await asyncio.gather(Database.open(postgres.url), Database.open(postgres.url))
    await first.close()
    await second.close()
    assert postgres.fetch("SELECT version_num FROM alembic_version") == [(head_revision(),)]
