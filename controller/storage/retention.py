"""Raw readings retention: delete readings older than ``--retain-readings``.

Only raw readings go: every command keeps its decision record (the window's
count, mean and standard deviation, and the previous window's), so History,
reports and restarts need nothing that retention deletes.

Deletes go through the writer in small batches, each joining one commit
group, with a pause between batches: ingest keeps committing in between, and
a backlog (say, retention first enabled on a month of readings) is worked
off at a bounded rate instead of in one long transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from controller.metrics import ControllerMetrics
from workcell.timeconv import US_PER_SECOND, Clock, now_us, to_iso

__all__ = ["BATCH", "Pruner", "Retention"]

log = logging.getLogger(__name__)

# Rows per delete: a few milliseconds of SQLite time at most.
BATCH = 2_000
# Between batches of one sweep: caps deletes at about 40,000 rows a second,
# far above the 2,400 a second the default load creates.
BATCH_PAUSE = 0.05
# Between sweeps: retention is coarse; a minute more on disk is nothing.
SWEEP_INTERVAL = 60.0


class Pruner(Protocol):
    """Deletes old readings (the writer)."""

    async def prune_readings(self, before_us: int, limit: int) -> int: ...


class Retention:
    """Deletes readings older than ``keep`` seconds, every ``interval`` seconds."""

    def __init__(
        self,
        pruner: Pruner,
        keep: float,
        *,
        clock: Clock = now_us,
        metrics: ControllerMetrics | None = None,
        interval: float = SWEEP_INTERVAL,
        batch: int = BATCH,
        pause: float = BATCH_PAUSE,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if keep <= 0:
            raise ValueError("keep must be positive (to keep readings for ever, run no Retention)")
        self._pruner = pruner
        self._keep_us = round(keep * US_PER_SECOND)
        self._clock = clock
        self._metrics = metrics if metrics is not None else ControllerMetrics()
        self._interval = interval
        self._batch = batch
        self._pause = pause
        self._sleep = sleep

    async def run(self) -> None:
        """Sweep forever (cancel to stop); a failed sweep is retried next interval."""
        log.info(
            "retention: readings older than %gh are deleted every %gs",
            self._keep_us / US_PER_SECOND / 3600,
            self._interval,
        )
        while True:
            try:
                await self.sweep()
            except Exception as exc:
                # The writer already logged the database error and reported
                # NOT_SERVING; retention just tries again later.
                log.warning("retention sweep stopped: %s", exc)
            await self._sleep(self._interval)

    async def sweep(self) -> int:
        """Delete every reading older than the retention; return how many."""
        cutoff = self._clock() - self._keep_us
        deleted = 0
        while True:
            count = await self._pruner.prune_readings(cutoff, self._batch)
            deleted += count
            self._metrics.readings_pruned.inc(count)
            if count < self._batch:
                break
            await self._sleep(self._pause)
        if deleted:
            log.info("retention: deleted %d readings created before %s", deleted, to_iso(cutoff))
        return deleted
