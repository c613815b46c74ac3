"""The decision loop: a thin shell that closes each window on time and issues its command.

All the rules live in :mod:`controller.decision.rule` and :mod:`controller.decision.windows`;
this module only waits for deadlines (with an injected clock and sleep), has
each window closed and its command recorded in one transaction of the database
(:mod:`controller.storage.window_stats`: the statistics of every node are summed
there) before handing the command to the manipulator link, and logs. It runs
on the leader only, for one term (``epoch``): when the database says the term
is over it raises NotLeader and the node stops deciding.

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
from fractions import Fraction
from typing import Protocol

from sqlalchemy.exc import SQLAlchemyError

from controller.decision.policy import NO_STREAK, Policy, Streak, decide_under
from controller.decision.rule import WindowStats
from controller.decision.watermarks import Holdable, RunReach, Settled, Watermarks
from controller.decision.windows import DecisionSchedule, window_bounds
from controller.errors import NotLeader, StorageError
from controller.metrics import ControllerMetrics
from controller.records import ClosedWindows, CloseWindows, CommandRecord
from workcell.backoff import Backoff
from workcell.timeconv import US_PER_SECOND, Clock, now_us, to_iso

__all__ = [
    "CommandSender",
    "DecisionLoop",
    "ReachSource",
    "WindowCloser",
    "exact_sums",
    "report_skipped",
]

log = logging.getLogger(__name__)

# Recording a command while the database refuses writes.
RECORD_RETRY = Backoff(initial=0.1, maximum=5.0)
# How often a window that has ended reads the sensor runs' reach again while it waits.
POLL_US = 20_000
# A run silent this long stops holding windows back (controller.decision.watermarks).
DEFAULT_IDLE_US = 2_000_000


class WindowCloser(Protocol):
    """Closes windows and records their commands in the database (the writer)."""

    async def close_windows(self, close: CloseWindows) -> ClosedWindows: ...


class ReachSource(Protocol):
    """How far each sensor run's committed readings reach (the database)."""

    async def run_reaches(self, holdable: Holdable | None = None) -> list[RunReach]: ...


class CommandSender(Protocol):
    """Delivers recorded commands in order (the manipulator link)."""

    def enqueue(self, record: CommandRecord) -> None: ...


