"""The storage ceiling on PostgreSQL: raw asyncpg inserting (c)'s rows by each means it offers.

Same schema (made by the controller's migrations), same rows as the SQLite ceiling
(:mod:`benchmarks.storage`): eight runs' readings interleaved, one transaction per batch,
PostgreSQL's default durability (each commit waits for its WAL flush, so the batch size is
part of the means: 1,000 rows a transaction as on SQLite, and 10,000). Only the inserts and
commits are timed; rows are built beforehand. Each means gets a fresh database, so none
inserts into a table another one grew. The ceiling is the fastest of them:

- ``executemany``: the five-column ``INSERT ... ON CONFLICT DO NOTHING``, one row a
  parameter set (asyncpg pipelines them);
- ``unnest``: one ``INSERT ... SELECT FROM unnest(five arrays) ON CONFLICT DO NOTHING``, the
  controller's own statement;
- ``copy``: ``copy_records_to_table`` (binary COPY). COPY cannot skip a duplicate key (one
  fails the whole batch), so it is a ceiling the controller cannot use as it is: a resent
  reading must be stored once, not refused with its whole group.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import asyncpg
from sqlalchemy.ext.asyncio import create_async_engine

from benchmarks.postgres_server import PostgresServer
from benchmarks.storage import StorageCeiling
from controller.storage.migrate import upgrade

__all__ = ["BATCHES", "METHODS", "postgres_storage_ceiling"]

_COLUMNS: Final = ("run_id", "seq", "payload", "timestamp", "received_at")
_INSERT_RUNS = (
    "INSERT INTO sensor_runs (id, sensor_id, boot_id) "
    "SELECT * FROM unnest($1::integer[], $2::text[], $3::text[])"
)
_VALUES = (
    "INSERT INTO readings (run_id, seq, payload, timestamp, received_at) "
    "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (run_id, seq) DO NOTHING"
)
_UNNEST = (
    "INSERT INTO readings (run_id, seq, payload, timestamp, received_at) "
    "SELECT * FROM unnest($1::integer[], $2::bigint[], $3::bigint[], $4::bigint[], "
    "$5::bigint[]) ON CONFLICT (run_id, seq) DO NOTHING"
)

Row = tuple[int, int, int, int, int]
Insert = Callable[[asyncpg.Connection, Sequence[Row]], Awaitable[object]]


async def _executemany(connection: asyncpg.Connection, rows: Sequence[Row]) -> None:
    await connection.executemany(_VALUES, rows)


async def _unnest(connection: asyncpg.Connection, rows: Sequence[Row]) -> None:
    await connection.execute(_UNNEST, *(list(column) for column in zip(*rows, strict=True)))


async def _copy(connection: asyncpg.Connection, rows: Sequence[Row]) -> None:
    await connection.copy_records_to_table("readings", records=rows, columns=_COLUMNS)


METHODS: Final[dict[str, Insert]] = {
    "executemany": _executemany,
    "unnest": _unnest,
    "copy": _copy,
}


BATCHES: Final = (1_000, 10_000)
"""Rows per transaction tried with each method."""


async def _migrate(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(upgrade)
    finally:
        await engine.dispose()


async def _fill(dsn: str, insert: Insert, seconds: float, batch: int) -> StorageCeiling:
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = 0
        spent = 0.0
        run = 0
        while spent < seconds:
            # Eight sensors' readings interleaved, like the controller's groups (each batch
            # from new runs, so no key is ever repeated); runs registered untimed.
            await connection.execute(
                _INSERT_RUNS,
                [run + k for k in range(1, 9)],
                [f"sensor-{k}" for k in range(1, 9)],
                [uuid.uuid4().hex for _ in range(8)],
            )
            base = time.time_ns() // 1000
            chunk = [(run + 1 + i % 8, i, i % 1000, base + i, base + i) for i in range(batch)]
            run += 8
            started = time.perf_counter()
            async with connection.transaction():
                await insert(connection, chunk)
            spent += time.perf_counter() - started
            rows += batch
        return StorageCeiling(rows, spent)
    finally:
        await connection.close()


def postgres_storage_ceiling(server: PostgresServer, seconds: float) -> dict[str, StorageCeiling]:
    """Each method of :data:`METHODS` at each of :data:`BATCHES` rows a transaction, for about
    ``seconds`` of insert time each, on its own database; keyed ``"method, N/txn"``."""
    ceilings = {}
    for batch in BATCHES:
        for name, insert in METHODS.items():
            with server.database() as database:
                asyncio.run(_migrate(server.url(database)))
                filled = asyncio.run(_fill(server.dsn(database), insert, seconds, batch))
            ceilings[f"{name}, {batch:,}/txn"] = filled
    return ceilings
