"""The tail of the ``commands`` table, read once per node for every History/Watch.

One poller per node (not one query loop per watcher) keeps the newest
commands in memory: every command from the oldest one not yet acknowledged
(or the last ``keep_recent``, whichever reaches further back), at most
``keep``. It reads the table by id: the commands above the last id it has,
and the acknowledgements of the ones it holds unacknowledged. It polls every
``poll_interval`` seconds, for what other nodes write (the leader may be
another process), and at once when this node's writer committed a command or
an acknowledgement (:meth:`CommandFeed.notify`, a cheap in-process wake-up).

Watchers read from it (:meth:`CommandFeed.read_after`) and wait for its next
change (:attr:`CommandFeed.changed`); one whose position lies before what the
feed holds reads the database itself, by id, a page at a time. The feed never
pushes into a watcher: a watcher that does not read holds up nothing but
itself. It polls only while someone watches.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Protocol

from controller.records import CommandRecord

__all__ = ["CommandFeed", "CommandTail", "FeedClosed"]

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.25
KEEP_RECENT = 256
KEEP = 4096
PAGE = 500


class FeedClosed(Exception):
    """The node is stopping: no more events from it."""


class CommandTail(Protocol):
    """Reads commands by id (the Database)."""

    async def last_command_id(self) -> int: ...

    async def commands_after(self, after_id: int, *, limit: int) -> list[CommandRecord]: ...

    async def acknowledged_between(self, low_id: int, high_id: int) -> list[CommandRecord]: ...


class CommandFeed:
    """The newest commands, polled for every watcher of this node."""

    def __init__(
        self,
        source: CommandTail,
        *,
        poll_interval: float = POLL_INTERVAL,
        keep_recent: int = KEEP_RECENT,
        keep: int = KEEP,
    ) -> None:
        self._source = source
        self._poll_interval = poll_interval
        self._keep_recent = keep_recent
        self._keep = max(keep, keep_recent)
        # Every command with an id from _low to _last, in id order (ids only grow).
        self._records: list[CommandRecord] = []
        self._ids: list[int] = []
        self._low = 1
        self._last = 0
        self._loaded = asyncio.Event()
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._watchers = 0
        self._task: asyncio.Task[None] | None = None
        self.closed = False
        self.polls = 0

    @property
    def changed(self) -> asyncio.Event:
        """Set at the feed's next change (take it before reading, then wait on it)."""
        return self._changed

    def notify(self) -> None:
        """This node committed a command or an acknowledgement: poll now."""
        self._wake.set()

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[None]:
        """Hold the poller running while a watcher is open (it loads before this enters)."""
        if self.closed:
            raise FeedClosed("the controller is stopping")
        self._watchers += 1
        if self._task is None:
            self._loaded.clear()
            self._task = asyncio.create_task(self._run(), name="command-feed")
        try:
            loaded = asyncio.ensure_future(self._loaded.wait())
            await asyncio.wait({loaded, self._task}, return_when=asyncio.FIRST_COMPLETED)
            loaded.cancel()
            if self._task.done() and not self._loaded.is_set():
                self._task.result()  # the first load failed: raise its error
                raise FeedClosed("the controller is stopping")
            yield
        finally:
            self._watchers -= 1
            if self._watchers == 0 and self._task is not None:
                task, self._task = self._task, None
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                self._records, self._ids = [], []

    async def close(self) -> None:
        """Stop polling and tell every watcher to end (idempotent)."""
        self.closed = True
        self._tell()
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def last_id(self) -> int:
        """The highest command id in the database now."""
        return await self._source.last_command_id()

    async def read_after(self, after_id: int, limit: int) -> list[CommandRecord]:
        """Up to ``limit`` commands above ``after_id`` in id order, as the feed last saw
        them (or as the database has them, for a position before what the feed holds)."""
        if self._loaded.is_set() and after_id + 1 >= self._low:
            start = bisect.bisect_right(self._ids, after_id)
            return self._records[start : start + limit]
        return await self._source.commands_after(after_id, limit=limit)

    def _tell(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _run(self) -> None:
        await self._load()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                if await self._poll():
                    self._tell()
            except Exception as exc:
                # The database in trouble: watchers wait; the next poll tries again.
                log.debug("command feed: poll failed: %s", exc)

    async def _load(self) -> None:
        last = await self._source.last_command_id()
        records = await self._source.commands_after(
            max(0, last - self._keep_recent), limit=self._keep_recent
        )
        self._records = records
        self._ids = [r.id for r in records]
        self._last = records[-1].id if records else last
        self._low = records[0].id if records else last + 1
        self._loaded.set()

    async def _poll(self) -> bool:
        """Read what changed since the last poll; whether anything did."""
        self.polls += 1
        source = self._source
        new: list[CommandRecord] = []
        while len(new) < self._keep:
            page = await source.commands_after(self._last, limit=PAGE)
            new += page
            if page:
                self._last = page[-1].id
            if len(page) < PAGE:
                break
        lowest = self._lowest_unacknowledged()
        acknowledged: list[CommandRecord] = []
        if lowest is not None:
            held_last = self._ids[-1]
            acknowledged = await source.acknowledged_between(lowest, held_last)
        news = 0
        for record in acknowledged:
            position = bisect.bisect_left(self._ids, record.id)
            held = self._records[position]
            if self._ids[position] == record.id and held.acknowledged_at is None:
                self._records[position] = record
                news += 1
        self._records += new
        self._ids += [r.id for r in new]
        self._trim()
        return bool(new or news)

    def _lowest_unacknowledged(self) -> int | None:
        for record in self._records:
            if record.acknowledged_at is None:
                return record.id
        return None

    def _trim(self) -> None:
        """Keep from the oldest unacknowledged command or the last ``keep_recent``,
        whichever is older; never more than ``keep``."""
        lowest = self._lowest_unacknowledged()
        recent = max(0, len(self._records) - self._keep_recent)
        start = recent
        if lowest is not None:
            start = min(start, bisect.bisect_left(self._ids, lowest))
        start = max(start, len(self._records) - self._keep)
        if start > 0:
            del self._records[:start]
            del self._ids[:start]
        if self._records:
            self._low = self._records[0].id
        else:
            self._low = self._last + 1
