"""``python -m benchmarks.loadgen``: the load generator of the harness.

``--rate R`` paces each sender like a sensor (R messages/s spread evenly, one stream per
``--stream-seconds``); ``--rate 0`` floods: each sender keeps ``--inflight`` client streams of
``--stream-messages`` messages open at once, as fast as the server takes them. Readings count
as acknowledged when a response says they were stored. ``--exact-time`` (paced, one reading
a message) stamps each reading with the microsecond it is sent, for the latency runs.

It is driven over stdin, one command a line, each answered with one stdout line
``sent=N acked=N``: ``mark`` (counters now), ``stop`` (end the streams, wait for their
responses, answer, exit). It also exits by itself after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator

import grpc
import uvloop

from benchmarks.readings import ExactReadings, MessageTemplate
from workcell.logs import configure_logging
from workcell.v1 import telemetry_pb2

log = logging.getLogger("benchmarks.loadgen")

METHOD = "/workcell.v1.Telemetry/StreamReadings"


class Counters:
    """Messages written and readings acknowledged, over all senders."""

    def __init__(self) -> None:
        self.sent = 0
        self.acked = 0
        self.failed = 0

    def line(self) -> str:
        """The answer line of the stdin protocol."""
        return f"sent={self.sent} acked={self.acked} failed={self.failed}"


class Generator:
    """Senders over one channel each, until ``stopping`` is set."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.counters = Counters()
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        """Run every sender until stopped; wait for outstanding responses."""
        args = self.args
        tasks = []
        for index in range(args.senders):
            sensor_id = f"{args.prefix}-{index}"
            if args.rate > 0:
                tasks.append(asyncio.create_task(self._paced(sensor_id)))
            else:
                for _ in range(args.inflight):
                    tasks.append(asyncio.create_task(self._flood(sensor_id)))
        await asyncio.gather(*tasks)

    def _call(
        self, channel: grpc.aio.Channel
    ) -> grpc.aio.StreamUnaryMultiCallable[bytes, telemetry_pb2.StreamReadingsResponse]:
        # No request serializer: the messages are already bytes.
        return channel.stream_unary(
            METHOD,
            request_serializer=None,
            response_deserializer=telemetry_pb2.StreamReadingsResponse.FromString,
        )

    async def _finish(self, call: grpc.aio.StreamUnaryCall) -> None:  # type: ignore[type-arg]
        try:
            response = await call
        except grpc.aio.AioRpcError as exc:
            self.counters.failed += 1
            log.warning("stream failed: %s %s", exc.code().name, exc.details())
            await asyncio.sleep(0.1)
            return
        self.counters.acked += response.stored

    async def _flood(self, sensor_id: str) -> None:
        args = self.args
        template = MessageTemplate(sensor_id, batch=args.batch, count=args.stream_messages)
        async with grpc.aio.insecure_channel(args.target) as channel:
            call_factory = self._call(channel)
            while not self.stopping.is_set():
                messages = template.stream(uuid.uuid4().hex, int(time.time()))
                await self._finish(call_factory(self._writes(messages)))

    async def _writes(self, messages: list[bytes]) -> AsyncIterator[bytes]:
        counters = self.counters
        for message in messages:
            if self.stopping.is_set():
                return
            yield message
            counters.sent += 1

    async def _paced(self, sensor_id: str) -> None:
        args = self.args
        template = MessageTemplate(sensor_id, batch=args.batch, count=1000)
        exact = ExactReadings(sensor_id) if args.exact_time else None
        # Past the template's end a new boot id keeps the keys unique: one per pass over
        # it, derived from the pass's number, so a message reserved by a stream still
        # waiting to send gets its own pass's id whichever stream sends first.
        sender_run = uuid.uuid4()
        boots: dict[int, str] = {}
        interval = 1.0 / args.rate
        start = time.monotonic()
        next_index = 0
        pending: set[asyncio.Task[None]] = set()

        async def paced_writes(until: float) -> AsyncIterator[bytes]:
            nonlocal next_index
            while not self.stopping.is_set():
                index = next_index
                due = start + index * interval
                if due >= until:
                    return
                # Reserved before waiting: the next stream starts while this one waits
                # (for its due time, or at the yield) and must take the next index.
                next_index += 1
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if exact is not None:
                    yield exact.message(sender_run.hex, index + 1, time.time_ns())
                else:
                    passed, slot = divmod(index, len(template))
                    boot_id = boots.get(passed)
                    if boot_id is None:
                        # Once a pass (uuid5 hashes): at most two passes are ever in flight.
                        boot_id = boots[passed] = uuid.uuid5(sender_run, str(passed)).hex
                        boots.pop(passed - 2, None)
                    yield template.message(slot, boot_id, int(time.time()))
                self.counters.sent += 1

        async with grpc.aio.insecure_channel(args.target) as channel:
            call_factory = self._call(channel)
            stream_end = start
            while not self.stopping.is_set():
                stream_end += args.stream_seconds
                call = call_factory(paced_writes(stream_end))
                # Await the response beside the next stream, as a sensor does.
                task = asyncio.create_task(self._finish(call))
                pending.add(task)
                task.add_done_callback(pending.discard)
                await asyncio.sleep(max(0.0, stream_end - time.monotonic()))
            if pending:
                await asyncio.gather(*pending)


async def _serve_commands(generator: Generator) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if line == "mark":
            _answer(generator.counters.line())
        elif line in ("stop", ""):
            generator.stopping.set()
            return
        else:
            log.warning("unknown command %r", line)


def _answer(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def main_async(args: argparse.Namespace) -> None:
    """Generate until told to stop (or ``--max-seconds``), then answer the final counts."""
    generator = Generator(args)
    running = asyncio.create_task(generator.run())
    commands = asyncio.create_task(_serve_commands(generator))
    log.info(
        "generating to %s: senders=%d rate=%g batch=%d",
        args.target,
        args.senders,
        args.rate,
        args.batch,
    )
    await asyncio.wait(
        {running, commands}, timeout=args.max_seconds, return_when=asyncio.FIRST_COMPLETED
    )
    generator.stopping.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(running, 30)
    commands.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await commands
    _answer(generator.counters.line())
    log.info("stopped: %s", generator.counters.line())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The generator's flags (internal to the harness: no environment variables)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen")
    parser.add_argument("--target", required=True, help="HOST:PORT of a Telemetry server")
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--rate", type=float, default=0.0, help="messages/s per sender; 0 floods")
    parser.add_argument("--batch", type=int, default=1, help="readings per message")
    parser.add_argument("--stream-messages", type=int, default=500)
    parser.add_argument("--stream-seconds", type=float, default=1.0)
    parser.add_argument("--inflight", type=int, default=2, help="open streams per sender")
    parser.add_argument("--prefix", default="gen")
    parser.add_argument(
        "--exact-time",
        action="store_true",
        help="paced, one reading a message: stamp each with the microsecond it is sent "
        "(not the template's second); costs a serialization per message",
    )
    parser.add_argument("--max-seconds", type=float, default=900.0)
    return parser.parse_args(argv)


def main() -> None:
    """Entry point."""
    args = parse_args()
    configure_logging("INFO")
    if os.environ.get("BENCH_LOOP") == "asyncio":
        asyncio.run(main_async(args))
    else:
        uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
