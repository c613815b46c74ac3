"""Deciding a window when its data is complete: the watermarks of the live sensor runs.

Every node's writer records, per sensor run, how far its committed readings reach
(``reached_us``: the newest reading's timestamp; sensors send in order, so everything
before it is committed too) and when the node last received one (``heard_us``), in
``run_marks`` (:mod:`controller.storage.window_stats`). The leader reads them back across
nodes and decides window k, ending at E, as soon as no live run holds it back, and at the
latest at max(E, the term's start) + the bound (``--grace``): a term cannot have waited
before it began, so after a restart or a takeover the first window gets the whole bound for
the sensors' resent backlog.

A run holds a window back while it has not reached the window's end, unless it is

- **idle**: nothing heard from it for longer than ``idle_us``; a stopped or crashed sensor
  delays at most one decision, by at most that. A run last heard before the term began is
  waited for until the deadline instead (the leader cannot tell a stopped sensor from one in
  its reconnect backoff: sensors try again at least every 2 s, so within the default bound),
  unless its sensor has been heard since under another run (it restarted: the old run will
  not come back);
- **behind**: its newest reading was older, when received, than the bound plus a period (its
  clock is behind, or its delivery late): none of its readings of a window can arrive before
  the window's deadline, so waiting for it would only delay every decision. Reported when it
  falls behind and when it catches up. A run less late than that is waited for, up to the
  deadline: whatever of its readings arrives by then is counted.

The leader polls while a window waits: it asks the database only for the runs that can
hold it (:class:`Holdable`: a subset of the runs on which :meth:`Watermarks.holding` gives the
same answer as on every run), not for every run of the last minute, which a load that starts
a run a stream (a reconnect storm, the benchmarks' generators) makes thousands.

Pure: callers pass the time and the runs in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Holdable", "RunReach", "Settled", "Watermarks"]


@dataclass(frozen=True, slots=True)
class RunReach:
    """How far one sensor run's committed readings reach, over every node."""

    run_id: int
    sensor_id: str
    reached_us: int
    """The newest committed reading's timestamp."""
    heard_us: int
    """When a node last received one of its readings (that node's clock)."""


@dataclass(frozen=True, slots=True)
class Holdable:
    """Which runs can hold a window back: what a poll reads.

    A run qualifies when it has not reached ``end_us``, is not behind (``heard_us -
    reached_us`` at most ``max_lag_us``), and was heard at or after ``heard_since_us`` (in
    this term, and not idle), or last heard before ``started_us`` with its sensor not heard
    since under any run (the rule of the runs from before the term). The database may return
    more (it looks at each node's row before taking the maxima): :meth:`Watermarks.holding`
    decides, and gives on these runs the answer it gives on every run.
    """

    end_us: int
    heard_since_us: int
    started_us: int
    max_lag_us: int


@dataclass(frozen=True, slots=True)
class Settled:
    """What deciding a window changed in the runs not waited for."""

    behind: list[RunReach]
    """Runs behind now that were not at the decision before: not waited for."""
    caught_up: list[RunReach]
    """Runs behind at the decision before that are not any more: waited for again."""


class Watermarks:
    """Which runs a window waits for, for one term of the leader."""

    __slots__ = ("_behind", "bound_us", "idle_us", "period_us", "started_us")

    def __init__(self, *, period_us: int, bound_us: int, idle_us: int, started_us: int) -> None:
        if period_us <= 0 or bound_us < 0 or idle_us < 0:
            raise ValueError(
                f"need a positive period and bounds not negative, got {period_us}, {bound_us}, "
                f"{idle_us}"
            )
        self.period_us = period_us
        self.bound_us = bound_us
        self.idle_us = idle_us
        self.started_us = started_us
        # The runs found behind, for telling when they fall behind and catch up.
        self._behind: dict[int, RunReach] = {}

    @property
    def behind(self) -> list[RunReach]:
        """The runs behind at the last decision, as they were found."""
        return list(self._behind.values())

    def deadline(self, end_us: int) -> int:
        """The latest time the window ending at ``end_us`` is decided."""
        return max(end_us, self.started_us) + self.bound_us

    def is_behind(self, run: RunReach) -> bool:
        """Whether ``run``'s readings come too late for any window's deadline."""
        return run.heard_us - run.reached_us > self.bound_us + self.period_us

    def holdable(self, end_us: int, now_us: int) -> Holdable:
        """The runs that can hold the window ending at ``end_us`` at ``now_us`` or later."""
        return Holdable(
            end_us=end_us,
            # A run from before the term is judged by its sensor, not by its silence.
            heard_since_us=max(now_us - self.idle_us, self.started_us),
            started_us=self.started_us,
            max_lag_us=self.bound_us + self.period_us,
        )

    def holding(self, runs: Sequence[RunReach], end_us: int, now_us: int) -> list[RunReach]:
        """The runs the window ending at ``end_us`` still waits for at ``now_us``, given every
        run or only the :meth:`holdable` ones (asked at ``now_us`` or before)."""
        waiting = [r for r in runs if r.reached_us < end_us and not self.is_behind(r)]
        if not waiting:
            return waiting  # the usual case, every poll: nothing more to look at
        started, idle = self.started_us, self.idle_us
        restarted = {r.sensor_id for r in runs if r.heard_us >= started}
        return [
            run
            for run in waiting
            if (
                now_us - run.heard_us <= idle
                if run.heard_us >= started
                else run.sensor_id not in restarted
            )
        ]

    def settle(self, runs: Sequence[RunReach]) -> Settled:
        """After a decision, given every run as read since: the runs that fell behind since
        the previous decision, and the ones that caught up."""
        now_behind = {run.run_id: run for run in runs if self.is_behind(run)}
        settled = Settled(
            [run for run_id, run in now_behind.items() if run_id not in self._behind],
            [run for run in runs if run.run_id in self._behind and run.run_id not in now_behind],
        )
        self._behind = now_behind
        return settled
