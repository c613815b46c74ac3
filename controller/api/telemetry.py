"""``workcell.v1.Telemetry``: validate readings and hand them to the writer.

Each message's readings join the writer's current commit group at once, so
they are committed while the stream is still open; the response is sent once
the last group holding any of them is committed (groups commit in order),
which is what makes it mean "durable".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

import grpc

from controller.api.admission import StreamLimits, StreamRefused, StreamRegistry, peer_host
from controller.api.validation import MAX_SEQ, check_identity, reading_timestamp
from controller.errors import InvalidReading
from controller.metrics import ControllerMetrics
from controller.records import ReadingRow, StreamTally
from workcell.refusals import Refusal
from workcell.timeconv import (
    MAX_TIMESTAMP_US,
    MIN_TIMESTAMP_US,
    NANOS_PER_SECOND,
    US_PER_SECOND,
    Clock,
    now_us,
)
from workcell.v1 import telemetry_pb2, telemetry_pb2_grpc

__all__ = ["ReadingSink", "TelemetryServicer"]

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[
    telemetry_pb2.StreamReadingsRequest, telemetry_pb2.StreamReadingsResponse
]


class ReadingSink(Protocol):
    """Where validated readings go (the writer)."""

    async def add_readings(
        self, tally: StreamTally, rows: Sequence[ReadingRow]
    ) -> asyncio.Future[None]: ...


class TelemetryServicer(telemetry_pb2_grpc.TelemetryServicer):
    """Stores every reading of a stream, then answers with the counts."""

    def __init__(
        self,
        sink: ReadingSink,
        *,
        max_skew_us: int,
        clock: Clock = now_us,
        metrics: ControllerMetrics | None = None,
        streams: StreamRegistry | None = None,
    ) -> None:
        self._sink = sink
        self._streams = streams if streams is not None else StreamRegistry(StreamLimits())
        self._metrics = metrics if metrics is not None else ControllerMetrics()
        self._max_skew_us = max_skew_us
        self._clock = clock

    async def StreamReadings(
        self,
        request_iterator: AsyncIterator[telemetry_pb2.StreamReadingsRequest],
        context: Context,
    ) -> telemetry_pb2.StreamReadingsResponse:
        metrics = self._metrics
        try:
            tracked = self._streams.admit(peer_host(context.peer()))
        except StreamRefused as exc:
            metrics.streams_refused.inc()
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        tally = StreamTally()
        reader = _StreamReader(self._clock, self._max_skew_us)
        last_group: asyncio.Future[None] | None = None
        problem: InvalidReading | None = None
        metrics.open_streams.inc()
        try:
            try:
                # Never fires by itself: the registry's sweep fires it when the
                # stream is idle or old (one counter per message, no timer).
                async with asyncio.timeout(None) as deadline:
                    tracked.bind(deadline)
                    async for request in request_iterator:
                        tracked.messages += 1
                        if tally.failure is not None or tally.rejected is not None:
                            break  # settled while this message was on its way
                        rows, problem = reader.rows(request)
                        if rows:
                            last_group = await self._sink.add_readings(tally, rows)
                        if (
                            problem is not None
                            or tally.failure is not None
                            or tally.rejected is not None
                        ):
                            break
            except TimeoutError:
                if tracked.ended is None:
                    raise
            # Readings received before a bad one are still stored: wait for
            # them before failing the stream, so the error means "the rest
            # was not taken".
            if last_group is not None:
                # Shielded: the group's future is shared by every stream in
                # it, and a client going away cancels this handler.
                await asyncio.shield(last_group)
        finally:
            self._streams.release(tracked)
            metrics.open_streams.dec()
        if tracked.ended is not None:
            metrics.streams_ended.inc()
            # Not a response: readings the client wrote after the last one
            # read here would be taken as acknowledged. It resends them all;
            # what was stored comes back as duplicates.
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"{tracked.ended}: the controller ended it ({tally.stored} readings stored; "
                "open a new stream to send more)",
            )
        if tally.failure is not None:
            # Some of this stream was not committed: the sender keeps it all
            # and resends after the database recovers (duplicates are no-ops).
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(tally.failure))
        if tally.rejected is not None:
            # The database refused a value of an earlier reading than any
            # problem found since: that one is what the client must fix.
            problem = tally.rejected
        if problem is not None:
            metrics.readings_invalid.inc()
            log.warning("rejected a stream: %s", problem)
            # Which reading, for the sender to drop it and deliver the rest.
            refused = (
                Refusal(problem.seq, problem.latest_us).metadata()
                if problem.seq is not None
                else ()
            )
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(problem), refused)
        return telemetry_pb2.StreamReadingsResponse(
            stored=tally.stored,
            duplicates=tally.duplicates,
            stale=tally.stale,
            conflicts=tally.conflicts,
        )


class _StreamReader:
    """Turns one stream's messages into rows, remembering the identity it checked.

    The loop does the cheap checks inline and only calls into
    :mod:`controller.api.validation` when something looks wrong (or for a new
    sensor identity): that is where the rules and their messages live.
    """

    __slots__ = ("_checked", "_clock", "_max_skew_us")

    def __init__(self, clock: Clock, max_skew_us: int) -> None:
        self._clock = clock
        self._max_skew_us = max_skew_us
        self._checked: tuple[str, str] | None = None

    def rows(
        self, request: telemetry_pb2.StreamReadingsRequest
    ) -> tuple[list[ReadingRow], InvalidReading | None]:
        """The valid readings of one message, up to the first invalid one (if any)."""
        received = self._clock()
        latest = min(received + self._max_skew_us, MAX_TIMESTAMP_US)
        rows: list[ReadingRow] = []
        append = rows.append
        for reading in request.readings:
            identity = (reading.sensor_id, reading.boot_id)
            seq = reading.seq
            stamp = reading.timestamp
            nanos = stamp.nanos
            timestamp = stamp.seconds * US_PER_SECOND + nanos // 1000
            # With nanos in range, the microseconds are in range exactly when
            # the seconds are. An unset timestamp reads as 0: only then is
            # HasField worth asking.
            if (
                identity != self._checked
                or seq > MAX_SEQ
                or not MIN_TIMESTAMP_US <= timestamp <= latest
                or not 0 <= nanos < NANOS_PER_SECOND
                or not timestamp
            ):
                try:
                    check_identity(*identity)
                    self._checked = identity
                    timestamp = reading_timestamp(
                        reading, now_us=received, max_skew_us=self._max_skew_us
                    )
                except InvalidReading as exc:
                    return rows, exc
            append((*identity, seq, reading.payload, timestamp, received))
        return rows, None
