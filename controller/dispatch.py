"""The link to the manipulator: one TCP connection, commands in id order, acks back.

Every command stays pending until its CommandAck arrives. On a lost
connection the link reconnects with capped exponential backoff (with jitter)
and resends every pending command in order; the manipulator acknowledges a
resend without journaling it twice, so delivery is exactly once in effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl as ssl_module
from collections.abc import Awaitable, Callable

from google.protobuf.message import DecodeError

from controller.metrics import ControllerMetrics
from controller.records import CommandRecord
from workcell.flags import Address
from workcell.framing import FrameDecoder, FrameError, encode_frame
from workcell.status import status_from_name
from workcell.timeconv import to_timestamp
from workcell.v1 import command_pb2

__all__ = ["ManipulatorLink", "command_message"]

log = logging.getLogger(__name__)

AckCallback = Callable[[int], Awaitable[None]]


def command_message(record: CommandRecord) -> command_pb2.Command:
    """The wire message for a recorded command."""
    return command_pb2.Command(
        id=record.id,
        status=status_from_name(record.status),  # type: ignore[arg-type]
        window_start=to_timestamp(record.window_start),
        window_end=to_timestamp(record.window_end),
        issued_at=to_timestamp(record.issued_at),
    )


class ManipulatorLink:
    """Sends commands to the manipulator and reports their acknowledgements."""

    def __init__(
        self,
        address: Address,
        *,
        on_ack: AckCallback,
        initial_backoff: float = 0.1,
        max_backoff: float = 5.0,
        connect_timeout: float = 5.0,
        ssl: ssl_module.SSLContext | None = None,
        server_hostname: str | None = None,
        metrics: ControllerMetrics | None = None,
    ) -> None:
        self._address = address
        self._ssl = ssl
        # The name checked in the manipulator's certificate: by default the
        # host dialled (an IP address is matched against the IP SANs).
        self._server_hostname = (server_hostname or address.host) if ssl is not None else None
        self._on_ack = on_ack
        self._metrics = metrics if metrics is not None else ControllerMetrics()
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._connect_timeout = connect_timeout
        # Insertion order is id order: commands are enqueued as they are issued.
        self._pending: dict[int, bytes] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.connected = False
        self._closing = False

    @property
    def pending(self) -> list[int]:
        """Ids of the commands not yet acknowledged, in order."""
        return list(self._pending)

    def enqueue(self, record: CommandRecord) -> None:
        """Queue a recorded command for delivery."""
        if self._pending and record.id <= next(reversed(self._pending)):
            raise ValueError(f"command {record.id} enqueued out of order")
        self._pending[record.id] = encode_frame(command_message(record))
        self._metrics.commands_pending.set(len(self._pending))
        self._wake.set()

    async def start(self) -> None:
        """Start connecting and delivering in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="manipulator-link")

    async def close(self) -> None:
        """Stop delivering (pending commands stay in the database); idempotent."""
        if self._task is not None:
            # The flag as well as the cancel: on Python 3.11 wait_for can
            # swallow a cancel that lands as a connect fails, and the retry
            # loop would then go on forever.
            self._closing = True
            while not self._task.done():
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait({self._task}, timeout=1.0)
            self._task = None
        self.connected = False
        self._metrics.manipulator_link_up.set(0)

    async def _run(self) -> None:
        backoff = self._initial_backoff
        failing = False
        while not self._closing:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        self._address.host,
                        self._address.port,
                        ssl=self._ssl,
                        server_hostname=self._server_hostname,
                    ),
                    self._connect_timeout,
                )
            except (OSError, TimeoutError) as exc:
                if not failing:
                    log.warning("cannot reach the manipulator at %s: %s", self._address, exc)
                    failing = True
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, self._max_backoff)
                continue
            failing = False
            backoff = self._initial_backoff
            self.connected = True
            self._metrics.manipulator_link_up.set(1)
            log.info(
                "connected to the manipulator at %s (%d pending)", self._address, len(self._pending)
            )
            try:
                await self._serve(reader, writer)
            except (OSError, FrameError, DecodeError, ConnectionError) as exc:
                log.warning("lost the manipulator connection: %s", exc)
            finally:
                self.connected = False
                self._metrics.manipulator_link_up.set(0)
                self._metrics.manipulator_reconnects.inc()
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        acks = asyncio.create_task(self._read_acks(reader), name="manipulator-acks")
        try:
            sent_up_to = 0
            while True:
                # Clear before scanning, so a command enqueued meanwhile wakes us.
                self._wake.clear()
                for command_id, frame in list(self._pending.items()):
                    if command_id > sent_up_to:
                        writer.write(frame)
                        sent_up_to = command_id
                await writer.drain()
                woken = asyncio.create_task(self._wake.wait())
                await asyncio.wait({woken, acks}, return_when=asyncio.FIRST_COMPLETED)
                woken.cancel()
                if acks.done():
                    acks.result()  # raises the reader's error
                    raise ConnectionError("the manipulator closed the connection")
        finally:
            acks.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await acks

    async def _read_acks(self, reader: asyncio.StreamReader) -> None:
        decoder = FrameDecoder()
        while data := await reader.read(65536):
            for payload in decoder.feed(data):
                command_id = command_pb2.CommandAck.FromString(payload).command_id
                if self._pending.pop(command_id, None) is None:
                    log.debug("ack for command %d that is not pending", command_id)
                    continue
                self._metrics.commands_acknowledged.inc()
                self._metrics.commands_pending.set(len(self._pending))
                log.info("command %d acknowledged", command_id, extra={"command_id": command_id})
                try:
                    await self._on_ack(command_id)
                except Exception as exc:
                    # The manipulator has the command; only our record of the
                    # ack is missing. Keep the link up rather than resend.
                    log.error("could not record the ack of command %d: %s", command_id, exc)
