"""The decision loop: a thin shell that closes each window on time and issues its command.

All the rules live in :mod:`controller.decision.rule` and :mod:`controller.decision.windows`;
this module only waits for deadlines (with an injected clock and sleep),
records each command before handing it to the manipulator link, and logs.

The "previous window" each decision compares with is the last window decided: the window the
current status rests on. On time that is window k-1. After windows were skipped (a stall, an
outage, a restart: :func:`~controller.decision.windows.due_windows`) it is the window of the
last command issued, the same on both paths, so a change of level that happened while nobody
decided is still seen by the first decision after it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Protocol

from controller.decision.rule import WindowStats, decide
from controller.decision.windows import WindowBook, window_bounds
from controller.errors import StorageError
from controller.metrics import ControllerMetrics
from controller.records import CommandRecord
from workcell.backoff import Backoff
from workcell.timeconv import Clock, now_us, to_iso

__all__ = ["CommandRecorder", "CommandSender", "DecisionLoop", "report_skipped"]

log = logging.getLogger(__name__)

# Recording a command while the database refuses writes.
RECORD_RETRY = Backoff(initial=0.1, maximum=5.0)


class CommandRecorder(Protocol):
    """Persists a command before it is sent (the writer)."""

    async def record_command(self, record: CommandRecord) -> None: ...


class CommandSender(Protocol):
    """Delivers recorded commands in order (the manipulator link)."""

    def enqueue(self, record: CommandRecord) -> None: ...


class DecisionLoop:
    """Decides every window at its deadline; one command per period."""

    def __init__(
        self,
        *,
        book: WindowBook,
        alpha: float,
        status: str,
        previous: WindowStats,
        next_id: int,
        recorder: CommandRecorder,
        sender: CommandSender,
        clock: Clock = now_us,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        metrics: ControllerMetrics | None = None,
        last_issued_at: int = 0,
    ) -> None:
        self.book = book
        self.alpha = alpha
        self.status = status
        self.previous = previous
        self.next_id = next_id
        self._recorder = recorder
        self._sender = sender
        self._clock = clock
        self._sleep = sleep
        self._metrics = metrics if metrics is not None else ControllerMetrics()
        self.last: CommandRecord | None = None
        # Issue times follow the ids even when the wall clock steps back:
        # History orders by (issued_at, id) and counts a merged run by its ids.
        self._last_issued_at = last_issued_at

    async def run(self) -> None:
        """Decide windows forever (cancel to stop)."""
        while True:
            await self.step()

    async def step(self) -> list[CommandRecord]:
        """Wait for the next deadline, then decide the window that is due.

        Woken late (the process was stopped, or recording the last command took periods),
        the windows that fell due meanwhile are skipped but the latest, as after a restart.
        """
        delay_us = self.book.deadline(self.book.next_due()) - self._clock()
        if delay_us > 0:
            await self._sleep(delay_us / 1e6)
        due = self.book.due(self._clock())
        report_skipped(
            due.skipped, self.book.period_us, self._metrics, "the decision loop was held up"
        )
        return [await self.decide_window(index) for index in due.decide]

    async def decide_window(self, index: int) -> CommandRecord:
        """Close window ``index``, decide, record and send its command."""
        stats = self.book.close(index)
        decision = decide(stats, self.previous, self.status, self.alpha)
        start, end = window_bounds(index, self.book.period_us)
        record = CommandRecord(
            id=self.next_id,
            status=decision.status,
            window_start=start,
            window_end=end,
            issued_at=max(self._clock(), self._last_issued_at),
            outcome=str(decision.outcome),
            changed=decision.changed,
            p_value=decision.p_value,
            alpha=self.alpha,
            window=decision.current,
            previous=decision.previous,
        )
        # Recorded first: a command is never sent that the database does not
        # know, so a restart resends it instead of reusing its id.
        await self._record(record)
        self._sender.enqueue(record)
        metrics = self._metrics
        metrics.commands_sent.inc()
        metrics.decisions.labels(outcome=record.outcome).inc()
        metrics.last_p_value.set(math.nan if record.p_value is None else record.p_value)
        self.next_id += 1
        self.status = decision.status
        self.previous = stats  # exact sums: the next test cancels nothing in floats
        self.last = record
        self._last_issued_at = record.issued_at
        log.info(
            "decision: command %d window [%s, %s) status=%s changed=%s p=%s n=%d",
            record.id,
            to_iso(start),
            to_iso(end),
            record.status,
            record.changed,
            "none" if record.p_value is None else f"{record.p_value:.4g}",
            record.window.count,
            extra={
                "command_id": record.id,
                "status": record.status,
                "changed": record.changed,
                "outcome": record.outcome,
                "p_value": record.p_value,
                "window_start": to_iso(start),
                "window_end": to_iso(end),
                "count": record.window.count,
            },
        )
        return record

    async def _record(self, record: CommandRecord) -> None:
        """Record the command, retrying while the database refuses writes.

        The cadence pauses meanwhile; once writes succeed, the next step
        decides the latest window that fell due and skips the older ones (the
        same rule as after a restart), so the manipulator gets no burst.
        """
        for attempt, delay in enumerate(RECORD_RETRY.delays()):
            try:
                await self._recorder.record_command(record)
                return
            except StorageError as exc:
                # Once per episode: the writer logs the database's trouble itself.
                if attempt == 0:
                    log.warning("command %d not recorded yet (%s); retrying", record.id, exc)
                await self._sleep(delay)


def report_skipped(skipped: range, period_us: int, metrics: ControllerMetrics, cause: str) -> None:
    """Log one line and count the windows ``skipped`` (nothing when it is empty)."""
    if not skipped:
        return
    metrics.windows_skipped.inc(len(skipped))
    start = window_bounds(skipped.start, period_us)[0]
    end = window_bounds(skipped.stop - 1, period_us)[1]
    log.warning(
        "skipped %d windows [%s, %s): their deadlines passed while %s; only the latest due "
        "window is decided, against the last window decided",
        len(skipped),
        to_iso(start),
        to_iso(end),
        cause,
        extra={"skipped": len(skipped), "window_start": to_iso(start), "window_end": to_iso(end)},
    )
