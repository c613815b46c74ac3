"""A window's exact moments and the parts of Welch's test that need them (pure).

Shared by the test itself (:mod:`controller.decision.rule`) and the effect it measured
(:mod:`controller.decision.effect`), so that both use the same standard error and the same
Welch-Satterthwaite degrees of freedom. Everything is an exact :class:`~fractions.Fraction`
until the last step that needs a float.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

__all__ = ["Moments", "Welch", "welch"]


@dataclass(frozen=True, slots=True)
class Moments:
    """A window's count, exact mean and exact sum of squared deviations from the mean."""

    count: int
    mean: Fraction
    deviations: Fraction
    """Σ(x - mean)², which is (count - 1)·s² (the sample variance s², ddof=1)."""

    @classmethod
    def of_sums(cls, count: int, total: Fraction, total_sq: Fraction) -> Moments:
        """From a window's count (at least one), sum and sum of squares."""
        if count < 1:
            raise ValueError(f"a window's moments need a reading, got count {count}")
        spread = count * total_sq - total * total  # count·Σ(x - mean)², exact
        # Only float sums (accepted, never kept by the controller) can round below zero.
        return cls(count, total / count, max(spread, Fraction(0)) / count)

    @property
    def variance_of_mean(self) -> Fraction:
        """s²/n, the squared standard error of the mean (two readings or more)."""
        return self.deviations / (self.count * (self.count - 1))


@dataclass(frozen=True, slots=True)
class Welch:
    """Welch's comparison of two windows' means, before any p-value or interval."""

    difference: Fraction
    """Mean of the first window minus mean of the second, exact."""
    squared_error: Fraction
    """The squared standard error of the difference, s_a²/n_a + s_b²/n_b, exact."""
    df: float
    """The Welch-Satterthwaite degrees of freedom."""


def welch(a: Moments, b: Moments) -> Welch | None:
    """Welch's comparison of ``a`` against ``b`` (each with two readings or more); None when
    neither window has any variance (the standard error is zero: nothing to test)."""
    variance_a = a.variance_of_mean
    variance_b = b.variance_of_mean
    squared_error = variance_a + variance_b
    if squared_error == 0:
        return None
    # A ratio between min(n)-1 and n_a+n_b-2, so it always fits a float.
    df = float(
        squared_error
        * squared_error
        / (variance_a * variance_a / (a.count - 1) + variance_b * variance_b / (b.count - 1))
    )
    return Welch(a.mean - b.mean, squared_error, df)
