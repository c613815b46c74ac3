"""The guards against flapping, applied to the rule's decision (pure; a small state machine).

The rule (:func:`controller.decision.rule.decide`) says whether window k's mean differs
significantly from the previous window's. A policy decides what the status does about it:

- ``min_effect`` (``--min-effect``, payload units, 0 = off): a significant window *qualifies*
  only if the absolute difference of the means, as recorded (the float), is at least this;
  otherwise its outcome is ``below_min_effect`` and the status stays.
- ``confirm`` (``--confirm``, 1 = off): the status moves to a direction only once ``confirm``
  consecutive decisions qualified in that direction; before that, a qualifying decision against
  the status has the outcome ``unconfirmed`` and the status stays.

The state besides the status is the **streak**: the direction of the latest qualifying
decisions and how many there were in a row, this one included. Any decision that does not
qualify (not significant, below the minimum effect, no test possible) ends it; a qualifying one
in the other direction starts a new one at 1. A qualifying decision in the direction the
status already has extends the streak and changes nothing (outcome ``significant``, as with
the rule). Decisions are what count, not windows: a window skipped after a stall or an outage
has no decision and neither ends nor extends a streak (its successor is compared with the
last window decided, across the gap).

The streak is recorded with every command, so a restarted controller or a new leader resumes
it from the last command (:mod:`controller.decision.restore`) and decides exactly as the
node before it would have. A restart with another ``--confirm`` applies the new K to the
streak as it stands.

With the defaults (``min_effect`` 0, ``confirm`` 1) every significant decision qualifies and a
streak of 1 is enough: the outcome, status and change are the rule's, exactly.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from controller.decision.rule import STATUSES, Decision, Outcome, WindowStats, WindowSummary, decide

__all__ = [
    "DEFAULT_POLICY",
    "NO_STREAK",
    "Policy",
    "PolicyOutcome",
    "Streak",
    "Verdict",
    "decide_under",
    "govern",
]


class PolicyOutcome(enum.StrEnum):
    """Why a decision under a policy came out as it did: the rule's outcomes and the guards'.

    The values are persisted with each command (``commands.outcome``).
    """

    SIGNIFICANT = Outcome.SIGNIFICANT.value  # qualified: the status follows the mean
    NOT_SIGNIFICANT = Outcome.NOT_SIGNIFICANT.value
    TOO_FEW_READINGS = Outcome.TOO_FEW_READINGS.value
    NO_VARIANCE = Outcome.NO_VARIANCE.value
    BELOW_MIN_EFFECT = "below_min_effect"  # p < alpha, |difference| < min_effect: status kept
    UNCONFIRMED = "unconfirmed"  # qualified against the status, streak < confirm: status kept


@dataclass(frozen=True, slots=True)
class Policy:
    """What decides a window: the test's level and the two guards (both off by default)."""

    alpha: float = 0.05
    min_effect: float = 0.0
    """The least absolute difference of the means (payload units) that may move the status."""
    confirm: int = 1
    """Consecutive qualifying decisions in one direction needed to move the status there."""

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha!r}")
        if not (math.isfinite(self.min_effect) and self.min_effect >= 0):
            raise ValueError(f"min_effect must be finite and >= 0, got {self.min_effect!r}")
        if self.confirm < 1:
            raise ValueError(f"confirm must be at least 1, got {self.confirm!r}")


DEFAULT_POLICY = Policy()


@dataclass(frozen=True, slots=True)
class Streak:
    """The latest qualifying decisions in a row: their direction and how many."""

    direction: str | None = None
    """"up" or "down"; None when the last decision did not qualify (length 0)."""
    length: int = 0

    def __post_init__(self) -> None:
        if (self.direction is None) != (self.length == 0) or self.length < 0:
            raise ValueError(f"a streak has a direction exactly when it has a length: {self!r}")
        if self.direction is not None and self.direction not in STATUSES:
            raise ValueError(f"a streak's direction is 'up' or 'down', got {self.direction!r}")


NO_STREAK = Streak()


@dataclass(frozen=True, slots=True)
class Verdict:
    """The status after a decision under a policy, why, and the streak to carry on."""

    status: str
    changed: bool
    outcome: PolicyOutcome
    streak: Streak


def govern(decision: Decision, status: str, streak: Streak, policy: Policy) -> Verdict:
    """What ``policy`` makes of the rule's ``decision``, taken with the status ``status`` and
    the streak ``streak`` that were in force before it."""
    if decision.outcome is not Outcome.SIGNIFICANT:
        return Verdict(status, False, PolicyOutcome(decision.outcome.value), NO_STREAK)
    difference = decision.effect.difference
    # Significant means a non-zero difference; the rule then gave its direction as the status.
    direction = decision.status
    if difference is None or abs(difference) < policy.min_effect:
        return Verdict(status, False, PolicyOutcome.BELOW_MIN_EFFECT, NO_STREAK)
    length = streak.length + 1 if streak.direction == direction else 1
    carried = Streak(direction, length)
    if direction == status:
        return Verdict(status, False, PolicyOutcome.SIGNIFICANT, carried)
    if length < policy.confirm:
        return Verdict(status, False, PolicyOutcome.UNCONFIRMED, carried)
    return Verdict(direction, True, PolicyOutcome.SIGNIFICANT, carried)


def decide_under(
    current: WindowStats | WindowSummary,
    previous: WindowStats | WindowSummary,
    status: str,
    streak: Streak,
    policy: Policy,
) -> tuple[Decision, Verdict]:
    """The rule's decision of ``current`` against ``previous`` and the policy's verdict on it."""
    decision = decide(current, previous, status, policy.alpha)
    return decision, govern(decision, status, streak, policy)
