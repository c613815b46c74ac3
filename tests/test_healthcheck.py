"""``python -m workcell.healthcheck`` against a real gRPC health service on loopback."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from tests.processes import ROOT, free_port


@pytest.fixture
async def health_server() -> AsyncIterator[tuple[int, HealthServicer]]:
    server = grpc.aio.server()
    servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port, servicer
    finally:
        await server.stop(None)


async def probe(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workcell.healthcheck",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    _, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, err.decode()


async def test_serving_exits_0(health_server: tuple[int, HealthServicer]) -> None:
    port, servicer = health_server
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert await probe(f"127.0.0.1:{port}") == (0, "")


async def test_not_serving_exits_1(health_server: tuple[int, HealthServicer]) -> None:
    port, servicer = health_server
    await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    code, err = await probe(f"127.0.0.1:{port}")
    assert code == 1
    assert "NOT_SERVING" in err
    assert len(err.splitlines()) == 1


async def test_nothing_listening_exits_1() -> None:
    code, err = await probe(f"127.0.0.1:{free_port()}", "--timeout", "2")
    assert code == 1
    assert "UNAVAILABLE" in err


async def test_bad_address_exits_2() -> None:
    code, err = await probe("no-port-here")
    assert code == 2
    assert "HOST:PORT" in err
