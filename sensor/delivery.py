"""Delivery of readings to the controller over ``Telemetry.StreamReadings``.

The controller answers a stream only after every reading on it is committed,
so a response means "durable" for all of them. :class:`Delivery` therefore
keeps each reading (in a :class:`~sensor.buffer.PendingBuffer`) until a
response covers it. It ends each stream after ``stream_seconds`` and opens the
next one at once, while a small task per stream awaits the previous response,
so sending never pauses for a commit.

On any failure it aborts the open stream, backs off (capped exponential, with
jitter) and resends what is unacknowledged, oldest first, before new readings;
the first attempt after a failure is a one-message probe that is answered
before streaming resumes.
Resends of readings the controller had already stored come back counted as
duplicates, so nothing is stored twice and nothing is lost while the buffer
has room; when it is full the oldest readings are dropped, counted and logged.
Responses also count stale readings (kept in :attr:`Delivery.stale` for the
progress line) and conflicts (another sender stored other readings under
this sensor id and boot id: a warning, at most once a minute).

A reading the controller refuses as invalid (``INVALID_ARGUMENT`` naming it,
see :mod:`workcell.refusals`) is dropped and counted in :attr:`Delivery.rejected`,
and the rest is sent again at once: it must not hold back the readings behind
it. When it was refused for being too far in the future, so are the held
readings stamped later than the controller then accepted, and for a short
while new ones are checked against that limit before being sent.

Several controller nodes need nothing of their own here: the channel's
target and options (:mod:`workcell.targets`) make gRPC give each new stream
to the next node whose connection is READY (``round_robin``), skipping one
whose connection failed. A stream on a node that dies fails like any other
and its readings are resent on the next stream, so on a live node; a resend
of readings the dead node had already committed comes back as duplicates
(the shared database's unique key), so nothing is stored twice.

Every reading added is, at any time, exactly one of: acknowledged, rejected,
dropped, or undelivered (held, or evicted from the full buffer while the
stream carrying it awaits its response); see :attr:`Delivery.undelivered`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from typing import Any

import grpc
from grpc import aio

from sensor.buffer import PendingBuffer
from sensor.wire import encode_reading, request_bytes
from workcell.backoff import Backoff
from workcell.refusals import Refusal, parse_refusal
from workcell.timeconv import US_PER_SECOND
from workcell.tls import PLAINTEXT, TlsConfig, connection_hint, grpc_aio_channel
from workcell.v1 import telemetry_pb2

__all__ = ["Delivery"]

log = logging.getLogger(__name__)

Reading = telemetry_pb2.Reading

# After a failure, the first attempt sends at most this many readings in one message.
PROBE_READINGS = 1000
# Tries again at least every 2 s: a restarted controller (or a new leader) waits up to its
# --grace (3 s by default) for the sensors it heard before to come back with their backlog
# before deciding without them (controller.decision.watermarks). Jittered, so many sensors
# do not come back in step.
RECONNECT = Backoff(initial=0.1, maximum=2.0)

# Seconds between two warnings about conflicting readings.
CONFLICT_WARNING_INTERVAL = 60.0

# Seconds between two warnings about readings the controller rejected.
REJECTION_WARNING_INTERVAL = 10.0

# Seconds for which the latest timestamp the controller accepted, learned from
# a refusal, is applied to new readings before sending them: a clock that is
# ahead then costs one refused stream per interval, not one per reading. Kept
# short, as the controller's clock may be the one that was wrong.
REFUSAL_MEMORY = 1.0

# What grpc.aio reports when a write fails because the stream already ended.
_WRITE_RACE_DETAILS = "Internal error from Core"

_METHOD = "/workcell.v1.Telemetry/StreamReadings"

# The requests are written as bytes already (see sensor.wire).
_ReadingsCall = aio.StreamUnaryCall[bytes, telemetry_pb2.StreamReadingsResponse]
_ReadingsMethod = aio.StreamUnaryMultiCallable[bytes, telemetry_pb2.StreamReadingsResponse]


class _Held:
    """A reading held until acknowledged: its encoded field and what delivery looks at."""

    __slots__ = ("field", "seq", "timestamp_us", "written")

    def __init__(self, seq: int, timestamp_us: int, field: bytes) -> None:
        self.seq = seq
        self.timestamp_us = timestamp_us
        self.field = field
        self.written = False  # written to a stream once: counted in Delivery.sent


class _FutureLimit:
    """The latest timestamp the controller accepts, learned from a refusal, as time goes on."""

    __slots__ = ("_latest_us", "_learned_at", "until")

    def __init__(self, latest_us: int, learned_at: float) -> None:
        self._latest_us = latest_us
        self._learned_at = learned_at
        self.until = learned_at + REFUSAL_MEMORY

    def refuses(self, timestamp_us: int, now: float) -> bool:
        """Whether the controller would refuse ``timestamp_us`` at monotonic time ``now``."""
        return timestamp_us > self._latest_us + (now - self._learned_at) * US_PER_SECOND


class _StreamFailed(Exception):
    """A stream ended without a response covering its readings.

    ``ambiguous``: a write failed because the controller had already ended the
    stream, and grpc.aio reports that as ``INTERNAL: Internal error from Core``
    in place of the controller's own status (grpc/grpc#36066). The cause is
    then learned from the next attempt, a probe that cannot race that way.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        *,
        reported: bool = False,
        ambiguous: bool = False,
        refusal: Refusal | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.reported = reported  # already logged by whoever saw it first
        self.ambiguous = ambiguous
        self.refusal = refusal  # INVALID_ARGUMENT naming the reading refused


