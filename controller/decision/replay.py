"""Replaying a policy over recorded decisions (pure): what ``workcell replay`` computes.

Each command records the window it decided and the window it was compared with (the previous
command's: the last window decided), as exact sums from revision 0006 on, and the policy that
decided it. A replay feeds those windows, oldest first, through the controller's own
:func:`~controller.decision.policy.decide_under`, carrying the status and the streak from one
decision to the next exactly as the decision loop does. Which windows were decided, and what
each was compared with, does not depend on the policy, so no raw reading is needed: a replay
works on the whole history even after readings were pruned.

- **Policy.** Each part of the policy not overridden is the one recorded with that command
  (the policy in force then; commands recorded before revision 0006 carry alpha only and were
  decided by the plain rule: min effect 0, confirm 1). With no override the replay therefore
  reproduces the issued statuses exactly, across restarts that changed the policy too.
- **Start.** The first decision replayed starts from the state in force before it, as
  recorded: the status before it (its status, or the other one when it changed the status)
  and the streak before it, as far as the record tells it (a recorded streak of L >= 2 in a
  direction followed one of L - 1; otherwise the streak before cannot have counted towards
  this decision under its own policy). An ``initial_status`` starts afresh instead: that
  status and no streak.
- **Exactness.** A window with exact sums is decided as the controller decided it. A window
  without (recorded before revision 0006) is decided from its n / mean / std taken as exact
  values, as the controller's restart does (:meth:`~controller.decision.rule.WindowStats
  .from_summary`); the test then agrees up to the rounding of those floats, not to the bit,
  and such decisions are marked ``exact=False``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from controller.decision.policy import NO_STREAK, Policy, Streak, Verdict, decide_under
from controller.decision.rule import STATUSES, Decision, WindowStats, WindowSummary

__all__ = [
    "PolicyOverride",
    "RecordedDecision",
    "Replay",
    "Replayed",
    "streak_before",
]


@dataclass(frozen=True, slots=True)
class RecordedDecision:
    """One command as recorded: the windows it was decided on, what was issued, under what."""

    command_id: int
    window_start: int
    window_end: int
    window: WindowStats | WindowSummary
    """Exact sums when recorded (revision 0006), else the float summary."""
    previous: WindowStats | WindowSummary
    """The window it was compared with (the previous command's), likewise."""
    status: str
    changed: bool
    policy: Policy
    streak: Streak | None = None
    """The streak after it; None: not recorded (before revision 0006)."""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be 'up' or 'down', got {self.status!r}")

    @property
    def exact(self) -> bool:
        """Whether both windows are known as exact sums (an empty window always is)."""
        return all(
            isinstance(window, WindowStats) or window.count == 0
            for window in (self.window, self.previous)
        )

    @property
    def status_before(self) -> str:
        """The status in force before this decision."""
        if not self.changed:
            return self.status
        return "down" if self.status == "up" else "up"


def streak_before(recorded: RecordedDecision) -> Streak:
    """The streak before ``recorded``, as far as it counts towards it under its own policy."""
    streak = recorded.streak
    if streak is None or streak.direction is None or streak.length < 2:
        return NO_STREAK
    return Streak(streak.direction, streak.length - 1)


@dataclass(frozen=True, slots=True)
class PolicyOverride:
    """The parts of the policy a replay sets for every window (None: as recorded)."""

    alpha: float | None = None
    min_effect: float | None = None
    confirm: int | None = None

    def __post_init__(self) -> None:
        # Policy checks the values: alpha in (0, 1), min_effect >= 0, confirm >= 1.
        self.apply(Policy())

    def apply(self, recorded: Policy) -> Policy:
        """The policy replayed for a window recorded under ``recorded``."""
        return replace(
            recorded,
            alpha=recorded.alpha if self.alpha is None else self.alpha,
            min_effect=recorded.min_effect if self.min_effect is None else self.min_effect,
            confirm=recorded.confirm if self.confirm is None else self.confirm,
        )


@dataclass(frozen=True, slots=True)
class Replayed:
    """One window replayed: what was recorded beside what the replayed policy decides."""

    recorded: RecordedDecision
    policy: Policy
    decision: Decision
    verdict: Verdict

    @property
    def status(self) -> str:
        """The replayed status after this window."""
        return self.verdict.status

    @property
    def changed(self) -> bool:
        return self.verdict.changed

    @property
    def differs(self) -> bool:
        """Whether the replayed status differs from the one issued."""
        return self.verdict.status != self.recorded.status


class Replay:
    """Replays recorded decisions, fed oldest first, under a policy override."""

    def __init__(
        self, override: PolicyOverride | None = None, *, initial_status: str | None = None
    ) -> None:
        if initial_status is not None and initial_status not in STATUSES:
            raise ValueError(f"initial status must be 'up' or 'down', got {initial_status!r}")
        self._override = override if override is not None else PolicyOverride()
        self._initial_status = initial_status
        self._status: str | None = None
        self._streak = NO_STREAK
        self._last_id: int | None = None

    def step(self, recorded: RecordedDecision) -> Replayed:
        """Decide ``recorded``'s window under the replayed policy and carry the state on.

        Raises ValueError when the commands do not follow each other (a gap in the ids means
        the feed lost a command, and every decision after it would rest on the wrong state).
        """
        if self._last_id is not None and recorded.command_id != self._last_id + 1:
            raise ValueError(
                f"command {recorded.command_id} does not follow command {self._last_id}: "
                "a replay needs every command of its range, in order"
            )
        if self._status is None:
            if self._initial_status is not None:
                self._status, self._streak = self._initial_status, NO_STREAK
            else:
                self._status, self._streak = recorded.status_before, streak_before(recorded)
        policy = self._override.apply(recorded.policy)
        decision, verdict = decide_under(
            recorded.window, recorded.previous, self._status, self._streak, policy
        )
        self._status, self._streak = verdict.status, verdict.streak
        self._last_id = recorded.command_id
        return Replayed(recorded, policy, decision, verdict)
