"""Telemetry streams that never finish cannot lock anyone out (issue 9, item 3).

Before: the gRPC server's one limit of 1,024 concurrent RPCs was shared by
every service, so 1,100 streams that sent a reading and stayed open made
History, Health and every new sensor stream fail with RESOURCE_EXHAUSTED
until the client let go.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from controller.api.admission import StreamLimits, StreamRefused, StreamRegistry, peer_host
from tests.controller_harness import make_reading, running_cell, stream
from workcell.timeconv import now_us
from workcell.v1 import history_pb2, telemetry_pb2

HUNG_STREAMS = 1100
REFUSED = {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED}


async def _one_reading_then_hang(
    seq: int, release: asyncio.Event
) -> AsyncIterator[telemetry_pb2.StreamReadingsRequest]:
    reading = make_reading(1, seq, now_us(), sensor_id="hung", boot_id=f"b{seq}")
    yield telemetry_pb2.StreamReadingsRequest(readings=[reading])
    await release.wait()


def _code(outcome: object) -> grpc.StatusCode:
    if isinstance(outcome, grpc.aio.AioRpcError):
        return outcome.code()
    assert isinstance(outcome, telemetry_pb2.StreamReadingsResponse), outcome
    return grpc.StatusCode.OK


async def test_streams_that_never_finish_leave_health_and_history_available(
    tmp_path: Path,
) -> None:
    release = asyncio.Event()
    # No idle stream is ended until every stream has opened or been refused,
    # however slow the machine: the timeout is shortened afterwards.
    limits = StreamLimits(idle_timeout=3600.0)
    async with running_cell(tmp_path, with_manipulator=False, stream_limits=limits) as cell:
        registry = cell.controller.streams
        assert registry is not None
        calls = [
            asyncio.ensure_future(cell.telemetry.StreamReadings(_one_reading_then_hang(i, release)))
            for i in range(HUNG_STREAMS)
        ]
        try:
            deadline = asyncio.get_running_loop().time() + 60
            while sum(c.done() for c in calls) < HUNG_STREAMS - limits.max_per_peer:
                assert asyncio.get_running_loop().time() < deadline, "streams still opening"
                await asyncio.sleep(0.1)
            health = health_pb2_grpc.HealthStub(cell.channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            await cell.history.Query(history_pb2.QueryRequest(page_size=1), timeout=5)
            # Streams past the per-host limit were refused at once, not left waiting.
            refused = [c for c in calls if c.done()]
            assert len(refused) == HUNG_STREAMS - limits.max_per_peer
            codes = Counter(_code(c.exception()) for c in refused)
            # Now and then grpc's client reports a refused stream as CANCELLED
            # (the status arrives while it is still writing the request).
            assert set(codes) <= REFUSED
            refusals = cell.controller.metrics.streams_refused._value.get()
            assert codes[grpc.StatusCode.RESOURCE_EXHAUSTED] == refusals
            assert len(registry) == limits.max_per_peer
            # The idle ones are ended by the controller, not by the client letting go.
            registry.limits = replace(limits, idle_timeout=1.0)
            outcomes = await asyncio.wait_for(
                asyncio.gather(*calls, return_exceptions=True), timeout=30.0
            )
        finally:
            release.set()
            await asyncio.gather(*calls, return_exceptions=True)
        ended = [o for o in outcomes if _code(o) not in REFUSED]
        assert [_code(o) for o in ended] == [grpc.StatusCode.DEADLINE_EXCEEDED] * len(ended)
        assert len(ended) == limits.max_per_peer
        # Their one reading each was stored before they were ended; a new stream is served.
        response = await stream(cell, [make_reading(1, 5, now_us(), sensor_id="fresh")])
        assert response.stored == 1
        assert cell.controller.metrics.streams_ended._value.get() == limits.max_per_peer


async def test_the_total_limit_refuses_streams_from_any_host(tmp_path: Path) -> None:
    release = asyncio.Event()
    limits = StreamLimits(max_streams=3)
    async with running_cell(tmp_path, with_manipulator=False, stream_limits=limits) as cell:
        calls = [
            asyncio.ensure_future(cell.telemetry.StreamReadings(_one_reading_then_hang(i, release)))
            for i in range(5)
        ]
        await asyncio.sleep(0.5)
        release.set()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
    codes = Counter(_code(outcome) for outcome in outcomes)
    assert codes == {grpc.StatusCode.OK: 3, grpc.StatusCode.RESOURCE_EXHAUSTED: 2}
    details = {o.details() for o in outcomes if isinstance(o, grpc.aio.AioRpcError)}
    assert details == {"too many open Telemetry streams (3); retry later"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_registry_counts_streams_per_host_and_in_all() -> None:
    registry = StreamRegistry(StreamLimits(max_streams=3, max_per_peer=2))
    a1, a2 = registry.admit("ipv4:10.0.0.1"), registry.admit("ipv4:10.0.0.1")
    with pytest.raises(StreamRefused, match=r"from ipv4:10\.0\.0\.1 \(2\)"):
        registry.admit("ipv4:10.0.0.1")
    registry.admit("ipv4:10.0.0.2")
    with pytest.raises(StreamRefused, match=r"too many open Telemetry streams \(3\)"):
        registry.admit("ipv4:10.0.0.3")
    registry.release(a1)
    registry.release(a1)  # idempotent
    registry.admit("ipv4:10.0.0.1")
    registry.release(a2)
    assert len(registry) == 2


def test_idle_and_old_streams_are_overdue() -> None:
    clock = FakeClock()
    registry = StreamRegistry(StreamLimits(idle_timeout=30, max_age=600), clock=clock)
    quiet = registry.admit("h")
    busy = registry.admit("h")
    for _ in range(59):
        clock.now += 10
        busy.messages += 1
        overdue = dict(registry.sweep())
        if quiet.ended is None:
            assert clock.now - quiet.opened < 30
    assert quiet.ended == "no message on the stream for 30 s"
    assert busy.ended is None
    assert quiet not in overdue  # ended once, not again at every sweep
    clock.now += 10
    busy.messages += 1
    assert [(s, r) for s, r in registry.sweep()] == [(busy, "stream open longer than 600 s")]


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:127.0.0.1:51234", "ipv4:127.0.0.1"),
        ("ipv6:[::1]:51234", "ipv6:[::1]"),
        ("unix:/tmp/socket", "unix:/tmp/socket"),
    ],
)
def test_peer_host_drops_the_port(peer: str, host: str) -> None:
    assert peer_host(peer) == host
