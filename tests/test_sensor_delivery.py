"""Sensor delivery against a real in-test grpc.aio Telemetry server on 127.0.0.1.

The server here is deliberately minimal: it records every reading it receives,
dedupes by (sensor_id, boot_id, seq) like the controller, and answers each
stream with counts once the stream is complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc import aio

from sensor.delivery import Delivery
from tests.controller_harness import Cell, make_reading, running_cell, stream
from tests.databases import READINGS_WITH_RUNS
from workcell.backoff import Backoff
from workcell.refusals import Refusal, parse_refusal
from workcell.timeconv import US_PER_SECOND, now_us, to_timestamp
from workcell.v1 import telemetry_pb2, telemetry_pb2_grpc

Key = tuple[str, str, int]
# Returns why a reading is refused (the stream then fails with INVALID_ARGUMENT), or None.
Rejecter = Callable[[telemetry_pb2.Reading], str | None]


@dataclass
class Received:
    """What the in-test controller stored, shared across server restarts."""

    stored: dict[Key, int] = field(default_factory=dict)
    duplicates: int = 0
    messages: int = 0
    streams: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def seqs(self, sensor_id: str) -> list[int]:
        return sorted(seq for (sid, _, seq) in self.stored if sid == sensor_id)


class RecordingTelemetry(telemetry_pb2_grpc.TelemetryServicer):
    """Stores readings (deduped) and answers each stream with its counts."""

    def __init__(
        self, received: Received, reject: Rejecter | None = None, *, name_refused: bool = False
    ) -> None:
        self.received = received
        self.reject = reject
        self.name_refused = name_refused  # say which reading, as the controller does

    async def StreamReadings(
        self,
        request_iterator: AsyncIterator[telemetry_pb2.StreamReadingsRequest],
        context: aio.ServicerContext[
            telemetry_pb2.StreamReadingsRequest, telemetry_pb2.StreamReadingsResponse
        ],
    ) -> telemetry_pb2.StreamReadingsResponse:
        stored = duplicates = 0
        async for request in request_iterator:
            self.received.messages += 1
            for reading in request.readings:
                problem = None if self.reject is None else self.reject(reading)
                if problem:
                    named = Refusal(reading.seq).metadata() if self.name_refused else ()
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem, named)
                key = (reading.sensor_id, reading.boot_id, reading.seq)
                if key in self.received.stored:
                    duplicates += 1
                    self.received.duplicates += 1
                else:
                    self.received.stored[key] = reading.payload
                    stored += 1
            self.received.changed.set()
        self.received.streams += 1
        return telemetry_pb2.StreamReadingsResponse(stored=stored, duplicates=duplicates)


@contextlib.asynccontextmanager
async def telemetry_server(
    received: Received,
    port: int = 0,
    reject: Rejecter | None = None,
    *,
    name_refused: bool = False,
) -> AsyncIterator[tuple[aio.Server, int]]:
    """A real grpc.aio server on 127.0.0.1 (``port`` 0: any free port)."""
    server = aio.server()
    telemetry_pb2_grpc.add_TelemetryServicer_to_server(
        RecordingTelemetry(received, reject, name_refused=name_refused), server
    )
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    assert bound, f"could not bind 127.0.0.1:{port}"
    await server.start()
    try:
        yield server, bound
    finally:
        await server.stop(None)


def reading(seq: int, sensor_id: str = "s1", boot_id: str = "boot") -> telemetry_pb2.Reading:
    return telemetry_pb2.Reading(
        sensor_id=sensor_id, boot_id=boot_id, seq=seq, payload=seq, timestamp=to_timestamp(now_us())
    )


FAST_BACKOFF = Backoff(initial=0.02, maximum=0.2)


async def feed(delivery: Delivery, seqs: range, rate: float) -> None:
    """Add readings at roughly ``rate`` per second (in small bursts)."""
    burst = max(1, int(rate / 100))
    for start in range(seqs.start, seqs.stop, burst):
        for seq in range(start, min(start + burst, seqs.stop)):
            delivery.add(reading(seq))
        await asyncio.sleep(burst / rate)


async def test_delivers_every_reading_exactly_once() -> None:
    received = Received()
    async with (
        telemetry_server(received) as (_, port),
        Delivery(f"127.0.0.1:{port}", stream_seconds=0.2, backoff=FAST_BACKOFF) as delivery,
    ):
        await feed(delivery, range(1, 501), rate=2000)
        delivery.flush()
        await asyncio.wait_for(delivery.drain(), 10)
        assert delivery.acked == 500
        assert delivery.sent == 500
        assert delivery.buffered == 0
    assert received.seqs("s1") == list(range(1, 501))
    assert received.duplicates == 0
    assert received.streams > 1  # streams were rotated while sending


async def test_batches_readings_per_message() -> None:
    received = Received()
    async with (
        telemetry_server(received) as (_, port),
        Delivery(f"127.0.0.1:{port}", batch=10, backoff=FAST_BACKOFF) as delivery,
    ):
        for seq in range(1, 96):
            delivery.add(reading(seq))
        delivery.flush()
        await asyncio.wait_for(delivery.drain(), 10)
    assert received.seqs("s1") == list(range(1, 96))
    assert received.messages == 10  # nine full batches and the flushed rest


async def test_reconnects_after_restart_and_resends_without_gaps() -> None:
    received = Received()
    async with telemetry_server(received) as (first, port):
        delivery = Delivery(f"127.0.0.1:{port}", stream_seconds=0.3, backoff=FAST_BACKOFF)
        delivery.start()
        try:
            await feed(delivery, range(1, 301), rate=1000)
            await first.stop(None)  # mid-run: streams open, responses pending
            await feed(delivery, range(301, 401), rate=1000)  # created while it is down
            assert delivery.buffered > 0
        except BaseException:
            await delivery.close()
            raise
    try:
        async with telemetry_server(received, port=port):  # same port, same "database"
            await feed(delivery, range(401, 601), rate=1000)
            delivery.flush()
            await asyncio.wait_for(delivery.drain(), 15)
            assert delivery.acked == 600
    finally:
        await delivery.close()
    assert received.seqs("s1") == list(range(1, 601))  # no gap, each stored once
    # Whatever was resent though already stored came back as a duplicate.
    assert delivery.acked + received.duplicates >= 600


async def test_readings_wait_while_the_controller_is_down() -> None:
    received = Received()
    async with telemetry_server(received) as (server, port):
        await server.stop(None)
    async with Delivery(f"127.0.0.1:{port}", backoff=FAST_BACKOFF) as delivery:
        for seq in range(1, 51):
            delivery.add(reading(seq))
        delivery.flush()
        await asyncio.sleep(0.5)  # several failed attempts
        assert delivery.buffered == 50
        async with telemetry_server(received, port=port):
            await asyncio.wait_for(delivery.drain(), 10)
    assert received.seqs("s1") == list(range(1, 51))


async def test_rejected_stream_is_logged_once_and_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    received = Received()
    rejecting = True
    rejected = asyncio.Event()

    def reject(r: telemetry_pb2.Reading) -> str | None:
        if r.seq == 5 and rejecting:
            rejected.set()
            return "reading.sensor_id: not allowed"
        return None

    async with (
        telemetry_server(received, reject=reject) as (_, port),
        Delivery(f"127.0.0.1:{port}", backoff=FAST_BACKOFF) as delivery,
    ):
        for seq in range(1, 11):
            delivery.add(reading(seq))
        delivery.flush()
        await asyncio.wait_for(rejected.wait(), 10)
        await asyncio.sleep(0.5)  # more attempts fail meanwhile
        rejecting = False
        await asyncio.wait_for(delivery.drain(), 10)
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert "reading.sensor_id: not allowed" in errors[0].getMessage()
    assert received.seqs("s1") == list(range(1, 11))


async def test_a_refused_reading_is_dropped_and_the_rest_delivered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Refused for ever (a controller with stricter rules, say): before, every
    # reading behind it waited, retried with backoff, until the buffer overflowed.
    received = Received()

    def reject(r: telemetry_pb2.Reading) -> str | None:
        return "reading.payload: not allowed" if r.seq in (5, 8) else None

    async with (
        telemetry_server(received, reject=reject, name_refused=True) as (_, port),
        Delivery(f"127.0.0.1:{port}", batch=3, backoff=FAST_BACKOFF) as delivery,
    ):
        for seq in range(1, 11):
            delivery.add(reading(seq))
        delivery.flush()
        await asyncio.wait_for(delivery.drain(), 10)
        counts = (delivery.acked, delivery.rejected, delivery.dropped)
    assert received.seqs("s1") == [1, 2, 3, 4, 6, 7, 9, 10]
    assert counts == (8, 2, 0)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings  # at most one per REJECTION_WARNING_INTERVAL
    assert "reading.payload: not allowed" in warnings[0]


async def test_full_buffer_drops_oldest_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    received = Received()
    async with telemetry_server(received) as (server, port):
        await server.stop(None)
    async with Delivery(f"127.0.0.1:{port}", capacity=20, backoff=FAST_BACKOFF) as delivery:
        for seq in range(1, 51):
            delivery.add(reading(seq))
        assert delivery.dropped == 30
        assert delivery.buffered == 20
        warnings = [r for r in caplog.records if "buffer full" in r.getMessage()]
        assert len(warnings) == 1
        delivery.flush()
        async with telemetry_server(received, port=port):
            await asyncio.wait_for(delivery.drain(), 10)
    assert received.seqs("s1") == list(range(31, 51))


class LateFailingTelemetry(RecordingTelemetry):
    """Fails the first ``failures`` streams late, after the sender moved on to newer ones."""

    def __init__(self, received: Received, failures: int) -> None:
        super().__init__(received)
        self.failures = failures

    async def StreamReadings(
        self,
        request_iterator: AsyncIterator[telemetry_pb2.StreamReadingsRequest],
        context: aio.ServicerContext[
            telemetry_pb2.StreamReadingsRequest, telemetry_pb2.StreamReadingsResponse
        ],
    ) -> telemetry_pb2.StreamReadingsResponse:
        if self.failures <= 0:
            return await super().StreamReadings(request_iterator, context)
        self.failures -= 1
        async for _ in request_iterator:
            pass
        await asyncio.sleep(0.3)
        await context.abort(grpc.StatusCode.UNAVAILABLE, "overloaded")


async def test_readings_of_overlapping_failed_streams_are_resent_after_the_last_reading() -> None:
    # Several streams fail after the producer stopped adding readings; each
    # failure must wake the sender, or their readings wait forever.
    received = Received()
    server = aio.server()
    telemetry_pb2_grpc.add_TelemetryServicer_to_server(LateFailingTelemetry(received, 4), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with Delivery(
            f"127.0.0.1:{port}", stream_seconds=0.05, backoff=FAST_BACKOFF
        ) as delivery:
            await feed(delivery, range(1, 201), rate=1000)
            delivery.flush()
            await asyncio.wait_for(delivery.drain(), 15)
    finally:
        await server.stop(None)
    assert received.seqs("s1") == list(range(1, 201))


async def test_conflicts_and_stale_readings_the_controller_reports_are_surfaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The real controller: its response says which readings were stale and
    # which clashed with readings another sender stored under the same run.
    caplog.set_level(logging.DEBUG, logger="sensor")
    async with running_cell(tmp_path, with_manipulator=False) as cell:
        now = now_us()
        late = now - 10 * US_PER_SECOND  # windows long decided

        def made(seq: int, payload: int, at_us: int) -> telemetry_pb2.Reading:
            return make_reading(seq, payload, at_us, sensor_id="s1", boot_id="shared")

        await stream(cell, [made(seq, 1000, now) for seq in range(1, 6)])  # someone else's
        async with Delivery(
            f"127.0.0.1:{cell.controller.port}", stream_seconds=0.05, backoff=FAST_BACKOFF
        ) as delivery:
            for seq in range(1, 11):
                delivery.add(made(seq, seq, now if seq <= 5 else late))
                if seq % 2 == 0:
                    await asyncio.sleep(0.06)  # several streams, so several responses
            delivery.flush()
            await asyncio.wait_for(delivery.drain(), 20)
        assert delivery.acked == 10
        assert delivery.conflicts == 5
        assert delivery.stale == 5
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "sensor.delivery" and r.levelno == logging.WARNING
    ]
    # One warning for the episode, however many responses carried conflicts.
    assert len(warnings) == 1, warnings
    assert "conflict" in warnings[0]


# -- counters (issue 10, item 7) ------------------------------------------------


async def test_sent_counts_only_readings_written_to_a_connection() -> None:
    received = Received()
    async with telemetry_server(received) as (server, port):
        await server.stop(None)
    async with Delivery(f"127.0.0.1:{port}", backoff=FAST_BACKOFF) as delivery:
        for seq in range(1, 51):
            delivery.add(reading(seq))
        delivery.flush()
        await asyncio.sleep(0.5)  # several failed attempts, none reaching a controller
        assert delivery.reconnects >= 2
        assert delivery.sent == 0
        async with telemetry_server(received, port=port):
            await asyncio.wait_for(delivery.drain(), 10)
        assert (delivery.sent, delivery.acked) == (50, 50)


async def test_readings_evicted_while_in_flight_count_as_acknowledged() -> None:
    # --buffer 1: each new reading evicts the one on its way; every one is stored.
    received = Received()
    async with (
        telemetry_server(received) as (_, port),
        Delivery(
            f"127.0.0.1:{port}", capacity=1, stream_seconds=0.2, backoff=FAST_BACKOFF
        ) as delivery,
    ):
        for seq in range(1, 301):
            delivery.add(reading(seq))
            await asyncio.sleep(0.003)  # written before the next one comes
        delivery.flush()
        await asyncio.wait_for(delivery.drain(), 10)
        counts = (delivery.acked, delivery.dropped, delivery.buffered)
    assert received.seqs("s1") == list(range(1, 301))
    assert counts == (300, 0, 0)


# -- readings the controller rejects (issue 10, item 8) ---------------------------


def stored_seqs(cell: Cell, boot_id: str) -> list[int]:
    assert cell.database_path is not None
    with contextlib.closing(sqlite3.connect(cell.database_path)) as db:
        rows = db.execute(
            f"SELECT seq FROM {READINGS_WITH_RUNS} WHERE boot_id = ? ORDER BY seq", (boot_id,)
        ).fetchall()
    return [seq for (seq,) in rows]


async def test_the_controller_names_the_reading_it_refuses(tmp_path: Path) -> None:
    async with running_cell(tmp_path, with_manipulator=False) as cell:
        now = now_us()
        readings = [make_reading(seq, seq, now) for seq in range(1, 4)]
        readings.append(make_reading(4, 4, now + 60 * US_PER_SECOND))
        with pytest.raises(aio.AioRpcError) as refused:
            await stream(cell, readings)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    refusal = parse_refusal(refused.value.trailing_metadata())
    assert refusal is not None
    assert refusal.seq == 4
    assert refusal.latest_us is not None
    assert now < refusal.latest_us < now + 60 * US_PER_SECOND


async def test_readings_stamped_too_far_ahead_are_rejected_and_the_rest_delivered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The sensor's clock jumps 60 s ahead for 2 s (the controller allows 5 s):
    # those readings are refused, and must not hold back the ones made after.
    ahead = range(251, 751)

    def made(seq: int) -> telemetry_pb2.Reading:
        skew = 60 * US_PER_SECOND if seq in ahead else 0
        return make_reading(seq, seq, now_us() + skew, sensor_id="s1", boot_id="jumpy")

    async with running_cell(tmp_path, with_manipulator=False) as cell:
        # The sensor's own backoff: before, it retried the refused reading with
        # the ones behind it until the controller's clock caught up, about 55 s.
        async with Delivery(f"127.0.0.1:{cell.controller.port}", stream_seconds=0.2) as delivery:
            for start in range(1, 1001, 5):
                for seq in range(start, start + 5):
                    delivery.add(made(seq))
                await asyncio.sleep(0.02)  # 250 readings/s, 4 s in all
            delivery.flush()
            await asyncio.wait_for(delivery.drain(), 20)
            counts = (delivery.acked, delivery.rejected, delivery.dropped, delivery.undelivered)
        assert counts == (500, 500, 0, 0)
        assert stored_seqs(cell, "jumpy") == [*range(1, 251), *range(751, 1001)]
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "sensor.delivery" and r.levelno >= logging.WARNING
    ]
    # Said, but not once per reading: at most once per REJECTION_WARNING_INTERVAL.
    assert 1 <= len(warnings) <= 2, warnings
    assert "in the future" in warnings[0]
