"""The link to the manipulator: one TCP connection, commands in id order, acks back.

Every command stays pending until its CommandAck arrives. On a lost
connection the link reconnects and resends every pending command in order;
the manipulator acknowledges a resend without journaling it twice, so
delivery is exactly once in effect.

Every failure of the link waits on one capped exponential backoff (with
jitter): a failed connect, and a connection that ends before it did useful
work (no ack arrived and it was open less than ``healthy_after`` seconds),
as when a TLS-only manipulator closes a plaintext link or refuses its
certificate. Only useful work resets the backoff, so such a connection
cannot turn into a reconnect storm. A run of failures is logged once, with a
readable reason (:mod:`controller.link_failures`), and once when the link
works again.

Each command carries the database's origin (:mod:`controller.storage.origin`): the
manipulator identifies a command by (origin, id). An ack carrying an error is
a refusal, not an acknowledgement: the journal holds a different command
under that origin and id (a database restored from a backup). The command
stays pending and, as commands go in order, so does everything after it; the
link says once what the operator must do, drops the connection and tries
again later, backing off up to ``max_refused_backoff``.

Each frame also carries the link's ``epoch``, the leadership term of this
node (0: a controller without leadership). A link is made per term, so its
epoch is fixed, and it stamps it on every command it sends, its
predecessor's resent ones included: the epoch says who sends, not who
issued. When the manipulator refuses a command for its epoch (the ack's
``superseded_by_epoch``, not its text), a newer leader has already sent
commands: this node was deposed. Retrying cannot succeed, so the link logs
one warning, calls ``on_fenced`` with the manipulator's reason, drops its
connection and everything queued (the commands stay in the database for the
leader), and sends nothing more.

An acknowledgement is recorded (``on_ack``, the writer) by a task of its
own; one the database refuses to record is kept and retried with backoff
until it is, so History does not show a journaled command as pending. One
that is still unrecorded when the controller stops is not lost either: the
command is still pending in the database, so the next start resends it and
the manipulator acknowledges it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Iterable

from google.protobuf.message import DecodeError

from controller.errors import CommandFenced, CommandRefused
from controller.link_failures import (
    FailureEpisode,
    LinkFailure,
    Phase,
    describe_failure,
    describe_loss,
)
from controller.metrics import ControllerMetrics
from controller.records import CommandRecord
from controller.storage.origin import Origin
from workcell.backoff import Backoff
from workcell.flags import Address
from workcell.framing import FrameDecoder, FrameError, encode_frame
from workcell.status import status_from_name
from workcell.timeconv import Clock, now_us, to_timestamp
from workcell.v1 import command_pb2

__all__ = ["ManipulatorLink", "command_message"]

log = logging.getLogger(__name__)

AckCallback = Callable[[int, int], Awaitable[None]]
"""Records that command ``id`` was acknowledged at ``at_us`` (µs since the epoch)."""
FencedCallback = Callable[[str], None]
"""Told that the link was fenced (this node deposed), with the manipulator's reason."""


def command_message(record: CommandRecord, origin: str = "", epoch: int = 0) -> command_pb2.Command:
    """The wire message for a recorded command, sent with ``origin`` by a node of ``epoch``."""
    return command_pb2.Command(
        id=record.id,
        status=status_from_name(record.status),  # type: ignore[arg-type]
        window_start=to_timestamp(record.window_start),
        window_end=to_timestamp(record.window_end),
        issued_at=to_timestamp(record.issued_at),
        origin=origin,
        epoch=epoch,
    )


