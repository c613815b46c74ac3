"""In-process controller + manipulator on loopback, and a client for them."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from controller.app import Controller
from controller.config import ControllerConfig
from manipulator.server import ManipulatorServer
from workcell.flags import Address
from workcell.timeconv import to_timestamp
from workcell.v1 import history_pb2, history_pb2_grpc, telemetry_pb2, telemetry_pb2_grpc

if TYPE_CHECKING:
    from workcell.v1.history_pb2_grpc import HistoryAsyncStub
    from workcell.v1.telemetry_pb2_grpc import TelemetryAsyncStub

__all__ = ["Cell", "make_reading", "running_cell", "stream"]


@dataclass
class Cell:
    controller: Controller
    manipulator: ManipulatorServer | None
    channel: grpc.aio.Channel
    journal: Path
    database_path: Path | None
    """The SQLite file, or None when the cell runs on ``database_url`` (PostgreSQL)."""
    database_url: str

    @property
    def telemetry(self) -> TelemetryAsyncStub:
        return telemetry_pb2_grpc.TelemetryStub(self.channel)

    @property
    def history(self) -> HistoryAsyncStub:
        return history_pb2_grpc.HistoryStub(self.channel)

    async def query(self, **fields: object) -> history_pb2.QueryResponse:
        return await self.history.Query(history_pb2.QueryRequest(**fields))  # type: ignore[arg-type]


def make_reading(
    seq: int, payload: int, timestamp_us: int, *, sensor_id: str = "s1", boot_id: str = "b1"
) -> telemetry_pb2.Reading:
    return telemetry_pb2.Reading(
        sensor_id=sensor_id,
        boot_id=boot_id,
        seq=seq,
        payload=payload,
        timestamp=to_timestamp(timestamp_us),
    )


async def stream(
    cell: Cell, readings: Iterable[telemetry_pb2.Reading], *, batch: int = 1
) -> telemetry_pb2.StreamReadingsResponse:
    """Send ``readings`` on one stream, ``batch`` per message; return the response."""
    items = list(readings)
    requests = [
        telemetry_pb2.StreamReadingsRequest(readings=items[i : i + batch])
        for i in range(0, len(items), batch)
    ]
    return await cell.telemetry.StreamReadings(iter(requests))


@contextlib.asynccontextmanager
async def running_cell(
    tmp_path: Path,
    *,
    with_manipulator: bool = True,
    manipulator_port: int = 1,
    database_path: Path | None = None,
    database_url: str | None = None,
    period: float = 0.5,
    grace: float = 0.1,
    **overrides: object,
) -> AsyncIterator[Cell]:
    """A manipulator and a controller on 127.0.0.1 port 0, with a channel to the controller.

    The controller stores into ``database_url`` when given (any backend, e.g. a
    test's ``database.url``), else into the SQLite file ``database_path``, else
    into a new SQLite file in ``tmp_path``.
    """
    journal = tmp_path / "journal.jsonl"
    if database_url is None:
        database_path = database_path or tmp_path / f"workcell-{uuid.uuid4().hex[:6]}.db"
        database_url = f"sqlite+aiosqlite:///{database_path}"
    manipulator = ManipulatorServer(journal=journal) if with_manipulator else None
    async with contextlib.AsyncExitStack() as stack:
        # Without a manipulator nothing listens on manipulator_port (by
        # default port 1): the link keeps retrying until one appears there.
        if manipulator is not None:
            await stack.enter_async_context(manipulator)
            manipulator_port = manipulator.port
        config = replace(
            ControllerConfig(),
            listen=Address("127.0.0.1", 0),
            manipulator=Address("127.0.0.1", manipulator_port),
            database=database_url,
            period=period,
            grace=grace,
            **{"shutdown_grace": 1.0, **overrides},  # type: ignore[arg-type]
        )
        controller = await stack.enter_async_context(Controller(config))
        channel = await stack.enter_async_context(
            grpc.aio.insecure_channel(f"127.0.0.1:{controller.port}")
        )
        yield Cell(controller, manipulator, channel, journal, database_path, database_url)


def seqs(readings: Sequence[telemetry_pb2.Reading]) -> list[int]:
    return [r.seq for r in readings]