class Delivery:
    """Streams readings to the controller and keeps every one until it is acknowledged.

    Use as ``async with Delivery(...) as delivery``: :meth:`add` readings as
    they are created, :meth:`flush` when no more will come, and await
    :meth:`drain` to wait until all are acknowledged.
    """

    def __init__(
        self,
        target: str,
        *,
        batch: int = 1,
        capacity: int = 100_000,
        stream_seconds: float = 1.0,
        response_timeout: float = 30.0,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        tls: TlsConfig = PLAINTEXT,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.target = target
        self._tls = tls
        self._channel_options = tuple(channel_options)
        self._batch = min(batch, capacity)
        self._buffer: PendingBuffer[_Held] = PendingBuffer(capacity)
        self._stream_seconds = stream_seconds
        self._response_timeout = response_timeout
        self._backoff = backoff or RECONNECT
        self._rng = rng or random.Random()
        self._ready = asyncio.Event()  # something changed that the sender should look at
        self._idle = asyncio.Event()  # nothing is held: every reading was acknowledged
        self._idle.set()
        self._flushing = False
        self._abort = False  # a response waiter saw a failure: stop the open stream
        self._probe = False  # the next attempt is a probe (see _send_probe)
        self._attempts = 0  # failed attempts in the current failure episode
        # Failures so far: a stream opened before the latest failure does not
        # prove the controller is back, even when its response arrives.
        self._failures = 0
        # None: delivering; else whether this failure episode is a rejection
        # (INVALID_ARGUMENT) or an outage, each logged once per episode.
        self._episode_rejected: bool | None = None
        self._drops_logged_at: int | None = None
        self._drops_seen = 0
        self._future_limit: _FutureLimit | None = None
        self._rejection_reason = ""
        self._rejections_unreported = 0
        self._rejections_warned_at: float | None = None
        self._streams = 0
        self._channel: aio.Channel | None = None
        self._sender: asyncio.Task[None] | None = None
        self._waiters: set[asyncio.Task[None]] = set()
        self._conflicts_warned_at: float | None = None
        self.sent = 0
        """Distinct readings written to a stream at least once (the write completed:
        handed to an open connection). Resends count once; nothing is written,
        so nothing counted, while the controller cannot be reached."""
        self.rejected = 0
        """Readings dropped because the controller refuses them as invalid: each it
        named, and those stamped later than it accepted when it refused one for
        being too far in the future (checked before sending for a while after)."""
        self.stale = 0
        """Readings acknowledged as stale: stored, but too late to count in any decision."""
        self.conflicts = 0
        """Readings the controller refused as conflicting: it holds another reading
        under their (boot_id, seq)."""

    # -- counters -----------------------------------------------------------

    @property
    def acked(self) -> int:
        """Readings a controller response covered (stored, or already stored).

        Including readings the full buffer evicted while their stream was in
        flight: they were stored all the same.
        """
        return self._buffer.acked

    @property
    def buffered(self) -> int:
        """Readings held, unsent or awaiting their stream's response (at most the capacity)."""
        return len(self._buffer)

    @property
    def undelivered(self) -> int:
        """Readings not yet acknowledged, rejected or dropped.

        Those held, and those evicted from the full buffer while the stream
        carrying them awaits its response. After :meth:`close`, these were not
        confirmed delivered (the evicted ones, and any on a stream cancelled
        in flight, may have been stored).
        """
        return len(self._buffer) + self._buffer.evicted

    @property
    def reconnects(self) -> int:
        """Failed streams so far; after each one delivery backs off and reconnects to resend."""
        return self._failures

    @property
    def dropped(self) -> int:
        """Readings given up unacknowledged because the buffer was full.

        The oldest unsent readings evicted for new ones, and readings evicted
        while in flight whose stream then failed (a stream can fail after the
        controller stored its readings: those are counted here too).
        """
        return self._buffer.dropped

    # -- lifecycle ----------------------------------------------------------

    async def __aenter__(self) -> Delivery:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def start(self) -> None:
        """Open the channel and start the sending task."""
        if self._sender is not None:
            return
        # The channel reconnects by itself; keep its backoff in step with ours
        # (its default grows to two minutes, far too slow after a restart).
        initial_ms = int(self._backoff.initial * 1000)
        maximum_ms = int(self._backoff.maximum * 1000)
        self._channel = grpc_aio_channel(
            self.target,
            self._tls,
            options=[
                ("grpc.initial_reconnect_backoff_ms", initial_ms),
                ("grpc.min_reconnect_backoff_ms", initial_ms),
                ("grpc.max_reconnect_backoff_ms", maximum_ms),
                *self._channel_options,
            ],
        )
        self._sender = asyncio.create_task(self._send_forever(), name="sensor-delivery")

    async def close(self) -> None:
        """Stop sending and close the channel; what is unacknowledged stays in ``buffered``."""
        tasks = [t for t in (self._sender, *self._waiters) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._sender = None
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None

    # -- producer side ------------------------------------------------------

    def add(self, reading: telemetry_pb2.Reading) -> None:
        """Hold ``reading`` until acknowledged and send it as soon as its batch is full."""
        stamp = reading.timestamp
        timestamp_us = stamp.seconds * US_PER_SECOND + stamp.nanos // 1000
        limit = self._future_limit
        if limit is not None:
            now = time.monotonic()
            if now >= limit.until:
                self._future_limit = None  # ask the controller again
            elif limit.refuses(timestamp_us, now):
                self.rejected += 1
                self._report_rejected(1)
                return
        self._idle.clear()
        # Encoded once here: a send or a resend only concatenates bytes.
        if self._buffer.append(_Held(reading.seq, timestamp_us, encode_reading(reading))):
            self._note_drops()
        if self._sendable():
            self._ready.set()

    def _note_drops(self) -> None:
        """Warn once when the full buffer starts dropping readings (summed up on recovery)."""
        dropped = self._buffer.dropped
        if dropped > self._drops_seen and self._drops_logged_at is None:
            self._drops_logged_at = self._drops_seen
            log.warning(
                "buffer full (%d unacknowledged readings): dropping the oldest",
                self._buffer.capacity,
            )
        self._drops_seen = dropped

    def _fail(self, stream: int) -> None:
        """``stream`` failed: its readings are unsent again (those evicted are dropped)."""
        self._buffer.fail(stream)
        self._note_drops()
        self._settle()

    def _settle(self) -> None:
        """Set idle once nothing is held or awaited any more."""
        if not self._buffer and not self._buffer.evicted:
            self._idle.set()

    def flush(self) -> None:
        """No more readings are coming soon: send partial batches and end streams early."""
        self._flushing = True
        self._ready.set()

    async def drain(self) -> None:
        """Wait until every reading added so far is acknowledged."""
        await self._idle.wait()

    # -- sending ------------------------------------------------------------

    def _sendable(self) -> bool:
        unsent = self._buffer.unsent
        return unsent >= self._batch or (self._flushing and unsent > 0)

    async def _wait_sendable(self) -> None:
        while not self._sendable():
            self._ready.clear()
            await self._ready.wait()

    async def _send_forever(self) -> None:
        assert self._channel is not None
        # Requests go out as bytes (no serializer): they are built by sensor.wire.
        stub: _ReadingsMethod = self._channel.stream_unary(
            _METHOD,
            request_serializer=None,
            response_deserializer=telemetry_pb2.StreamReadingsResponse.FromString,
        )
        while True:
            await self._wait_sendable()
            if self._abort:
                await self._back_off()
                continue
            self._streams += 1
            try:
                if self._probe:
                    await self._send_probe(stub, self._streams)
                else:
                    await self._send_stream(stub, self._streams)
            except _StreamFailed as failure:
                if failure.refusal is not None and self._drop_refused(
                    failure.refusal, failure.details
                ):
                    # Not an outage: the rest goes at once (a probe stays a probe).
                    continue
                self._failures += 1
                if failure.ambiguous:
                    log.info(
                        "stream to %s broke while writing (%s); resending its readings",
                        self.target,
                        failure,
                    )
                elif not failure.reported:
                    self._report_failure(failure.code, failure.details)
                await self._back_off()

    async def _back_off(self) -> None:
        self._attempts += 1
        self._probe = True
        await asyncio.sleep(self._backoff.delay(self._attempts, self._rng.random()))
        # Whatever failed meanwhile is covered by this pause.
        self._abort = False

    async def _send_probe(self, stub: _ReadingsMethod, stream: int) -> None:
        """After a failure: one message of the oldest readings, half-closed at once, answered.

        Writing a single message and half-closing right away means no write
        can race the controller's verdict, so a rejection comes back with the
        controller's own status and message (see :class:`_StreamFailed`).
        """
        epoch = self._failures
        call: _ReadingsCall = stub(None, timeout=self._response_timeout)
        readings = self._buffer.take(stream, max(self._batch, PROBE_READINGS))
        try:
            await call.write(request_bytes(held.field for held in readings))
            self._count_sent(readings)
            await call.done_writing()
            response = await call
        except asyncio.CancelledError:
            self._buffer.fail(stream)
            call.cancel()
            raise
        except Exception as exc:  # any error of the call's operations fails the stream
            self._fail(stream)
            failure = await _failure_of(call, exc)
            call.cancel()
            raise failure from None
        self._probe = False
        self._acknowledged(stream, len(readings), response, epoch)

    async def _send_stream(self, stub: _ReadingsMethod, stream: int) -> None:
        """Write one stream for about ``stream_seconds``, then leave its response to a task."""
        loop = asyncio.get_running_loop()
        epoch = self._failures
        call: _ReadingsCall = stub(
            None,  # no iterator: this side writes the messages itself
            timeout=self._stream_seconds + self._response_timeout,
        )
        deadline = loop.time() + self._stream_seconds
        timer = loop.call_at(deadline, self._ready.set)
        written = 0
        try:
            while not self._abort and loop.time() < deadline:
                if self._sendable():
                    readings = self._buffer.take(stream, self._batch)
                    await call.write(request_bytes(held.field for held in readings))
                    self._count_sent(readings)
                    written += len(readings)
                elif self._flushing and written:
                    break  # all sent: end the stream now so its response comes now
                else:
                    self._ready.clear()
                    await self._ready.wait()
            if self._abort:
                raise _StreamFailed(
                    grpc.StatusCode.CANCELLED, "an earlier stream failed", reported=True
                )
            await call.done_writing()
        except asyncio.CancelledError:
            self._buffer.fail(stream)
            call.cancel()
            raise
        except Exception as exc:  # any error of the call's operations fails the stream
            self._fail(stream)
            failure = await _failure_of(call, exc)
            call.cancel()
            raise failure from None
        finally:
            timer.cancel()
        waiter = asyncio.create_task(self._await_response(call, stream, written, epoch))
        self._waiters.add(waiter)
        waiter.add_done_callback(self._waiters.discard)

    def _count_sent(self, readings: list[_Held]) -> None:
        """``readings`` were written to a stream: count those written for the first time."""
        for held in readings:
            if not held.written:
                held.written = True
                self.sent += 1

    async def _await_response(
        self, call: _ReadingsCall, stream: int, written: int, epoch: int
    ) -> None:
        try:
            response = await call
        except aio.AioRpcError as exc:
            self._fail(stream)
            # Its readings are unsent again: wake the sender, which may be
            # idle (no new readings after --duration or --count ends).
            self._ready.set()
            refusal = _refusal_of(exc)
            if refusal is not None and self._drop_refused(refusal, exc.details() or ""):
                # The controller is up and took the readings before the
                # refused one: the streams after this one go on.
                return
            if epoch != self._failures:
                # Opened before a failure that was already handled (and backed
                # off from): its readings are resent, nothing more to do.
                log.debug("stream %d failed too: %s", stream, exc.code().name)
                return
            self._failures += 1
            self._report_failure(exc.code(), exc.details() or "")
            self._abort = True
            self._ready.set()
            return
        except asyncio.CancelledError:
            call.cancel()
            raise
        self._acknowledged(stream, written, response, epoch)

    def _acknowledged(
        self,
        stream: int,
        written: int,
        response: telemetry_pb2.StreamReadingsResponse,
        epoch: int,
    ) -> None:
        acked = self._buffer.ack(stream)
        covered = response.stored + response.duplicates
        if covered != written:
            log.warning(
                "controller acknowledged %d readings of a stream of %d (stored=%d duplicates=%d)",
                covered,
                written,
                response.stored,
                response.duplicates,
            )
        log.debug(
            "stream %d acknowledged: %d readings (stored=%d duplicates=%d stale=%d)",
            stream,
            acked,
            response.stored,
            response.duplicates,
            response.stale,
        )
        self.stale += response.stale
        if response.conflicts:
            self.conflicts += response.conflicts
            self._report_conflicts(response.conflicts)
        if epoch == self._failures:
            self._report_recovery()
        if self._drops_logged_at is not None:
            log.warning(
                "dropped %d readings while the buffer was full",
                self._buffer.dropped - self._drops_logged_at,
            )
            self._drops_logged_at = None
        if self._rejections_unreported:
            self._report_rejected(0)
        self._settle()

    # -- refused readings -----------------------------------------------------

    def _drop_refused(self, refusal: Refusal, details: str) -> bool:
        """Drop the reading the controller refused, and what it would refuse likewise.

        Called once the refused stream's readings are unsent again. The ones
        before the refused reading were stored: resending them is harmless
        (duplicates). False when none of it is held any more (evicted from a
        full buffer meanwhile): nothing to drop, the failure is handled as any.
        """
        seq, latest_us = refusal.seq, refusal.latest_us
        if latest_us is None:
            count = self._buffer.discard(lambda held: held.seq == seq)
        else:
            count = self._buffer.discard(
                lambda held: held.seq == seq or held.timestamp_us > latest_us
            )
            self._future_limit = _FutureLimit(latest_us, time.monotonic())
        if not count:
            return False
        self.rejected += count
        self._rejection_reason = details
        self._report_rejected(count)
        self._settle()
        return True

    def _report_rejected(self, count: int) -> None:
        """Warn about rejected readings, at most once per REJECTION_WARNING_INTERVAL."""
        self._rejections_unreported += count
        now = time.monotonic()
        warned = self._rejections_warned_at
        if warned is not None and now - warned < REJECTION_WARNING_INTERVAL:
            return
        self._rejections_warned_at = now
        # Dropped, not retried: the controller would refuse them every time.
        log.warning(
            "controller %s rejected %d readings, dropped (%d in all; the last reason: %s)",
            self.target,
            self._rejections_unreported,
            self.rejected,
            self._rejection_reason,
        )
        self._rejections_unreported = 0

    # -- episodes -----------------------------------------------------------

    def _report_failure(self, code: grpc.StatusCode, details: str) -> None:
        """Log a failure once per episode (again only if an outage turns into a rejection)."""
        rejected = code == grpc.StatusCode.INVALID_ARGUMENT
        if rejected == self._episode_rejected:
            log.debug("delivery still failing: %s: %s", code.name, details)
            return
        self._episode_rejected = rejected
        if rejected:
            # The controller refuses what this sensor sends: a bug or a bad
            # configuration, not an outage. Retrying keeps the readings.
            log.error(
                "controller %s rejected readings: %s (retrying with backoff; %d readings held)",
                self.target,
                details,
                len(self._buffer),
            )
        else:
            # A TLS refusal reads "Socket closed": say what is likely wrong.
            hint = connection_hint(details, self._tls, server="the controller")
            log.warning(
                "delivery to %s failed (%s: %s); reconnecting with backoff, %d readings held%s",
                self.target,
                code.name,
                details,
                len(self._buffer),
                f". {hint}" if hint else "",
            )

    def _report_conflicts(self, count: int) -> None:
        """Warn about conflicting readings, at most once per CONFLICT_WARNING_INTERVAL."""
        now = time.monotonic()
        warned = self._conflicts_warned_at
        if warned is not None and now - warned < CONFLICT_WARNING_INTERVAL:
            log.debug("%d more conflicting readings", count)
            return
        self._conflicts_warned_at = now
        # Acknowledged all the same (resending cannot change what is stored),
        # but these readings are not the ones the controller keeps.
        log.warning(
            "controller %s holds other readings under %d of this sensor's (boot_id, seq) "
            "(conflicts, %d so far): they were not stored. Does another process send with "
            "this sensor id and boot id?",
            self.target,
            count,
            self.conflicts,
        )

    def _report_recovery(self) -> None:
        """A stream opened after the latest failure succeeded: the episode is over."""
        if self._episode_rejected is not None:
            log.info("delivering to %s again after %d failed attempts", self.target, self._attempts)
            self._episode_rejected = None
        self._attempts = 0


async def _failure_of(call: _ReadingsCall, exc: BaseException) -> _StreamFailed:
    """The status a failed stream ended with, as a :class:`_StreamFailed`."""
    if isinstance(exc, _StreamFailed):
        return exc
    if not isinstance(exc, aio.AioRpcError):
        # A write or half-close on a call that already finished: its status says why.
        try:
            await asyncio.wait_for(call, timeout=1.0)
        except aio.AioRpcError as error:
            exc = error
        except TimeoutError:
            pass
    if not isinstance(exc, aio.AioRpcError):
        return _StreamFailed(grpc.StatusCode.UNKNOWN, f"the stream ended early ({exc!r})")
    code, details = exc.code(), exc.details() or ""
    ambiguous = code == grpc.StatusCode.INTERNAL and details == _WRITE_RACE_DETAILS
    return _StreamFailed(code, details, ambiguous=ambiguous, refusal=_refusal_of(exc))


def _refusal_of(error: aio.AioRpcError) -> Refusal | None:
    """The reading an ``INVALID_ARGUMENT`` names (see :mod:`workcell.refusals`), if any."""
    if error.code() != grpc.StatusCode.INVALID_ARGUMENT:
        return None
    return parse_refusal(error.trailing_metadata())