class ManipulatorLink:
    """Sends commands to the manipulator and reports their acknowledgements."""

    def __init__(
        self,
        address: Address,
        *,
        on_ack: AckCallback,
        origin: Origin | None = None,
        epoch: int = 0,
        on_fenced: FencedCallback | None = None,
        may_send: Callable[[], bool] = lambda: True,
        initial_backoff: float = 0.1,
        max_backoff: float = 5.0,
        refused_backoff: float = 1.0,
        max_refused_backoff: float = 60.0,
        connect_timeout: float = 5.0,
        healthy_after: float = 5.0,
        ssl: ssl_module.SSLContext | None = None,
        server_hostname: str | None = None,
        metrics: ControllerMetrics | None = None,
        clock: Clock = now_us,
    ) -> None:
        self._address = address
        self._ssl = ssl
        # The name checked in the manipulator's certificate: by default the
        # host dialled (an IP address is matched against the IP SANs).
        self._server_hostname = (server_hostname or address.host) if ssl is not None else None
        self._on_ack = on_ack
        self._origin = origin
        self._epoch = epoch
        self._on_fenced = on_fenced
        # Asked before every frame: a leader whose term may be over by its own
        # clock writes nothing more, even before its deposition has run.
        self._may_send = may_send
        self._fenced: str | None = None
        self._metrics = metrics if metrics is not None else ControllerMetrics()
        self._clock = clock
        self._connect_timeout = connect_timeout
        self._healthy_after = healthy_after
        # One backoff for every way the link fails; only useful work resets it.
        self._failure_backoff = Backoff(initial_backoff, max_backoff)
        self._failure_delays = self._failure_backoff.delays()
        self._episode: FailureEpisode | None = None
        self._useful = False  # the current connection did useful work
        # Insertion order is id order: commands are enqueued as they are issued.
        self._pending: dict[int, bytes] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.connected = False
        self._closing = False
        # Refusals in the current episode (0: none), and the wait before the next try.
        self._refusals = 0
        self._refused_backoff = Backoff(refused_backoff, max_refused_backoff)
        self._refused_delays = self._refused_backoff.delays()
        # Acknowledged, not recorded yet: command id -> when the ack arrived.
        self._unrecorded: dict[int, int] = {}
        self._ack_arrived = asyncio.Event()
        self._recorder: asyncio.Task[None] | None = None

    @property
    def pending(self) -> list[int]:
        """Ids of the commands not yet acknowledged, in order."""
        return list(self._pending)

    @property
    def fenced(self) -> str | None:
        """The manipulator's reason once this link was fenced (its node deposed); else None."""
        return self._fenced

    @property
    def unrecorded(self) -> list[int]:
        """Ids of the commands acknowledged whose acknowledgement is not recorded yet."""
        return list(self._unrecorded)

    def enqueue(self, record: CommandRecord) -> None:
        """Queue a recorded command for delivery (dropped once the link was fenced)."""
        if self._fenced is not None:
            # Deposed: the command stays pending in the database, for the leader.
            log.debug("command %d not queued: this node was deposed", record.id)
            return
        if self._pending and record.id <= next(reversed(self._pending)):
            raise ValueError(f"command {record.id} enqueued out of order")
        origin = self._origin.of_command(record.id) if self._origin is not None else ""
        self._pending[record.id] = encode_frame(command_message(record, origin, self._epoch))
        self._metrics.commands_pending.set(len(self._pending))
        self._wake.set()

    async def start(self) -> None:
        """Start connecting and delivering in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="manipulator-link")
        if self._recorder is None:
            self._recorder = asyncio.create_task(self._record_acks(), name="ack-recorder")

    async def close(self) -> None:
        """Stop delivering (pending commands stay in the database); idempotent.

        Acknowledgements not recorded yet are dropped: their commands are
        still pending in the database, so the next start resends them.
        """
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
        if self._recorder is not None:
            self._recorder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recorder
            self._recorder = None
            if self._unrecorded:
                log.warning(
                    "stopping with the acks of commands %s not recorded: they are resent "
                    "at the next start and acknowledged again",
                    _ids(self._unrecorded),
                )
        self.connected = False
        self._metrics.manipulator_link_up.set(0)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
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
                await self._failed(self._describe(Phase.CONNECT, exc, 0.0))
                continue
            connected_at = loop.time()
            self.connected = True
            self._useful = False
            self._metrics.manipulator_link_up.set(1)
            # When connects succeed and the link then fails, every attempt
            # connects: one line per episode, not one per attempt.
            log.log(
                logging.INFO
                if self._episode is None or self._episode.first_connect()
                else logging.DEBUG,
                "connected to the manipulator at %s (%d pending)",
                self._address,
                len(self._pending),
            )
            # A connection that stays open this long counts as working even
            # with nothing to acknowledge (an idle link between commands).
            healthy = loop.call_later(self._healthy_after, self._link_works)
            refused: CommandRefused | None = None
            fenced: CommandFenced | None = None
            ended: BaseException | None = None  # None: the manipulator closed it (EOF)
            try:
                await self._serve(reader, writer)
            except CommandFenced as exc:
                fenced = exc
            except CommandRefused as exc:
                refused = exc
            except _ClosedByManipulator:
                pass
            except (OSError, FrameError, DecodeError, ConnectionError) as exc:
                ended = exc
            finally:
                healthy.cancel()
                self.connected = False
                self._metrics.manipulator_link_up.set(0)
                self._metrics.manipulator_reconnects.inc()
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
            if fenced is not None:
                self._fence(fenced)
                return
            if refused is not None:
                await self._back_off_refused(refused)
            elif self._useful:
                # It worked, then broke (the manipulator restarted, a network
                # cut): dial again at once; the backoff starts from the bottom.
                log.warning("lost the manipulator connection: %s", describe_loss(ended))
            else:
                await self._failed(
                    self._describe(Phase.CONNECTED, ended, loop.time() - connected_at)
                )

    def _describe(self, phase: Phase, exc: BaseException | None, seconds: float) -> LinkFailure:
        return describe_failure(
            phase,
            exc,
            tls=self._ssl is not None,
            seconds=seconds,
            connect_timeout=self._connect_timeout,
        )

    async def _failed(self, failure: LinkFailure) -> None:
        """One failed attempt: logged if it starts an episode (or is a new kind), then wait."""
        now = asyncio.get_running_loop().time()
        first = self._episode is None
        if self._episode is None:
            self._episode = FailureEpisode(started=now)
        if self._episode.failed(failure):
            log.warning(
                "%s: %s; trying again with backoff up to %gs "
                "(further failures of this kind are logged at DEBUG)",
                f"cannot use the link to the manipulator at {self._address}"
                if first
                else f"the link to the manipulator at {self._address} now fails otherwise",
                failure.reason,
                self._failure_backoff.maximum,
            )
        else:
            log.debug(
                "manipulator link attempt %d failed: %s", self._episode.failures, failure.reason
            )
        await asyncio.sleep(next(self._failure_delays))

    def _link_works(self) -> None:
        """The connection did useful work (an ack, or a while open): end any failure episode."""
        if self._useful:
            return
        self._useful = True
        self._failure_delays = self._failure_backoff.delays()
        if self._episode is not None:
            episode, self._episode = self._episode, None
            log.info(
                "the link to the manipulator at %s works again, after %d failed attempts in %.1fs",
                self._address,
                episode.failures,
                asyncio.get_running_loop().time() - episode.started,
            )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        acks = asyncio.create_task(self._read_acks(reader), name="manipulator-acks")
        try:
            sent_up_to = 0
            while True:
                # Clear before scanning, so a command enqueued meanwhile wakes us.
                self._wake.clear()
                for command_id, frame in list(self._pending.items()):
                    if command_id > sent_up_to:
                        if not self._may_send():
                            break
                        writer.write(frame)
                        sent_up_to = command_id
                await writer.drain()
                woken = asyncio.create_task(self._wake.wait())
                await asyncio.wait({woken, acks}, return_when=asyncio.FIRST_COMPLETED)
                woken.cancel()
                if acks.done():
                    acks.result()  # raises the reader's error
                    raise _ClosedByManipulator("the manipulator closed the connection")
        finally:
            acks.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await acks

    async def _read_acks(self, reader: asyncio.StreamReader) -> None:
        """Take acks until EOF; CommandRefused at the first refusal."""
        decoder = FrameDecoder()
        while data := await reader.read(65536):
            for payload in decoder.feed(data):
                ack = command_pb2.CommandAck.FromString(payload)
                self._link_works()
                if ack.superseded_by_epoch:
                    raise CommandFenced(
                        ack.command_id,
                        ack.error,
                        epoch=self._epoch,
                        superseded_by=ack.superseded_by_epoch,
                    )
                if ack.error:
                    # The commands after it were sent too; the manipulator
                    # refuses them on this connection, which is dropped.
                    raise CommandRefused(ack.command_id, ack.error)
                self._acknowledged(ack.command_id)

    def _acknowledged(self, command_id: int) -> None:
        if self._pending.pop(command_id, None) is None:
            log.debug("ack for command %d that is not pending", command_id)
            return
        self._metrics.commands_acknowledged.inc()
        self._metrics.commands_pending.set(len(self._pending))
        log.info("command %d acknowledged", command_id, extra={"command_id": command_id})
        if self._refusals:
            log.info(
                "command %d accepted by the manipulator after %d refusals",
                command_id,
                self._refusals,
            )
            self._refusals = 0
            self._refused_delays = self._refused_backoff.delays()
        self._unrecorded[command_id] = self._clock()
        self._ack_arrived.set()

    def _fence(self, fenced: CommandFenced) -> None:
        """Deposed: drop everything queued, say so once, tell ``on_fenced``; sends nothing more."""
        self._fenced = fenced.reason
        dropped = len(self._pending)
        self._pending.clear()
        self._metrics.commands_pending.set(0)
        self._metrics.commands_refused.inc()
        log.warning(
            "deposed: the manipulator refused command %d of epoch %d because epoch %d has sent "
            "commands there (%s). This link stops; its %d pending commands stay in the "
            "database for the leader. (If no other node of this database leads, it was "
            "restored from a backup: give it a new origin, docs/storage.md: When a cell's "
            "database is replaced)",
            fenced.command_id,
            fenced.epoch,
            fenced.superseded_by,
            fenced.reason,
            dropped,
            extra={
                "command_id": fenced.command_id,
                "epoch": fenced.epoch,
                "superseded_by_epoch": fenced.superseded_by,
            },
        )
        if self._on_fenced is not None:
            try:
                self._on_fenced(fenced.reason)
            except Exception:
                log.exception("on_fenced failed")

    async def _back_off_refused(self, refused: CommandRefused) -> None:
        self._metrics.commands_refused.inc()
        self._refusals += 1
        if self._refusals == 1:
            log.error(
                "the manipulator refused command %d: %s. It is not journaled: it stays pending "
                "and the commands after it wait (tried again every %gs at most). If this "
                "database was restored from a backup, stop the controller and give the "
                "database a new origin: python -m controller.migrate --database <this "
                "controller's --database> --new-origin (docs/storage.md: When a cell's "
                "database is replaced)",
                refused.command_id,
                refused.reason,
                self._refused_backoff.maximum,
                extra={"command_id": refused.command_id, "refused": True},
            )
        else:
            log.debug("command %d refused again (%d refusals)", refused.command_id, self._refusals)
        await asyncio.sleep(next(self._refused_delays))

    async def _record_acks(self) -> None:
        """Record acknowledgements as they arrive; keep and retry the ones that fail."""
        delays = self._failure_backoff.delays()
        failed: set[int] = set()  # in the current failure episode
        while True:
            await self._ack_arrived.wait()
            self._ack_arrived.clear()
            while self._unrecorded:
                # All at once: they go into one commit of the writer.
                batch = dict(self._unrecorded)
                results = await asyncio.gather(
                    *(self._on_ack(command_id, at_us) for command_id, at_us in batch.items()),
                    return_exceptions=True,
                )
                errors: list[tuple[int, BaseException]] = []
                for command_id, result in zip(batch, results, strict=True):
                    if isinstance(result, BaseException):
                        if not isinstance(result, Exception):
                            raise result
                        errors.append((command_id, result))
                    else:
                        del self._unrecorded[command_id]
                if not errors:
                    if failed:
                        log.info(
                            "recorded the acks of commands %s after the database refused them",
                            _ids(failed),
                        )
                        failed.clear()
                    delays = self._failure_backoff.delays()
                    continue
                if not failed:
                    command_id, error = errors[0]
                    log.error(
                        "could not record the ack of command %d: %s; retrying until the "
                        "database takes it (the manipulator has the command; History shows "
                        "it pending until then)",
                        command_id,
                        error,
                        extra={"command_id": command_id},
                    )
                failed.update(command_id for command_id, _ in errors)
                await asyncio.sleep(next(delays))


class _ClosedByManipulator(ConnectionError):
    """The manipulator ended the connection cleanly (EOF on the ack stream)."""


def _ids(ids: Iterable[int]) -> str:
    """Command ids for a log line: the first ten, and how many in all."""
    shown = sorted(ids)
    if len(shown) > 10:
        return f"{', '.join(map(str, shown[:10]))} … ({len(shown)} in all)"
    return ", ".join(map(str, shown))
