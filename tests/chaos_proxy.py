"""A loopback TCP proxy for fault tests: it forwards bytes, and cuts or stalls on demand.

``ChaosProxy(target_port)`` listens on 127.0.0.1 (port 0 unless told) and
forwards every connection to ``127.0.0.1:target_port``, both ways.
:meth:`ChaosProxy.drop_all` aborts every current connection (a reset on both
sides, as when a network path dies); :meth:`ChaosProxy.stall` stops forwarding
in both directions without closing anything, until :meth:`ChaosProxy.resume`.
While stalled, each pump holds at most one chunk and stops reading, so TCP
flow control pushes back on the sender as a dead-but-open path would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType

__all__ = ["ChaosProxy"]

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024


class _Link:
    """One proxied connection: the client side, the target side and their two pumps."""

    def __init__(
        self,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        target: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        flowing: asyncio.Event,
    ) -> None:
        self._client_reader, self.client_writer = client
        self._target_reader, self.target_writer = target
        self._flowing = flowing
        self.pumps = [
            asyncio.create_task(self._pump(self._client_reader, self.target_writer)),
            asyncio.create_task(self._pump(self._target_reader, self.client_writer)),
        ]

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(_CHUNK):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
            # Pass a half-close on, so the other side sees the end of stream.
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            self.abort()

    def abort(self) -> None:
        """Reset both sides at once (no FIN, no flush)."""
        for writer in (self.client_writer, self.target_writer):
            writer.transport.abort()

    async def finished(self) -> None:
        await asyncio.gather(*self.pumps, return_exceptions=True)


class ChaosProxy:
    """Forwards 127.0.0.1:<port> to 127.0.0.1:<target_port>, breakable on demand.

    Use ``async with ChaosProxy(target_port) as proxy:`` (or start()/close());
    :attr:`port` is the port to give clients.
    """

    def __init__(self, target_port: int, *, listen_port: int = 0, host: str = "127.0.0.1") -> None:
        self.host = host
        self.target_port = target_port
        self._listen_port = listen_port
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._links: set[_Link] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._handlers: set[asyncio.Task[None]] = set()
        self.accepted = 0
        """Connections accepted so far."""
        self.dropped = 0
        """Connections cut by :meth:`drop_all`."""

    @property
    def port(self) -> int:
        """The port clients connect to (after :meth:`start`)."""
        if self._port is None:
            raise RuntimeError("the proxy is not started")
        return self._port

    @property
    def connections(self) -> int:
        """Connections currently proxied."""
        return len(self._links)

    @property
    def stalled(self) -> bool:
        """Whether forwarding is stopped."""
        return not self._flowing.is_set()

    async def start(self) -> None:
        """Bind and start accepting."""
        self._server = await asyncio.start_server(self._on_connect, self.host, self._listen_port)
        self._port = int(self._server.sockets[0].getsockname()[1])

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.accepted += 1
        try:
            try:
                target = await asyncio.open_connection(self.host, self.target_port)
            except OSError:
                # Nothing listens behind the proxy: the client sees a reset, as it would directly.
                writer.transport.abort()
                return
            link = _Link((reader, writer), target, self._flowing)
            self._links.add(link)
            try:
                await link.finished()
            finally:
                self._links.discard(link)
                for side in (link.client_writer, link.target_writer):
                    side.close()
        except asyncio.CancelledError:
            # Only close() cancels handlers. Ending normally keeps asyncio's
            # start_server callback from logging the cancellation as an error.
            pass
        finally:
            self._handlers.discard(task)

    def drop_all(self) -> int:
        """Reset every current connection; return how many were cut."""
        links = list(self._links)
        for link in links:
            link.abort()
        self.dropped += len(links)
        log.info("dropped %d connections", len(links))
        return len(links)

    def stall(self) -> None:
        """Stop forwarding in both directions (connections stay open)."""
        self._flowing.clear()

    def resume(self) -> None:
        """Forward again what was held and everything after it."""
        self._flowing.set()

    async def stall_for(self, seconds: float) -> None:
        """Stall, wait ``seconds``, resume."""
        self.stall()
        try:
            await asyncio.sleep(seconds)
        finally:
            self.resume()

    async def close(self) -> None:
        """Stop accepting and cut every connection; idempotent."""
        if self._server is not None:
            self._server.close()
        self.resume()
        for link in list(self._links):
            link.abort()
        handlers = list(self._handlers)
        for handler in handlers:
            handler.cancel()
        for handler in handlers:
            with contextlib.suppress(asyncio.CancelledError):
                await handler
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> ChaosProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
