"""Which Telemetry streams may open, and how long they may stay open.

gRPC's own ``maximum_concurrent_rpcs`` is one budget for every service: 1,024
sensor streams that never finish used to leave none for Health and History.
Telemetry streams are bounded here instead, by their own rules:

- at most ``max_streams`` open in all and ``max_per_peer`` from one host
  (further streams are refused at once with RESOURCE_EXHAUSTED);
- a stream that sends nothing for ``idle_timeout`` seconds, or stays open
  longer than ``max_age`` seconds, is ended (DEADLINE_EXCEEDED; what it
  delivered before is stored, and a resend of it counts as duplicates).

The bookkeeping (:class:`StreamRegistry`) is plain: callers pass the time in.
One sweep a second (:meth:`StreamRegistry.watch`) ends the streams past a
limit, so the hot path pays one integer increment per message, not a timer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["StreamLimits", "StreamRefused", "StreamRegistry", "TrackedStream", "peer_host"]

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """How many Telemetry streams may be open, and for how long (seconds)."""

    max_streams: int = 1000
    max_per_peer: int = 100
    idle_timeout: float = 30.0
    max_age: float = 600.0


class StreamRefused(Exception):
    """A new stream would exceed a limit; the message says which, for the client."""


def peer_host(peer: str) -> str:
    """The host part of a gRPC peer string (``ipv4:10.0.0.7:51234`` -> ``ipv4:10.0.0.7``)."""
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer.rsplit(":", 1)[0]
    return peer


class TrackedStream:
    """One open stream: who opened it, when, and how many messages it sent."""

    __slots__ = ("_deadline", "ended", "messages", "opened", "peer", "seen_at", "seen_count")

    def __init__(self, peer: str, now: float) -> None:
        self.peer = peer
        self.opened = now
        self.messages = 0
        """Incremented by the handler per message; the sweep compares it with its last look."""
        self.ended: str | None = None
        """Why the sweep ended the stream (None while it may go on)."""
        # The sweep's last look: the message count then, and when it last changed.
        self.seen_count = 0
        self.seen_at = now
        self._deadline: asyncio.Timeout | None = None

    def bind(self, deadline: asyncio.Timeout) -> None:
        """The ``asyncio.timeout`` scope the handler reads the stream in."""
        self._deadline = deadline

    def _expire(self, reason: str) -> None:
        self.ended = reason
        if self._deadline is not None and not self._deadline.expired():
            # Fires at once in the handler's task, at its current await.
            self._deadline.reschedule(asyncio.get_running_loop().time())


class StreamRegistry:
    """The open Telemetry streams, admitted and timed out by :class:`StreamLimits`."""

    def __init__(self, limits: StreamLimits, *, clock: Callable[[], float] = time.monotonic):
        self.limits = limits
        self._clock = clock
        self._streams: set[TrackedStream] = set()
        self._per_peer: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._streams)

    def admit(self, peer: str) -> TrackedStream:
        """Register a new stream from ``peer``; StreamRefused when it would exceed a limit."""
        limits = self.limits
        if len(self._streams) >= limits.max_streams:
            raise StreamRefused(
                f"too many open Telemetry streams ({limits.max_streams}); retry later"
            )
        open_here = self._per_peer.get(peer, 0)
        if open_here >= limits.max_per_peer:
            raise StreamRefused(
                f"too many open Telemetry streams from {peer} ({limits.max_per_peer}); retry later"
            )
        stream = TrackedStream(peer, self._clock())
        self._streams.add(stream)
        self._per_peer[peer] = open_here + 1
        return stream

    def release(self, stream: TrackedStream) -> None:
        """Forget a stream that has ended (idempotent)."""
        if stream in self._streams:
            self._streams.discard(stream)
            left = self._per_peer[stream.peer] - 1
            if left:
                self._per_peer[stream.peer] = left
            else:
                del self._per_peer[stream.peer]

    def overdue(self, now: float) -> list[tuple[TrackedStream, str]]:
        """The streams past a limit at ``now``, each with the reason (pure bookkeeping).

        A stream counts as idle from the last sweep that saw its message count
        change, so idleness is known to within one sweep interval.
        """
        limits = self.limits
        overdue = []
        for stream in self._streams:
            if stream.ended is not None:
                continue
            if stream.messages != stream.seen_count:
                stream.seen_count = stream.messages
                stream.seen_at = now
            if now - stream.opened >= limits.max_age:
                overdue.append((stream, f"stream open longer than {limits.max_age:g} s"))
            elif now - stream.seen_at >= limits.idle_timeout:
                overdue.append((stream, f"no message on the stream for {limits.idle_timeout:g} s"))
        return overdue

    def sweep(self) -> list[tuple[TrackedStream, str]]:
        """End every stream past a limit now; returns them."""
        overdue = self.overdue(self._clock())
        for stream, reason in overdue:
            stream._expire(reason)
        return overdue

    async def watch(self, interval: float = SWEEP_INTERVAL) -> None:
        """Sweep every ``interval`` seconds, for ever (cancel to stop)."""
        while True:
            await asyncio.sleep(interval)
            ended = self.sweep()
            if ended:
                # One line per sweep, not per stream: a thousand idle streams
                # must not mean a thousand lines.
                reasons = sorted({reason for _, reason in ended})
                peers = sorted({stream.peer for stream, _ in ended})
                log.warning(
                    "ended %d Telemetry streams (%s) from %s",
                    len(ended),
                    "; ".join(reasons),
                    ", ".join(peers[:5])
                    + (f" and {len(peers) - 5} more" if len(peers) > 5 else ""),
                )
