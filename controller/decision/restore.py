"""Where decisions resume when a node becomes leader: pure, from what the database holds.

The database says up to where windows are decided (``decided_until``) and what the last
command was; the rest follows the rule after a stall
(:func:`~controller.decision.windows.due_windows`): of the windows whose deadline passed
while nobody led, only the latest is still decided; windows not yet due are kept. The window
the next decision compares with is the last command's, as after a stall: its exact sums when
the command has them (revision 0006), else rebuilt from its float summary. The streak of the
guards (:mod:`controller.decision.policy`) is the last command's too, so a new leader decides
as the old one would have. The open windows' statistics need no restoring: they are in the
database, committed with the readings.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.decision.policy import NO_STREAK, Streak
from controller.decision.rule import WindowStats
from controller.decision.windows import DecisionSchedule, due_windows, window_index
from controller.records import CommandRecord

__all__ = ["DecisionState", "previous_window", "restore"]


@dataclass(slots=True)
class DecisionState:
    """What the decision loop starts from."""

    schedule: DecisionSchedule
    status: str
    previous: WindowStats
    """The window the next decision compares with."""
    next_id: int
    last_issued_at: int
    """Issue times never go back, even if the clock does (0: no command yet)."""
    skipped: range
    """Windows whose deadline passed while nobody led: they get no command."""
    streak: Streak = NO_STREAK
    """The guards' streak after the last command (none before revision 0006)."""


def restore(
    last: CommandRecord | None,
    *,
    decided_until: int,
    now_us: int,
    period_us: int,
    grace_us: int,
    initial_status: str,
) -> DecisionState:
    """The state at ``now_us`` after ``last``, the last command stored (None: none yet),
    with windows decided up to ``decided_until`` (0: never any)."""
    if decided_until <= 0 and last is None:
        # A new cell: decisions start with the window now open, nothing is skipped.
        last_decided = window_index(now_us, period_us) - 1
        skipped = range(0)
    else:
        # The window holding the last instant decided (a changed period rounds up).
        skipped = due_windows((decided_until - 1) // period_us, now_us, period_us, grace_us).skipped
        last_decided = skipped.stop - 1
    schedule = DecisionSchedule(period_us, grace_us, last_decided)
    if last is None:
        return DecisionState(schedule, initial_status, WindowStats(), 1, 0, skipped)
    return DecisionState(
        schedule,
        last.status,
        previous_window(last),
        last.id + 1,
        last.issued_at,
        skipped,
        last.streak if last.streak is not None else NO_STREAK,
    )


def previous_window(last: CommandRecord) -> WindowStats:
    """The statistics of ``last``'s window, for the next decision to compare with."""
    if last.window_sums is not None:
        total, total_sq = last.window_sums
        return WindowStats(last.window.count, total, total_sq)
    # Before revision 0006: the floats are taken as exact values (see WindowStats.from_summary).
    return WindowStats.from_summary(last.window.count, last.window.mean, last.window.std)
