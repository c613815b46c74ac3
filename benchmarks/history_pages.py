"""Scenario (e): History/Query page latency with many commands stored.

The ``commands`` table is filled directly (``executemany``), then pages of 100 are asked for
at random places: server-side (the servicer called in process, database read and response
built included) and round trip (a gRPC client on loopback against the same servicer).
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc

from benchmarks.storage import create_schema
from controller.api.history import HistoryServicer
from controller.api.paging import QueryFilter, encode_page_token
from controller.storage.database import Database
from workcell.timeconv import to_timestamp
from workcell.v1 import history_pb2, history_pb2_grpc

__all__ = ["PageLatency", "fill_commands", "page_latency"]

PERIOD_US = 5_000_000
START_US = 1_700_000_000_000_000


@dataclass(frozen=True, slots=True)
class PageLatency:
    """Median/p95 seconds of a page of 100, server-side and over gRPC, at ``commands`` rows."""

    commands: int
    server_median_s: float
    server_p95_s: float
    roundtrip_median_s: float
    roundtrip_p95_s: float


def fill_commands(path: Path, count: int) -> None:
    """Create the schema in ``path`` and insert ``count`` commands, one per period."""
    create_schema(path)
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        rows = (
            (
                i,
                "up" if (i // 7) % 2 else "down",
                START_US + (i - 1) * PERIOD_US,
                START_US + i * PERIOD_US,
                START_US + i * PERIOD_US + 500_000,
                START_US + i * PERIOD_US + 510_000,
                "not_significant",
                i % 7 == 0,
                0.5,
                0.05,
                1500,
                500.0,
                288.0,
                1500,
                500.0,
                288.0,
                1,  # epoch
            )
            for i in range(1, count + 1)
        )
        connection.execute("BEGIN")
        # The columns named: later revisions add more (nullable) ones.
        connection.executemany(
            f"INSERT INTO commands ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * 17)})", rows
        )
        connection.execute("COMMIT")
    finally:
        connection.close()


_COLUMNS = (
    "id", "status", "window_start", "window_end", "issued_at", "acknowledged_at", "outcome",
    "changed", "p_value", "alpha", "window_count", "window_mean", "window_std",
    "previous_count", "previous_mean", "previous_std", "epoch",
)  # fmt: skip


def _requests(count: int, samples: int, seed: int) -> list[history_pb2.QueryRequest]:
    """Pages of 100 at random places, half of them with a time range."""
    rng = random.Random(seed)
    requests = []
    quarter = count // 4
    for i in range(samples):
        if i % 2:
            # A range of a quarter of the table, read from a random place inside it.
            first = rng.randrange(0, count - quarter)
            from_us = START_US + first * PERIOD_US
            to_us = from_us + quarter * PERIOD_US
            after = first + rng.randrange(0, quarter - 100)
            query = QueryFilter(from_us, to_us, merge_runs=False)
            request = history_pb2.QueryRequest(
                from_datetime=to_timestamp(from_us), to_datetime=to_timestamp(to_us)
            )
        else:
            after = rng.randrange(0, count - 100)
            query = QueryFilter(None, None, merge_runs=False)
            request = history_pb2.QueryRequest()
        request.page_size = 100
        if after:
            request.page_token = encode_page_token(after, query)
        requests.append(request)
    return requests


def _p95(values: list[float]) -> float:
    return sorted(values)[max(0, round(len(values) * 0.95) - 1)]


async def page_latency(path: Path, count: int, samples: int = 200) -> PageLatency:
    """Time pages of 100 against a database of ``count`` commands at ``path``."""
    database = await Database.open(f"sqlite+aiosqlite:///{path}")
    try:
        servicer = HistoryServicer(database)
        requests = _requests(count, samples, seed=count)
        context = cast(Any, None)  # only used to abort on a bad request; these are valid
        await servicer.Query(requests[0], context)  # warm the connection pool
        server = []
        for request in requests:
            started = time.perf_counter()
            response = await servicer.Query(request, context)
            server.append(time.perf_counter() - started)
            assert len(response.entries) == 100, len(response.entries)
        grpc_server = grpc.aio.server()
        history_pb2_grpc.add_HistoryServicer_to_server(servicer, grpc_server)
        port = grpc_server.add_insecure_port("127.0.0.1:0")
        await grpc_server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = history_pb2_grpc.HistoryStub(channel)
                await stub.Query(requests[0])
                roundtrip = []
                for request in requests:
                    started = time.perf_counter()
                    await stub.Query(request)
                    roundtrip.append(time.perf_counter() - started)
        finally:
            await grpc_server.stop(None)
    finally:
        await database.close()
    return PageLatency(
        count,
        statistics.median(server),
        _p95(server),
        statistics.median(roundtrip),
        _p95(roundtrip),
    )


def run_page_latency(path: Path, count: int) -> PageLatency:
    """Fill and time (a fresh event loop; the harness is otherwise synchronous)."""
    fill_commands(path, count)
    return asyncio.run(page_latency(path, count))
