"""``python -m benchmarks.transport_server``: the transport ceiling.

A bare ``grpc.aio`` server for the same ``workcell.v1.Telemetry`` contract that parses each
message, counts its readings and answers ``stored=count``: no validation, no storage. What the
controller does beyond this is its own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator

import grpc
import uvloop

from workcell.logs import configure_logging
from workcell.v1 import telemetry_pb2, telemetry_pb2_grpc

log = logging.getLogger("benchmarks.transport_server")


class CountingTelemetry(telemetry_pb2_grpc.TelemetryServicer):
    """Counts the readings of each stream."""

    def __init__(self) -> None:
        self.total = 0

    async def StreamReadings(
        self,
        request_iterator: AsyncIterator[telemetry_pb2.StreamReadingsRequest],
        context: grpc.aio.ServicerContext[
            telemetry_pb2.StreamReadingsRequest, telemetry_pb2.StreamReadingsResponse
        ],
    ) -> telemetry_pb2.StreamReadingsResponse:
        count = 0
        async for request in request_iterator:
            count += len(request.readings)
        self.total += count
        return telemetry_pb2.StreamReadingsResponse(stored=count)


async def serve(listen: str) -> None:
    """Serve until SIGTERM/SIGINT."""
    server = grpc.aio.server()
    servicer = CountingTelemetry()
    telemetry_pb2_grpc.add_TelemetryServicer_to_server(servicer, server)
    port = server.add_insecure_port(listen)
    await server.start()
    host = listen.rsplit(":", 1)[0]
    log.info("listening on %s:%d", host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(2.0)
    log.info("stopped: %d readings counted", servicer.total)


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.transport_server")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (loopback)")
    args = parser.parse_args()
    configure_logging("INFO")
    if os.environ.get("BENCH_LOOP") == "asyncio":
        asyncio.run(serve(args.listen))
    else:
        uvloop.run(serve(args.listen))


if __name__ == "__main__":
    main()
