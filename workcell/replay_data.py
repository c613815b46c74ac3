"""What ``workcell replay`` reads and counts (pure): History entries in, tallies out.

:func:`recorded_from_entry` turns one ``HistoryEntry`` (unmerged) into the
:class:`~controller.decision.replay.RecordedDecision` the controller's own replay logic takes;
:class:`ReplayTally` counts what the replay found, a window at a time, in bounded memory
(the windows that differ are kept as ranges of ids: a replay that agrees costs nothing per
window). No I/O here; the fetching is ``workcell.replay_command``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.decision.policy import Policy, Streak
from controller.decision.replay import RecordedDecision, Replayed
from controller.decision.rule import WindowStats, WindowSummary
from workcell.status import status_name
from workcell.timeconv import from_timestamp
from workcell.v1 import command_pb2, history_pb2

__all__ = ["ReplayTally", "recorded_from_entry", "window_of"]


def window_of(summary: history_pb2.WindowSummary) -> WindowStats | WindowSummary:
    """A window as its exact sums when History serves them, else its float summary."""
    if summary.total and summary.total_sq:
        return WindowStats(summary.count, int(summary.total), int(summary.total_sq))
    return WindowSummary(summary.count, summary.mean, summary.std_dev)


def recorded_from_entry(entry: history_pb2.HistoryEntry) -> RecordedDecision:
    """One command as History serves it, for a replay. ValueError when it cannot be one
    (a merged entry, an unknown status)."""
    if entry.command_count > 1:
        raise ValueError(f"entry {entry.command_id} is a merged run; a replay needs each command")
    policy = entry.policy
    # Both guards are recorded from revision 0006 on; before, the plain rule decided.
    recorded_guards = policy.HasField("min_effect") and policy.HasField("confirm")
    streak: Streak | None = None
    if recorded_guards:
        direction = (
            None
            if entry.streak_status == command_pb2.STATUS_UNSPECIFIED
            else status_name(entry.streak_status)
        )
        streak = Streak(direction, entry.streak_length if direction is not None else 0)
    return RecordedDecision(
        command_id=entry.command_id,
        window_start=from_timestamp(entry.from_datetime),
        window_end=from_timestamp(entry.to_datetime),
        window=window_of(entry.window),
        previous=window_of(entry.previous_window),
        status=status_name(entry.status),
        changed=entry.changed,
        policy=Policy(
            alpha=policy.alpha,
            min_effect=policy.min_effect if recorded_guards else 0.0,
            confirm=policy.confirm if recorded_guards else 1,
        ),
        streak=streak,
    )


@dataclass(slots=True)
class ReplayTally:
    """How a replay compares with what was issued, over the windows seen so far."""

    windows: int = 0
    issued_changes: int = 0
    replayed_changes: int = 0
    inexact: int = 0
    """Windows decided from float summaries (recorded before revision 0006)."""
    differing: list[tuple[int, int]] = field(default_factory=list)
    """The windows whose replayed status differs, as ranges of command ids (first, last)."""
    first_start: int | None = None
    last_end: int | None = None

    def add(self, replayed: Replayed) -> None:
        recorded = replayed.recorded
        self.windows += 1
        self.issued_changes += recorded.changed
        self.replayed_changes += replayed.changed
        self.inexact += not recorded.exact
        if self.first_start is None:
            self.first_start = recorded.window_start
        self.last_end = recorded.window_end
        if replayed.differs:
            command_id = recorded.command_id
            if self.differing and self.differing[-1][1] == command_id - 1:
                self.differing[-1] = (self.differing[-1][0], command_id)
            else:
                self.differing.append((command_id, command_id))

    @property
    def differing_windows(self) -> int:
        """How many windows differ."""
        return sum(last - first + 1 for first, last in self.differing)
