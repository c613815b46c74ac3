"""Window statistics and the decision rule, with no I/O.

Each period the controller compares the window just closed with the one before it using
Welch's two-sided t-test (see docs/design.md, "Decision semantics"):

- p < alpha: the status follows the mean ("up" when the current mean is higher, "down" when
  lower);
- p >= alpha: the status is kept;
- fewer than two readings in either window, zero variance in both, or a summary that is not
  finite: no test, the status is kept.

Statistics are kept as a running count, sum and sum of squares so that readings are folded in as
they arrive; the database is never re-read to decide.

The test runs on those exact sums: the difference of the means and the variances are exact
rationals, rounded to floats only once nothing can cancel any more (the t statistic and the
Welch-Satterthwaite degrees of freedom), and the p-value comes from the t distribution. Payloads
are int64, so two means near 2**63 can differ by far less than the spacing of floats there (2048):
rounding the means first would make them equal. The audit record keeps the float n / mean / std,
and the effect the test measured (:mod:`controller.decision.effect`: the difference of the
means, its confidence interval at 1 - alpha, Hedges' g).

The guards against flapping (``--min-effect``, ``--confirm``) are not part of this rule: they
are applied to its decision by :mod:`controller.decision.policy`.
"""

from __future__ import annotations

import enum
import math
import operator
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

from scipy import stats as scipy_stats

from controller.decision.effect import NO_EFFECT, Effect, measure
from controller.decision.moments import Moments, Welch, welch

__all__ = [
    "STATUSES",
    "Decision",
    "Outcome",
    "WindowStats",
    "WindowSummary",
    "decide",
]

STATUSES = ("up", "down")


@dataclass(frozen=True, slots=True)
class WindowSummary:
    """What a decision is based on for one window: n, mean and sample std (ddof=1)."""

    count: int
    mean: float
    std: float


@dataclass(slots=True)
class WindowStats:
    """Running count / sum / sum of squares of one window's payloads.

    Fed ints (payloads are int64), ``total`` and ``total_sq`` stay exact Python ints, so the
    mean and std are exact up to the final rounding even for payloads near 2**63, where
    float sums of squares would cancel catastrophically. Rebuilt by :meth:`from_summary` they
    are exact :class:`~fractions.Fraction` values of the persisted floats, so readings added
    afterwards are still folded in without loss. Plain floats are accepted too (then the usual
    float rounding applies).
    """

    count: int = 0
    total: float | Fraction = 0
    total_sq: float | Fraction = 0

    def add(self, value: int) -> None:
        """Count one payload."""
        self.count += 1
        self.total += value
        self.total_sq += value * value

    def add_many(self, values: Iterable[int]) -> None:
        """Count a batch of payloads (one pass of C-level sums, no per-value bookkeeping)."""
        batch = values if isinstance(values, list | tuple) else list(values)
        if not batch:
            return
        self.count += len(batch)
        self.total += sum(batch)
        self.total_sq += sum(map(operator.mul, batch, batch))

    def merge(self, other: WindowStats) -> None:
        """Fold another window's statistics into this one."""
        self.count += other.count
        self.total += other.total
        self.total_sq += other.total_sq

    def copy(self) -> WindowStats:
        """An independent copy."""
        return WindowStats(self.count, self.total, self.total_sq)

    @property
    def mean(self) -> float:
        """The mean payload; 0.0 when empty."""
        if self.count == 0:
            return 0.0
        # int / int and Fraction / int are exact until the final rounding to float.
        return float(self.total / self.count)

    @property
    def std(self) -> float:
        """The sample standard deviation (ddof=1); 0.0 with fewer than two payloads."""
        n = self.count
        if n < 2:
            return 0.0
        # n*sumsq - sum^2 is exact for ints and Fractions; only floats can round below zero.
        spread = n * self.total_sq - self.total * self.total
        if spread <= 0:
            return 0.0
        return math.sqrt(float(spread / (n * (n - 1))))

    @classmethod
    def from_summary(cls, count: int, mean: float, std: float) -> WindowStats:
        """Rebuild the running sums from a persisted n / mean / std (ddof=1).

        The sums are exact rationals of the given floats, so ``summary()`` gives back the same
        mean and std (up to the last bit of the square root) and later ``add`` calls stay exact.
        """
        if count < 0:
            raise ValueError(f"count must not be negative, got {count}")
        if not (math.isfinite(mean) and math.isfinite(std)) or std < 0:
            raise ValueError(f"mean and std must be finite and std >= 0, got {mean!r}, {std!r}")
        if count == 0:
            return cls()
        exact_mean = Fraction(mean)
        # With one reading the std carries no information (it is 0 by definition).
        exact_var = Fraction(std) ** 2 if count > 1 else Fraction(0)
        total = exact_mean * count
        total_sq = exact_var * (count - 1) + count * exact_mean * exact_mean
        return cls(count, total, total_sq)

    def summary(self) -> WindowSummary:
        """The frozen n / mean / std of this window."""
        return WindowSummary(count=self.count, mean=self.mean, std=self.std)


