"""The original design as a reference: HTTP/1.1 + JSON, one POST per reading.

``python -m benchmarks.http_reference serve --listen 127.0.0.1:0`` runs a FastAPI app under
uvicorn (uvloop and httptools: its fastest set-up, so the comparison flatters it); each POST
is validated by a pydantic model and counted, not stored. ``python -m benchmarks.http_reference
load --target HOST:PORT`` is its paced client: aiohttp with keep-alive, one sensor per
session, one reading per POST, driven over stdin like ``benchmarks.loadgen``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
import uuid
from typing import Any

import aiohttp
import uvicorn
import uvloop
from fastapi import FastAPI
from pydantic import BaseModel

from workcell.logs import configure_logging
from workcell.timeconv import now_us, to_iso

log = logging.getLogger("benchmarks.http_reference")


class ReadingIn(BaseModel):
    """One reading, as the original design posted it."""

    sensor_id: str
    boot_id: str
    seq: int
    payload: int
    timestamp: str


def make_app() -> FastAPI:
    """The FastAPI app: POST /readings counts one reading."""
    app = FastAPI()
    counted = [0]

    @app.post("/readings")
    async def post_reading(reading: ReadingIn) -> dict[str, int]:
        counted[0] += 1
        return {"stored": 1}

    return app


class _Server(uvicorn.Server):
    """Logs the harness's ``listening on HOST:PORT`` line with the bound port."""

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets)
        for server in getattr(self, "servers", []):
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                log.info("listening on %s:%d", host, port)


def serve(listen: str) -> None:
    """Run uvicorn until SIGTERM/SIGINT."""
    host, port = listen.rsplit(":", 1)
    config = uvicorn.Config(
        make_app(),
        host=host,
        port=int(port),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
    _Server(config).run()


async def load(args: argparse.Namespace) -> None:
    """Paced senders until ``stop`` on stdin (or ``--max-seconds``)."""
    counters = {"sent": 0, "acked": 0, "failed": 0}
    stopping = asyncio.Event()
    url = f"http://{args.target}/readings"

    async def sender(index: int) -> None:
        boot_id = uuid.uuid4().hex
        interval = 1.0 / args.rate
        start = time.monotonic()
        seq = 0
        connector = aiohttp.TCPConnector(limit=1)  # one keep-alive connection per sensor
        async with aiohttp.ClientSession(connector=connector) as session:
            while not stopping.is_set():
                delay = start + seq * interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                seq += 1
                body = {
                    "sensor_id": f"http-{index}",
                    "boot_id": boot_id,
                    "seq": seq,
                    "payload": seq % 1000,
                    "timestamp": to_iso(now_us()),
                }
                counters["sent"] += 1
                try:
                    async with session.post(url, json=body) as response:
                        await response.read()
                        if response.status == 200:
                            counters["acked"] += 1
                        else:
                            counters["failed"] += 1
                except aiohttp.ClientError:
                    counters["failed"] += 1
                    await asyncio.sleep(0.1)

    def line() -> str:
        return " ".join(f"{key}={value}" for key, value in counters.items())

    async def commands() -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            text = (await reader.readline()).decode().strip()
            if text == "mark":
                _answer(line())
            elif text in ("stop", ""):
                return

    senders = [asyncio.create_task(sender(i)) for i in range(args.senders)]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(commands(), args.max_seconds)
    stopping.set()
    await asyncio.wait(senders, timeout=10)
    _answer(line())


def _answer(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def main() -> None:
    """Entry point: ``serve`` or ``load``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.http_reference")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_parser = sub.add_parser("serve")
    serve_parser.add_argument("--listen", default="127.0.0.1:0")
    load_parser = sub.add_parser("load")
    load_parser.add_argument("--target", required=True)
    load_parser.add_argument("--senders", type=int, default=8)
    load_parser.add_argument("--rate", type=float, default=300.0)
    load_parser.add_argument("--max-seconds", type=float, default=900.0)
    args = parser.parse_args()
    configure_logging("INFO")
    if args.command == "serve":
        serve(args.listen)
    else:
        uvloop.run(load(args))


if __name__ == "__main__":
    main()
