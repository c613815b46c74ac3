"""The manipulator's TCP server: frames in, journal lines to disk, acks out.

Each connection is read with a :class:`~workcell.framing.FrameDecoder`; every
command is journaled (durably, off the event loop, one at a time) before its
``CommandAck`` is written. A bad frame closes only its own connection. A
command the journal refuses (a different command under a journaled origin
and id) gets a ``CommandAck`` carrying the error, and the connection goes on;
the commands after it on that connection are refused too until it is
accepted, so a pipelining controller's later commands never overtake it.
A command from an epoch below its origin's (a deposed leader's, even a
resend) is refused with the fencing epoch in the ack's
``superseded_by_epoch``, one warning per deposed epoch.
With TLS, each connection does its own handshake, so a failed one is logged
(rate-limited: :mod:`manipulator.handshakes`) instead of vanishing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl as ssl_module
import time
from types import TracebackType

from manipulator.errors import (
    BadCommand,
    CommandFenced,
    CommandRefused,
    JournalDisplaced,
    JournalError,
    RefusalReason,
)
from manipulator.handshakes import HANDSHAKE_LOG_INTERVAL, LogThrottle, handshake_failure_reason
from manipulator.journal import Journal, JournalRecord, parse_command
from manipulator.metrics import ManipulatorMetrics
from manipulator.records import shown_origin
from workcell.flags import Address
from workcell.framing import MAX_FRAME_BYTES, FrameDecoder, FrameError, encode_frame
from workcell.timeconv import Clock, now_us
from workcell.v1 import command_pb2

__all__ = ["ManipulatorServer"]

log = logging.getLogger(__name__)

# Bytes asked of the socket per read; with the decoder's limit this bounds
# what one connection can make us hold.
_READ_CHUNK = 64 * 1024
# On close, how long a connection may take to finish the command it is
# handling (journal write and ack) before it is cancelled.
_CLOSE_GRACE_SECONDS = 5.0


def _timed_append(journal: Journal, record: JournalRecord) -> tuple[bool, float]:
    """``journal.append(record)`` and how long it took (seconds): run in a worker thread."""
    started = time.perf_counter()
    journaled = journal.append(record)
    return journaled, time.perf_counter() - started


def _peer_name(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return str(Address(str(peer[0]), int(peer[1])))
    return str(peer)


class _Connection:
    """One client: reads frames, hands each command to the server, writes acks."""

    def __init__(
        self,
        server: ManipulatorServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self._server = server
        self._reader = reader
        self._writer = writer
        self.peer = _peer_name(writer)
        self._decoder = FrameDecoder(max_bytes=server.max_frame_bytes)
        self._reading = False
        self._stopping = False
        self.task: asyncio.Task[None] | None = None
        # Per origin, the lowest id refused on this connection: later ids of
        # that origin wait behind it (commands are journaled in order).
        self._refused: dict[str, int] = {}

    def stop(self) -> None:
        """Ask the connection to end; a command being handled is finished first."""
        self._stopping = True
        if self._reading and self.task is not None:
            # Waiting for bytes, nothing half-done: safe to interrupt.
            self.task.cancel()

    async def run(self) -> None:
        """Serve until EOF, a bad frame, a timeout or :meth:`stop`; then close."""
        if self._server.ssl is not None and not await self._handshake(self._server.ssl):
            return
        try:
            await self._serve()
        except ConnectionError as exc:
            log.info("%s: connection lost: %s", self.peer, exc)
        finally:
            await self._close()

    async def _handshake(self, context: ssl_module.SSLContext) -> bool:
        """TLS on this connection; False (reported to the server, connection closed) if it fails.

        Done here rather than by ``start_server(ssl=...)``, where asyncio
        drops a failed handshake without a word (an ``SSLError`` is an
        ``OSError``, which it logs only in debug mode).
        """
        self._reading = True  # nothing half-done: stop() may interrupt it
        try:
            await self._writer.start_tls(context, ssl_handshake_timeout=self._server.read_timeout)
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            self._server.handshake_failed(self.peer, exc)
            # asyncio has closed the socket; the stream never hears of it,
            # so do not wait for it to close (that would wait forever).
            self._writer.transport.abort()
            return False
        finally:
            self._reading = False
        return True

    async def _close(self) -> None:
        self._writer.close()
        try:
            # close() first flushes what is buffered; a peer that does not
            # read must not hold us here forever.
            await asyncio.wait_for(self._writer.wait_closed(), self._server.read_timeout)
        except (ConnectionError, TimeoutError):
            self._writer.transport.abort()

    async def _read(self) -> bytes | None:
        """The next bytes (b"" at EOF); None when a partial frame timed out."""
        self._reading = True
        try:
            if self._decoder.buffered == 0:
                # Between frames a connection may stay idle as long as it likes:
                # the controller keeps one open and sends a command per period.
                return await self._reader.read(_READ_CHUNK)
            return await asyncio.wait_for(self._reader.read(_READ_CHUNK), self._server.read_timeout)
        except TimeoutError:
            log.warning(
                "%s: %d bytes of an unfinished frame and nothing more for %gs; "
                "closing the connection",
                self.peer,
                self._decoder.buffered,
                self._server.read_timeout,
            )
            return None
        finally:
            self._reading = False

    async def _serve(self) -> None:
        log.info("%s: connected", self.peer)
        while not self._stopping:
            data = await self._read()
            if data is None:
                return
            if not data:
                if self._decoder.buffered:
                    log.warning(
                        "%s: disconnected in the middle of a frame (%d bytes of it received)",
                        self.peer,
                        self._decoder.buffered,
                    )
                else:
                    log.info("%s: disconnected", self.peer)
                return
            error: FrameError | None = None
            try:
                payloads = self._decoder.feed(data)
            except FrameError as exc:
                # Frames completed before the bad one are still served.
                payloads, error = exc.payloads, exc
            for payload in payloads:
                if not await self._handle(payload):
                    return
            if error is not None:
                self._server.metrics.bad_frames.inc()
                log.error("bad frame from %s: %s; closing the connection", self.peer, error)
                return

    async def _handle(self, payload: bytes) -> bool:
        """Journal and acknowledge (or refuse) one command; False when the connection must close."""
        metrics = self._server.metrics
        try:
            record = parse_command(payload, received_at=self._server.clock())
        except BadCommand as exc:
            metrics.bad_frames.inc()
            log.error("bad frame from %s: %s; closing the connection", self.peer, exc)
            return False
        metrics.commands_received.inc()
        blocked = self._refused.get(record.origin)
        # A deposed sender is told so whatever waits on this connection: it
        # must stop, not wait (the journal checks the epoch again, under its lock).
        if (
            blocked is not None
            and record.command_id > blocked
            and record.epoch >= self._server.journal.epoch_of(record.origin)
        ):
            return await self._refuse_behind(record, blocked)
        try:
            journaled = await self._server.journal_record(record)
        except CommandFenced as exc:
            # Not an ordering problem of this connection: nothing is blocked behind it.
            metrics.commands_refused.labels(reason=exc.reason).inc()
            self._server.fenced(self.peer, exc)
            return await self._reply(record.command_id, str(exc), fence=exc.highest_epoch)
        except CommandRefused as exc:
            metrics.commands_refused.labels(reason=exc.reason).inc()
            log.error(
                "%s: %s; not journaled",
                self.peer,
                exc,
                extra={"command_id": record.command_id, "origin": record.origin, "refused": True},
            )
            # At or below any id refused before (the others were refused above).
            self._refused[record.origin] = record.command_id
            return await self._reply(record.command_id, str(exc))
        except JournalDisplaced:
            metrics.commands_failed.labels(reason="journal_displaced").inc()
            # The server said so once for the episode; closing without an
            # ack keeps the command pending in the controller, which resends it.
            log.debug(
                "%s: command %d not acknowledged (the journal is not at its path); "
                "closing the connection",
                self.peer,
                record.command_id,
            )
            return False
        except JournalError as exc:
            metrics.commands_failed.labels(reason="journal_error").inc()
            log.error(
                "%s: command %d not journaled, not acknowledged: %s; closing the connection",
                self.peer,
                record.command_id,
                exc,
            )
            return False
        if blocked == record.command_id:
            del self._refused[record.origin]
        if journaled:
            metrics.commands_journaled.inc()
            log.info(
                "command %d: status=%s window=[%s, %s) issued=%s",
                record.command_id,
                record.status,
                record.window_start,
                record.window_end,
                record.issued_at,
                extra={
                    "command_id": record.command_id,
                    "status": record.status,
                    "origin": record.origin,
                },
            )
        else:
            metrics.commands_duplicate.inc()
            log.info(
                "command %d: duplicate (already journaled), acknowledged again",
                record.command_id,
                extra={"command_id": record.command_id, "duplicate": True},
            )
        return await self._reply(record.command_id)

    async def _refuse_behind(self, record: JournalRecord, blocked: int) -> bool:
        reason = (
            f"command {record.command_id} of origin {shown_origin(record.origin)} refused: "
            f"command {blocked} of that origin was refused on this connection, and commands "
            "are journaled in order"
        )
        # The refusal of `blocked` was logged as an error; these follow from it.
        self._server.metrics.commands_refused.labels(reason=RefusalReason.BEHIND_REFUSED).inc()
        log.info("%s: %s", self.peer, reason, extra={"command_id": record.command_id})
        return await self._reply(record.command_id, reason)

    async def _reply(self, command_id: int, error: str = "", *, fence: int = 0) -> bool:
        ack = command_pb2.CommandAck(command_id=command_id, error=error, superseded_by_epoch=fence)
        self._writer.write(encode_frame(ack))
        await self._writer.drain()
        return True


class ManipulatorServer:
    """The manipulator as an in-process asyncio server.

    ``journal`` is a :class:`Journal` (the caller keeps ownership) or a path
    (opened at :meth:`start`, closed at :meth:`close`). ``port=0`` binds any
    free port; :attr:`port` tells which. ``clock`` gives ``received_at``.
    With ``ssl`` (a server context) only TLS connections are accepted; a
    client that fails the handshake (plaintext, or a certificate the context
    does not trust) is closed before it can send a command, and logged with
    its peer and reason: the first at once, then at most one line per
    ``handshake_log_interval`` seconds, counting the others. ``metrics``
    (a new :class:`ManipulatorMetrics` by default) counts commands and
    connections; serving them over HTTP is the caller's (``__main__``).
    Use ``async with ManipulatorServer(...) as server:`` or start()/close().
    """

    def __init__(
        self,
        *,
        journal: Journal | str | os.PathLike[str],
        host: str = "127.0.0.1",
        port: int = 0,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        read_timeout: float = 10.0,
        clock: Clock = now_us,
        ssl: ssl_module.SSLContext | None = None,
        handshake_log_interval: float = HANDSHAKE_LOG_INTERVAL,
        metrics: ManipulatorMetrics | None = None,
    ) -> None:
        if read_timeout <= 0:
            raise ValueError("read_timeout must be > 0")
        if max_frame_bytes < 1:
            raise ValueError("max_frame_bytes must be at least 1")
        self.host = host
        self.max_frame_bytes = max_frame_bytes
        self.read_timeout = read_timeout
        self.clock = clock
        self.ssl = ssl
        self.metrics = metrics if metrics is not None else ManipulatorMetrics()
        self._requested_port = port
        self._journal_arg = journal
        self._journal: Journal | None = journal if isinstance(journal, Journal) else None
        self._owns_journal = False
        self._journal_lock = asyncio.Lock()
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._connections: set[_Connection] = set()
        self._closing = False
        self._close_task: asyncio.Task[None] | None = None
        self._handshake_log = LogThrottle(handshake_log_interval)
        # What is wrong with the journal's path (JournalDisplaced.problem); None: nothing.
        self._displaced: str | None = None
        self._last_handshake_failure = ""
        # Per origin, the epoch that fences and the deposed epochs already
        # warned about under it: one warning per deposed epoch, not per frame.
        self._fence_warned: dict[str, tuple[int, set[int]]] = {}

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        if self._port is None:
            raise RuntimeError("the server is not started")
        return self._port

    @property
    def journal(self) -> Journal:
        """The journal commands are written to (after :meth:`start` when given a path)."""
        if self._journal is None:
            raise RuntimeError("the server is not started")
        return self._journal

    async def start(self) -> None:
        """Open the journal if needed, bind, and log ``listening on HOST:PORT``."""
        if self._server is not None or self._closing:
            raise RuntimeError("the server was already started")
        if self._journal is None:
            assert not isinstance(self._journal_arg, Journal)
            self._journal = await asyncio.to_thread(Journal, self._journal_arg)
            self._owns_journal = True
        journal = self._journal
        last_origin = journal.last_origin
        log.info(
            "journal %s: last command id %d (origin %s, epoch %d; %d origins)",
            journal.path,
            journal.last_id,
            shown_origin(last_origin) if last_origin is not None else "none",
            journal.epoch_of(last_origin) if last_origin is not None else 0,
            len(journal.origins),
        )
        try:
            # Plain TCP: each connection does its own TLS handshake
            # (_Connection._handshake), so a failed one can be logged.
            self._server = await asyncio.start_server(
                self._on_connect, self.host, self._requested_port
            )
        except BaseException:
            await self._close_journal()
            raise
        host, port = self._server.sockets[0].getsockname()[:2]
        self._port = int(port)
        if self.ssl is not None:
            mutual = self.ssl.verify_mode == ssl_module.CERT_REQUIRED
            log.info("TLS only%s", ", client certificates required" if mutual else "")
        log.info("listening on %s", Address(str(host), self._port))

    async def journal_record(self, record: JournalRecord) -> bool:
        """Journal ``record`` durably; False when it is a resend of a journaled command.

        Raises :class:`CommandRefused` for a different command under a
        journaled (origin, id). One write at a time, in arrival order (the
        lock is FIFO); the write runs in a thread so the event loop never
        waits on the disk. A change of origin is logged as a warning: a
        controller on another database than the last one.
        """
        journal = self.journal
        async with self._journal_lock:
            previous = journal.last_origin
            known = journal.knows_origin(record.origin)
            epoch_before = journal.epoch_of(record.origin)
            try:
                journaled, seconds = await asyncio.to_thread(_timed_append, journal, record)
            except JournalDisplaced as exc:
                self._journal_displaced(exc)
                raise
            except CommandRefused:
                self._journal_sound()  # the path was checked first: the journal is fine
                raise
            self._journal_sound()
        if journaled:
            self.metrics.journal_fsync.observe(seconds)
        if record.epoch > epoch_before:
            log.info(
                "commands of origin %s now come from epoch %d (before: %d): a new leader; "
                "the lower epochs of that origin are fenced from now on",
                shown_origin(record.origin),
                record.epoch,
                epoch_before,
                extra={"origin": record.origin, "epoch": record.epoch},
            )
        if journaled and previous is not None and record.origin != previous:
            log.warning(
                "commands now come from origin %s%s (last journaled origin %s): %s",
                shown_origin(record.origin),
                " again" if known else "",
                shown_origin(previous),
                "two controllers, or an older database back in service?"
                if known
                else "a new controller database",
                extra={"origin": record.origin, "previous_origin": previous},
            )
        return journaled

    def fenced(self, peer: str, exc: CommandFenced) -> None:
        """Log a deposed sender's refused command: a warning once per deposed epoch."""
        fence, warned = self._fence_warned.get(exc.origin, (0, set()))
        if fence != exc.highest_epoch:
            fence, warned = exc.highest_epoch, set()  # a new fence: new episodes
            self._fence_warned[exc.origin] = (fence, warned)
        extra = {
            "command_id": exc.command_id,
            "origin": exc.origin,
            "epoch": exc.epoch,
            "superseded_by_epoch": exc.highest_epoch,
        }
        if exc.epoch in warned:
            log.debug("%s: %s; not journaled", peer, exc, extra=extra)
            return
        warned.add(exc.epoch)
        log.warning(
            "%s: %s; not journaled (later commands of epoch %d are refused too, logged at DEBUG)",
            peer,
            exc,
            exc.epoch,
            extra=extra,
        )

    def _journal_displaced(self, exc: JournalDisplaced) -> None:
        """Say loudly, once per episode (and when it changes), that nothing is acknowledged."""
        if exc.problem != self._displaced:
            self._displaced = exc.problem
            log.error("%s", exc, extra={"journal_problem": exc.problem})

    def _journal_sound(self) -> None:
        if self._displaced is not None:
            log.warning(
                "journal %s is at its path again: journaling and acknowledging again "
                "(the commands refused meanwhile arrive as the controller resends them)",
                self.journal.path,
            )
            self._displaced = None

    def handshake_failed(self, peer: str, exc: BaseException) -> None:
        """Log a failed TLS handshake: the first at once, then at most one a minute."""
        reason = handshake_failure_reason(exc)
        self._last_handshake_failure = f"{peer}: {reason}"
        skipped = self._handshake_log.admit()
        if skipped is None:
            log.debug("%s: TLS handshake failed: %s", peer, reason)
            return
        log.warning(
            "%s: TLS handshake failed: %s; connection closed%s",
            peer,
            reason,
            f" ({skipped} more failed handshakes since the last such line)" if skipped else "",
            extra={"peer": peer},
        )

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing:
            writer.transport.abort()
            return
        connection = _Connection(self, reader, writer)
        connection.task = asyncio.current_task()
        self._connections.add(connection)
        self.metrics.connections.inc()
        self.metrics.open_connections.set(len(self._connections))
        try:
            await connection.run()
        except asyncio.CancelledError:
            # Only close() cancels connections; it is waiting for this one.
            pass
        finally:
            self._connections.discard(connection)
            self.metrics.open_connections.set(len(self._connections))

    async def close(self) -> None:
        """Stop accepting, let connections finish their command, close the journal.

        Idempotent; concurrent callers all wait for the same shutdown.
        """
        if self._close_task is None:
            self._closing = True
            self._close_task = asyncio.ensure_future(self._shutdown())
        await asyncio.shield(self._close_task)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        connections = list(self._connections)
        for connection in connections:
            connection.stop()
        tasks = {c.task for c in connections if c.task is not None}
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=_CLOSE_GRACE_SECONDS)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if self._server is not None:
            await self._server.wait_closed()
        await self._close_journal()
        if skipped := self._handshake_log.take_suppressed():
            log.warning(
                "%d more failed TLS handshakes not logged (the last: %s)",
                skipped,
                self._last_handshake_failure,
            )
        log.info("stopped")

    async def _close_journal(self) -> None:
        if self._owns_journal and self._journal is not None:
            # Waits for an append still running in its thread: never half a line.
            await asyncio.to_thread(self._journal.close)

    async def __aenter__(self) -> ManipulatorServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