class DecisionLoop:
    """Decides every window at its deadline; one command per period."""

    def __init__(
        self,
        *,
        schedule: DecisionSchedule,
        alpha: float,
        status: str,
        previous: WindowStats,
        next_id: int,
        closer: WindowCloser,
        sender: CommandSender,
        clock: Clock = now_us,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        metrics: ControllerMetrics | None = None,
        last_issued_at: int = 0,
        epoch: int = 0,
        min_effect: float = 0.0,
        confirm: int = 1,
        streak: Streak = NO_STREAK,
        reaches: ReachSource | None = None,
        idle_us: int = DEFAULT_IDLE_US,
    ) -> None:
        self.schedule = schedule
        self.epoch = epoch
        self.policy = Policy(alpha=alpha, min_effect=min_effect, confirm=confirm)
        self.streak = streak
        self.status = status
        self.previous = previous
        self.next_id = next_id
        self._closer = closer
        self._sender = sender
        self._clock = clock
        self._sleep = sleep
        self._metrics = metrics if metrics is not None else ControllerMetrics()
        self.last: CommandRecord | None = None
        # None: windows are decided as soon as they end (nothing to wait for).
        self._reaches = reaches
        self.watermarks = Watermarks(
            period_us=schedule.period_us,
            bound_us=schedule.grace_us,
            idle_us=idle_us,
            started_us=clock(),
        )
        # Issue times follow the ids even when the wall clock steps back:
        # History orders by (issued_at, id) and counts a merged run by its ids.
        self._last_issued_at = last_issued_at

    async def run(self) -> None:
        """Decide windows until cancelled, or until NotLeader (the term is over)."""
        while True:
            await self.step()

    async def step(self) -> list[CommandRecord]:
        """Wait for the next window to end, then decide it once its data is complete.

        Woken late (the process was stopped, or recording the last command took periods),
        the windows that fell due meanwhile are skipped but the latest, as after a restart.
        """
        schedule = self.schedule
        delay_us = schedule.end(schedule.next_due()) - self._clock()
        if delay_us > 0:
            await self._sleep(delay_us / 1e6)
        due = schedule.due(self._clock())
        report_skipped(
            due.skipped, schedule.period_us, self._metrics, "the decision loop was held up"
        )
        return [await self.decide_window(index) for index in due.decide]

    async def decide_window(self, index: int) -> CommandRecord:
        """Wait until window ``index`` is complete (or its deadline), close it (and the
        skipped ones before it), decide, record and send its command."""
        start, end = window_bounds(index, self.schedule.period_us)
        await self._complete(end)

        def command(stats: WindowStats) -> CommandRecord:
            # Called in the closing transaction, with every node's statistics summed. Pure:
            # a close retried after an unknown outcome calls it again.
            policy = self.policy
            decision, verdict = decide_under(stats, self.previous, self.status, self.streak, policy)
            return CommandRecord(
                id=self.next_id,
                status=verdict.status,
                window_start=start,
                window_end=end,
                issued_at=max(self._clock(), self._last_issued_at),
                outcome=str(verdict.outcome),
                changed=verdict.changed,
                p_value=decision.p_value,
                alpha=policy.alpha,
                window=decision.current,
                previous=decision.previous,
                epoch=self.epoch,
                effect=decision.effect,
                min_effect=policy.min_effect,
                confirm=policy.confirm,
                streak=verdict.streak,
                window_sums=exact_sums(stats),
            )

        # Recorded first: a command is never sent that the database does not
        # know, so a restart (or the next leader) resends it instead of reusing its id.
        closed = await self._close(CloseWindows(self.epoch, end, start, self.next_id, command))
        record = closed.record
        assert record is not None, "a close with a decision records a command"
        self.schedule.decided(index)
        self._sender.enqueue(record)
        metrics = self._metrics
        metrics.commands_sent.inc()
        metrics.decisions.labels(outcome=record.outcome).inc()
        metrics.last_p_value.set(math.nan if record.p_value is None else record.p_value)
        metrics.last_decision_time.set(record.issued_at / US_PER_SECOND)
        self.next_id += 1
        self.status = record.status
        # The state a restart restores is the record's: the loop carries on from the same.
        self.streak = record.streak if record.streak is not None else NO_STREAK
        self.previous = closed.stats  # exact sums: the next test cancels nothing in floats
        self.last = record
        self._last_issued_at = record.issued_at
        metrics.decision_delay.observe(max(0, record.issued_at - end) / US_PER_SECOND)
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
                "difference": record.effect.difference,
                "ci_low": record.effect.ci_low,
                "ci_high": record.effect.ci_high,
                "effect_size": record.effect.effect_size,
            },
        )
        await self._settle()
        return record

    async def _complete(self, end_us: int) -> None:
        """Wait until no live sensor run holds back the window ending at ``end_us``, or
        until its deadline."""
        if self._reaches is None:
            return
        watermarks = self.watermarks
        deadline = watermarks.deadline(end_us)
        runs: list[RunReach] = []
        while True:
            asked = self._clock()
            try:
                runs = await self._reaches.run_reaches(watermarks.holdable(end_us, asked))
                unknown = False
            except (SQLAlchemyError, OSError) as exc:
                # Not known: waited for until the deadline (the close then retries).
                log.debug("could not read the sensor runs' reach: %s", exc)
                unknown = True
            # Not before the time the read asked with: a wall clock stepped back meanwhile
            # would make a run count as not idle that the read left out as idle.
            now = max(self._clock(), asked)
            if now >= deadline or not (unknown or watermarks.holding(runs, end_us, now)):
                return
            await self._sleep(min(POLL_US, deadline - now) / US_PER_SECOND)

    async def _settle(self) -> None:
        """Tell the runs that fell behind or caught up since the last decision: every
        run read once a decision, not at every poll."""
        if self._reaches is None:
            return
        try:
            runs = await self._reaches.run_reaches()
        except (SQLAlchemyError, OSError) as exc:
            log.debug("could not read the sensor runs' reach: %s", exc)
            return  # told after the next decision
        self._report(self.watermarks.settle(runs))

    def _report(self, settled: Settled) -> None:
        """Log the runs that fell behind or caught up since the last decision."""
        for run in settled.behind:
            lag = (run.heard_us - run.reached_us) / US_PER_SECOND
            log.warning(
                "sensor %r is behind: its newest reading was %.3f s old when received, more "
                "than --grace plus a period; decisions do not wait for it (its readings will "
                "be stale) until it catches up: is its clock behind, or its delivery late?",
                run.sensor_id,
                lag,
                extra={"sensor_id": run.sensor_id, "behind_seconds": lag},
            )
        for run in settled.caught_up:
            log.info(
                "sensor %r caught up: decisions wait for its readings again",
                run.sensor_id,
                extra={"sensor_id": run.sensor_id},
            )
        self._metrics.sensors_behind.set(len(self.watermarks.behind))

    async def _close(self, close: CloseWindows) -> ClosedWindows:
        """Close and record, retrying while the database refuses writes.

        The cadence pauses meanwhile; once writes succeed, the next step
        decides the latest window that fell due and skips the older ones (the
        same rule as after a restart), so the manipulator gets no burst.
        NotLeader is not retried: the term is over.
        """
        for attempt, delay in enumerate(RECORD_RETRY.delays()):
            try:
                return await self._closer.close_windows(close)
            except NotLeader:
                raise
            except StorageError as exc:
                # Once per episode: the writer logs the database's trouble itself.
                if attempt == 0:
                    log.warning("command %d not recorded yet (%s); retrying", close.next_id, exc)
                await self._sleep(delay)
        raise AssertionError("unreachable: the delays never end")


def exact_sums(stats: WindowStats) -> tuple[int, int] | None:
    """A window's sum and sum of squares as ints; None unless they are whole numbers (the
    controller's always are: payloads are int64)."""
    sums = []
    for value in (stats.total, stats.total_sq):
        if isinstance(value, int):
            sums.append(value)
        elif isinstance(value, Fraction) and value.denominator == 1:
            sums.append(value.numerator)
        else:
            return None
    return sums[0], sums[1]


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
