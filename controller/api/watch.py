"""``History/Watch``: one watcher's stream of command events.

Each watcher reads from the node's :class:`~controller.api.command_feed.CommandFeed`
(or, behind it, the database) from its own cursor, turns what it reads into
events (:mod:`controller.api.watch_events`) and hands them to a task of its
own that writes them to the stream. Between the two sits a queue of at most
``buffer`` events: the only memory a watcher holds. When the client does not
read, the transport stops taking messages, the queue fills, and once an event
has waited ``stall`` seconds for room the stream ends with RESOURCE_EXHAUSTED,
saying the limit and how to resume. Nothing else waits on a watcher: the feed
never pushes into one, so a slow one slows neither the cell nor the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc

from controller.api.command_feed import PAGE, CommandFeed, FeedClosed
from controller.api.status_runs import Run, entry_for_run
from controller.api.watch_events import (
    EventKind,
    WatchCursor,
    WatchEvent,
    cursor_problem,
    take_acknowledged,
    take_issued,
)
from workcell.v1 import history_pb2

__all__ = ["BUFFER", "RECHECK", "STALL", "CommandWatch", "event_message"]

log = logging.getLogger(__name__)

BUFFER = 1000
"""Events held for one watcher that has not read them yet."""
STALL = 5.0
"""Seconds an event may wait for room in a full buffer before the watcher is cut off."""
RECHECK = 1.0
"""Seconds between a watcher's own looks when the feed says nothing (for a
position older than the feed holds, whose acknowledgement the feed does not see)."""

Context = grpc.aio.ServicerContext[history_pb2.WatchRequest, history_pb2.WatchResponse]

_KINDS = {
    EventKind.ISSUED: history_pb2.COMMAND_EVENT_KIND_ISSUED,
    EventKind.ACKNOWLEDGED: history_pb2.COMMAND_EVENT_KIND_ACKNOWLEDGED,
}


def event_message(event: WatchEvent) -> history_pb2.WatchResponse:
    """The wire form of an event."""
    return history_pb2.WatchResponse(
        kind=_KINDS[event.kind],
        command=entry_for_run(Run.of(event.record)),
        resume_after_command_id=event.resume.issued_through,
        resume_acknowledged_through=event.resume.acknowledged_through,
    )


class _CutOff(Exception):
    """The watcher did not read in time."""


class CommandWatch:
    """Serves History/Watch streams from one node's command feed."""

    def __init__(
        self,
        feed: CommandFeed,
        *,
        buffer: int = BUFFER,
        stall: float = STALL,
        recheck: float = RECHECK,
    ) -> None:
        self._feed = feed
        self._buffer = buffer
        self._stall = stall
        self._recheck = recheck

    async def serve(self, request: history_pb2.WatchRequest, context: Context) -> None:
        """Stream events until the client goes, is cut off, or the node stops."""
        after = request.after_command_id if request.HasField("after_command_id") else None
        acknowledged = (
            request.acknowledged_through if request.HasField("acknowledged_through") else None
        )
        problem = cursor_problem(after, acknowledged)
        if problem is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        feed = self._feed
        sent = WatchCursor(0, 0)
        try:
            async with feed.watching():
                if after is None:
                    after = await feed.last_id()
                cursor = WatchCursor(after, after if acknowledged is None else acknowledged)
                sent = cursor.copy()
                queue: asyncio.Queue[WatchEvent] = asyncio.Queue(self._buffer)
                writer = asyncio.create_task(self._write(queue, context, sent))
                try:
                    await self._produce(cursor, queue, writer)
                finally:
                    writer.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await writer
        except _CutOff:
            log.info(
                "History/Watch: cut off a watcher from %s that did not read (%s)",
                context.peer(),
                sent.describe(),
            )
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this watcher did not read: {self._buffer} events waited for it for "
                f"{self._stall:g} s (the most a controller holds for one watcher). Resume from "
                "the last event received: a new Watch with its resume_after_command_id as "
                "after_command_id and resume_acknowledged_through as acknowledged_through "
                f"(the last event sent: {sent.describe()})",
            )
        except FeedClosed:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                "the controller is stopping: resume on another node or once it is back, from "
                f"the last event received (the last event sent: {sent.describe()})",
            )
        except Exception as exc:
            # The database could not be read (the feed retries on its own; this
            # watcher's own reads do not): the client resumes, here or elsewhere.
            log.warning("History/Watch: ended a watch: %s", exc)
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"the commands could not be read ({exc}): resume from the last event received "
                f"(the last event sent: {sent.describe()})",
            )

    async def _produce(
        self,
        cursor: WatchCursor,
        queue: asyncio.Queue[WatchEvent],
        writer: asyncio.Task[None],
    ) -> None:
        feed = self._feed
        while not writer.done():
            changed = feed.changed  # taken before reading: no change goes unseen
            if feed.closed:
                raise FeedClosed
            # Acknowledgements of commands already told issued, in id order.
            while cursor.acknowledged_through < cursor.issued_through:
                span = min(PAGE, cursor.issued_through - cursor.acknowledged_through)
                records = await feed.read_after(cursor.acknowledged_through, span)
                events = take_acknowledged(cursor, records)
                await self._put(queue, events)
                if len(events) < len(records) or len(records) < span:
                    break
            # Then the commands issued since.
            while True:
                records = await feed.read_after(cursor.issued_through, PAGE)
                await self._put(queue, take_issued(cursor, records))
                if len(records) < PAGE:
                    break
            waits = {asyncio.ensure_future(changed.wait()), writer}
            try:
                await asyncio.wait(waits, timeout=self._recheck, return_when="FIRST_COMPLETED")
            finally:
                for waiting in waits:
                    if waiting is not writer:
                        waiting.cancel()
        writer.result()  # the client went away: its error, if any

    async def _put(self, queue: asyncio.Queue[WatchEvent], events: list[WatchEvent]) -> None:
        for event in events:
            try:
                async with asyncio.timeout(self._stall):
                    await queue.put(event)
            except TimeoutError:
                raise _CutOff from None

    @staticmethod
    async def _write(queue: asyncio.Queue[WatchEvent], context: Context, sent: WatchCursor) -> None:
        while True:
            event = await queue.get()
            await context.write(event_message(event))
            sent.issued_through = event.resume.issued_through
            sent.acknowledged_through = event.resume.acknowledged_through
