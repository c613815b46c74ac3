"""SQLite: the write-ahead log checkpointed beside the writer, not inside its commits.

By default SQLite checkpoints in the commit that takes the WAL past 1,000 pages: that commit
copies the log into the database file and fsyncs it (``synchronous=FULL``) before it returns,
so every few seconds at the nominal load one commit group took hundreds of milliseconds and
every stream in it waited (creation-to-commit p99 262 ms, max 445 ms at 8 x 300/s; the
decisions, which wait for every sensor's readings past a window's end, up to 126 ms after it).
The writer's connection turns that off (``wal_autocheckpoint=0``,
:mod:`controller.storage.sqlite`) and this task runs a PASSIVE checkpoint every second on a
connection of its own, in its own thread: the writer keeps appending to the log meanwhile (p99
17 ms, decisions within 37 ms, measured with the benchmark's scenario l). PASSIVE never waits
for a lock: a checkpoint that cannot finish (a reader still on old pages) is simply done again
at the next tick.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["CHECKPOINT_INTERVAL", "Checkpoint", "checkpoint", "checkpoint_forever"]

log = logging.getLogger(__name__)

CHECKPOINT_INTERVAL = 1.0
"""Seconds between checkpoints: the log grows by about a second of writes at most."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What one checkpoint did."""

    busy: bool
    logged: int
    """Pages in the log."""
    copied: int
    """Pages of it now in the database file."""


async def checkpoint(engine: AsyncEngine) -> Checkpoint:
    """One PASSIVE checkpoint; what it found and did."""
    async with engine.connect() as conn:
        result = await conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
        busy, logged, copied = (int(value) for value in result.one())
    return Checkpoint(bool(busy), logged, copied)


async def checkpoint_forever(engine: AsyncEngine, interval: float = CHECKPOINT_INTERVAL) -> None:
    """Checkpoint every ``interval`` seconds until cancelled."""
    failing = False
    while True:
        await asyncio.sleep(interval)
        try:
            await checkpoint(engine)
        except SQLAlchemyError as exc:
            # The writer reports the database's trouble; one line here per episode.
            if not failing:
                log.warning("WAL checkpoint failed (retried every %gs): %s", interval, exc)
            failing = True
        else:
            failing = False