class Outcome(enum.StrEnum):
    """Why the decision came out as it did."""

    SIGNIFICANT = "significant"  # p < alpha, status follows the mean
    NOT_SIGNIFICANT = "not_significant"  # tested, status kept
    TOO_FEW_READINGS = "too_few_readings"  # fewer than two readings in a window, status kept
    NO_VARIANCE = "no_variance"  # both windows have zero variance (or p is NaN), status kept
    # The guards' outcomes extend these in controller.decision.policy.PolicyOutcome.


@dataclass(frozen=True, slots=True)
class Decision:
    """The status after one decision and everything it was based on (the audit record)."""

    status: str  # "up" | "down" after the decision
    changed: bool
    outcome: Outcome
    p_value: float | None  # None when no test was made
    current: WindowSummary
    previous: WindowSummary
    effect: Effect = NO_EFFECT
    """The difference of the means, its interval at 1 - alpha and Hedges' g (None: undefined)."""


def decide(
    current: WindowStats | WindowSummary,
    previous: WindowStats | WindowSummary,
    status: str,
    alpha: float,
) -> Decision:
    """Decide the status after window ``current``, compared with window ``previous``.

    Each window is given as its exact running sums (:class:`WindowStats`, what the controller
    keeps) or as a recorded :class:`WindowSummary` (to replay a decision from its audit record;
    its floats are then taken as exact values). ``status`` is the status before the decision
    ("up" or "down"); ``alpha`` the significance level, in (0, 1). Raises ValueError for any
    other status or alpha.
    """
    if status not in STATUSES:
        raise ValueError(f"status must be 'up' or 'down', got {status!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    current_summary = _summary(current)
    previous_summary = _summary(previous)
    current_moments = _moments(current)
    previous_moments = _moments(previous)
    comparison = None
    if current.count >= 2 and previous.count >= 2 and current_moments and previous_moments:
        comparison = welch(current_moments, previous_moments)
    effect = measure(current_moments, previous_moments, alpha, comparison=comparison)

    def kept(outcome: Outcome, p_value: float | None = None) -> Decision:
        return Decision(status, False, outcome, p_value, current_summary, previous_summary, effect)

    if current.count < 2 or previous.count < 2:
        return kept(Outcome.TOO_FEW_READINGS)
    if current_moments is None or previous_moments is None:
        return kept(Outcome.NO_VARIANCE)  # a NaN or infinite summary: nothing to test
    if comparison is None:
        return kept(Outcome.NO_VARIANCE)
    difference, p_value = _welch(comparison)
    if p_value >= alpha:
        return kept(Outcome.NOT_SIGNIFICANT, p_value)
    if difference > 0:
        new_status = "up"
    elif difference < 0:
        new_status = "down"
    else:  # equal means cannot be significant; kept for safety rather than guessing a direction
        new_status = status
    return Decision(
        new_status,
        new_status != status,
        Outcome.SIGNIFICANT,
        p_value,
        current_summary,
        previous_summary,
        effect,
    )


def _summary(window: WindowStats | WindowSummary) -> WindowSummary:
    return window.summary() if isinstance(window, WindowStats) else window


def _moments(window: WindowStats | WindowSummary) -> Moments | None:
    """Exact moments of a window with a reading or more; None when empty or not finite."""
    if window.count < 1:
        return None
    if isinstance(window, WindowSummary):
        if not (math.isfinite(window.mean) and math.isfinite(window.std)):
            return None
        window = WindowStats.from_summary(window.count, window.mean, window.std)
    # Fraction() of an int, a Fraction or a float is exact: nothing is rounded here.
    return Moments.of_sums(window.count, Fraction(window.total), Fraction(window.total_sq))


def _welch(comparison: Welch) -> tuple[Fraction, float]:
    """(mean of a - mean of b, two-sided p) of Welch's t-test."""
    difference, squared_error = comparison.difference, comparison.squared_error
    t = math.copysign(math.sqrt(_to_float(difference * difference / squared_error)), difference)
    p_value = 2.0 * float(scipy_stats.t.sf(abs(t), comparison.df))  # two-sided
    return difference, min(p_value, 1.0)


def _to_float(value: Fraction) -> float:
    """``float(value)`` for a non-negative value, +inf beyond the float range (no OverflowError)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf
