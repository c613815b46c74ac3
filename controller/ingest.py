"""``workcell.v1.Telemetry``: validate readings and hand them to the writer.

Each message becomes one queued batch, so readings are committed while the
stream is still open; the response is sent once every batch of the stream is
committed, which is what makes it mean "durable".
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

import grpc

from controller.errors import InvalidReading, StorageError
from controller.records import BatchResult, ReadingRow
from controller.validation import check_reading
from workcell.timeconv import Clock, now_us
from workcell.v1 import telemetry_pb2, telemetry_pb2_grpc

__all__ = ["ReadingSink", "TelemetryServicer"]

log = logging.getLogger(__name__)


class ReadingSink(Protocol):
    """Where validated readings go (the writer)."""

    async def add_readings(self, rows: Sequence[ReadingRow]) -> asyncio.Future[BatchResult]: ...


class TelemetryServicer(telemetry_pb2_grpc.TelemetryServicer):
    """Stores every reading of a stream, then answers with the counts."""

    def __init__(self, sink: ReadingSink, *, max_skew_us: int, clock: Clock = now_us) -> None:
        self._sink = sink
        self._max_skew_us = max_skew_us
        self._clock = clock
        self.open_streams = 0

    async def StreamReadings(
        self,
        request_iterator: AsyncIterator[telemetry_pb2.StreamReadingsRequest],
        context: grpc.aio.ServicerContext[
            telemetry_pb2.StreamReadingsRequest, telemetry_pb2.StreamReadingsResponse
        ],
    ) -> telemetry_pb2.StreamReadingsResponse:
        # Batches complete in queue order, so settled ones are folded into the
        # total as the stream goes: a long stream holds at most the batches
        # still queued, never one future per message it ever sent.
        pending: deque[asyncio.Future[BatchResult]] = deque()
        total = BatchResult()
        self.open_streams += 1
        try:
            problem: InvalidReading | None = None
            async for request in request_iterator:
                rows, problem = self._rows(request)
                if rows:
                    pending.append(await self._sink.add_readings(rows))
                while pending and pending[0].done():
                    total += await self._settled(pending.popleft(), context)
                if problem is not None:
                    break
            # Readings received before a bad one are still stored: wait for
            # them before failing the stream, so the error means "the rest
            # was not taken".
            while pending:
                total += await self._settled(pending.popleft(), context)
            if problem is not None:
                log.warning("rejected a stream: %s", problem)
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(problem))
        finally:
            self.open_streams -= 1
        return telemetry_pb2.StreamReadingsResponse(
            stored=total.stored, duplicates=total.duplicates, stale=total.stale
        )

    @staticmethod
    async def _settled(
        future: asyncio.Future[BatchResult],
        context: grpc.aio.ServicerContext[
            telemetry_pb2.StreamReadingsRequest, telemetry_pb2.StreamReadingsResponse
        ],
    ) -> BatchResult:
        try:
            return await future
        except StorageError as exc:
            # Nothing of this batch was committed: the sender keeps it and
            # resends after the database recovers.
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))

    def _rows(
        self, request: telemetry_pb2.StreamReadingsRequest
    ) -> tuple[list[ReadingRow], InvalidReading | None]:
        """The valid readings of one message, up to the first invalid one (if any)."""
        received = self._clock()
        rows: list[ReadingRow] = []
        for reading in request.readings:
            try:
                timestamp = check_reading(reading, now_us=received, max_skew_us=self._max_skew_us)
            except InvalidReading as exc:
                return rows, exc
            rows.append(
                (
                    reading.sensor_id,
                    reading.boot_id,
                    reading.seq,
                    reading.payload,
                    timestamp,
                    received,
                )
            )
        return rows, None
