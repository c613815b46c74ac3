"""A loopback proxy in front of PostgreSQL that loses one COMMIT or its reply.

It forwards every connection to the server unchanged and reads the client's
side of the PostgreSQL protocol as it goes. Once :meth:`CommitCutter.arm` is
called, the first ``COMMIT`` of a transaction that ran a marked insert (by
default ``INSERT INTO commands``, named in a Parse message and run by a Bind,
as asyncpg's prepared statements do) is lost:

- ``drop="reply"`` (issue 10, item 1): the COMMIT is passed to the server, its
  reply swallowed, and the connection cut both ways. The server has committed;
  the client cannot know it.
- ``drop="commit"``: the COMMIT never reaches the server and the client's side
  is cut; the server's side stays open, its transaction idle and uncommitted,
  until the proxy closes (or the server goes down). The client cannot know it
  did not commit.

While :attr:`CommitCutter.refusing` is set, new connections are cut at once
(a server that cannot be reached, without stopping it).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from types import TracebackType
from typing import Literal

__all__ = ["CommitCutter"]

_SSL_REQUEST = 80877103
_GSS_REQUEST = 80877104
_CANCEL_REQUEST = 80877102
COMMAND_INSERT = b"INSERT INTO commands"
READINGS_INSERT = b"INSERT INTO readings"


class _ClientStream:
    """The client's messages, parsed just enough to see a command's insert and its COMMIT."""

    def __init__(self, marker: bytes) -> None:
        self._marker = marker
        self._buffer = bytearray()
        self._started = False
        self._insert_statements: set[bytes] = set()
        self.inserted = False
        """The marked insert ran in the transaction now open."""

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """The complete messages in ``data`` (and what was left before), as (type, body)."""
        self._buffer += data
        messages = []
        while True:
            if not self._started:
                if len(self._buffer) < 4:
                    break
                (length,) = struct.unpack(">I", self._buffer[:4])
                if len(self._buffer) < length:
                    break
                body = bytes(self._buffer[4:length])
                del self._buffer[:length]
                code = struct.unpack(">I", body[:4])[0] if len(body) >= 4 else 0
                # SSL/GSS requests come before the startup message; anything else is it.
                if code not in (_SSL_REQUEST, _GSS_REQUEST, _CANCEL_REQUEST):
                    self._started = True
                messages.append((b"", body))
                continue
            if len(self._buffer) < 5:
                break
            kind = bytes(self._buffer[:1])
            (length,) = struct.unpack(">I", self._buffer[1:5])
            if len(self._buffer) < 1 + length:
                break
            body = bytes(self._buffer[5 : 1 + length])
            del self._buffer[: 1 + length]
            messages.append((kind, body))
        return messages

    def is_commit_after_insert(self, kind: bytes, body: bytes) -> bool:
        """Follow one message; True for the COMMIT of a transaction that ran the marked insert."""
        if kind == b"P":  # Parse: statement name, query
            name, query = body.split(b"\0")[:2]
            if self._marker in query:
                self._insert_statements.add(name)
        elif kind == b"B":  # Bind: portal name, statement name
            statement = body.split(b"\0")[1]
            if statement in self._insert_statements:
                self.inserted = True
        elif kind == b"Q":  # a simple query: BEGIN, COMMIT, ROLLBACK (asyncpg's transactions)
            query = body.rstrip(b"\0").strip().upper()
            if self._marker.upper() in query:
                self.inserted = True
            elif query.startswith((b"COMMIT", b"END")):
                committed_insert, self.inserted = self.inserted, False
                return committed_insert
            elif query.startswith((b"BEGIN", b"ROLLBACK", b"START")):
                self.inserted = False
        return False


class CommitCutter:
    """Listens on 127.0.0.1 (a free port) and forwards to the server at ``target_port``."""

    def __init__(
        self,
        target_port: int,
        *,
        marker: bytes = COMMAND_INSERT,
        drop: Literal["reply", "commit"] = "reply",
    ) -> None:
        self._target_port = target_port
        self._marker = marker
        self._drop = drop
        self.refusing = False
        """New connections are cut at once while this is set."""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._armed = False
        self.fired = asyncio.Event()
        """Set once a COMMIT (or its reply) was lost and the client's connection cut."""
        self.port = 0

    def arm(self) -> None:
        """Lose the next COMMIT (or its reply) of a transaction that ran the marked insert."""
        self._armed = True

    async def __aenter__(self) -> CommitCutter:
        self._server = await asyncio.start_server(self._connected, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._server.wait_closed()

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        if self.refusing:
            writer.transport.abort()
            self._tasks.discard(task)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        except OSError:
            writer.transport.abort()
            self._tasks.discard(task)
            return
        commit_sent = asyncio.Event()
        cut = asyncio.Event()
        upstream = asyncio.create_task(self._upstream(reader, up_writer, writer, commit_sent, cut))
        downstream = asyncio.create_task(self._downstream(up_reader, writer, commit_sent, cut))
        try:
            await asyncio.wait({upstream, downstream}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in (upstream, downstream):
                pump.cancel()
            writer.transport.abort()
            if cut.is_set() and self._drop == "commit":
                # The server is to see nothing more: no COMMIT, no disconnection either
                # (its transaction stays open and uncommitted until the proxy closes).
                self.fired.set()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.Event().wait()
            up_writer.transport.abort()
            if cut.is_set():
                self.fired.set()
            self._tasks.discard(task)

    async def _upstream(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: asyncio.StreamWriter,
        commit_sent: asyncio.Event,
        cut: asyncio.Event,
    ) -> None:
        stream = _ClientStream(self._marker)
        while data := await reader.read(65536):
            trigger = False
            before = bytearray()  # the messages ahead of the COMMIT, as sent
            for kind, body in stream.feed(data):
                if stream.is_commit_after_insert(kind, body) and self._armed:
                    trigger = True
                elif not trigger and kind:
                    before += kind + struct.pack(">I", len(body) + 4) + body
            if trigger and self._drop == "commit":
                self._armed = False
                writer.write(bytes(before))
                await writer.drain()
                cut.set()
                client.transport.abort()
                return
            if trigger:
                self._armed = False
                commit_sent.set()
            writer.write(data)
            await writer.drain()
            if trigger:
                # Nothing more goes to the server: it is to see the COMMIT and then a cut.
                await asyncio.Event().wait()

    async def _downstream(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        commit_sent: asyncio.Event,
        cut: asyncio.Event,
    ) -> None:
        while data := await reader.read(65536):
            if commit_sent.is_set():
                # The server's answer to the COMMIT: committed, and the client never hears it.
                cut.set()
                return
            writer.write(data)
            await writer.drain()
