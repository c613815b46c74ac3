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
- **behind**: it was still holding a window when the bound ran out (its clock is behind, or
  its delivery is), and has not caught up since. It delays that one decision by the bound,
  is reported, and is not waited for again until a window is decided with the run past its
  end.

Pure: callers pass the time and the runs in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["RunReach", "Settled", "Watermarks"]


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
class Settled:
    """What deciding a window changed in the runs not waited for."""

    behind: list[RunReach]
    """Runs that held the window until the bound ran out: not waited for from now on."""
    caught_up: list[RunReach]
    """Runs behind before that had passed the window's end: waited for again."""


class Watermarks:
    """Which runs a window waits for, for one term of the leader."""

    __slots__ = ("_behind", "bound_us", "idle_us", "started_us")

    def __init__(self, *, bound_us: int, idle_us: int, started_us: int) -> None:
        if bound_us < 0 or idle_us < 0:
            raise ValueError(f"bounds must not be negative, got {bound_us}, {idle_us}")
        self.bound_us = bound_us
        self.idle_us = idle_us
        self.started_us = started_us
        self._behind: dict[int, RunReach] = {}

    @property
    def behind(self) -> list[RunReach]:
        """The runs not waited for because they are behind, as they were found."""
        return list(self._behind.values())

    def deadline(self, end_us: int) -> int:
        """The latest time the window ending at ``end_us`` is decided."""
        return max(end_us, self.started_us) + self.bound_us

    def holding(self, runs: Sequence[RunReach], end_us: int, now_us: int) -> list[RunReach]:
        """The runs the window ending at ``end_us`` still waits for at ``now_us``."""
        started, idle, behind = self.started_us, self.idle_us, self._behind
        waiting = [r for r in runs if r.reached_us < end_us and r.run_id not in behind]
        if not waiting:
            return waiting  # the usual case, every poll: nothing more to look at
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

    def settle(self, runs: Sequence[RunReach], end_us: int, now_us: int) -> Settled:
        """The window ending at ``end_us`` was decided at ``now_us`` with ``runs`` as read
        last: the runs still holding it are behind from now on; behind runs past its end
        have caught up."""
        late = self.holding(runs, end_us, now_us)
        caught_up = [r for r in runs if r.run_id in self._behind and r.reached_us >= end_us]
        # Runs gone from the table (silent for a minute) are forgotten with it.
        still = {r.run_id for r in runs} - {r.run_id for r in caught_up}
        self._behind = {run_id: r for run_id, r in self._behind.items() if run_id in still}
        for run in late:
            self._behind[run.run_id] = run
        return Settled(late, caught_up)
