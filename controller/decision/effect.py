"""How big a change was and how sure we are of it (pure): what every decision records.

For window k against the window it is compared with (see :mod:`controller.decision.rule`):

- ``difference``: mean of k minus mean of the previous window, in payload units;
- ``ci_low``/``ci_high``: Welch's confidence interval of that difference at 1 - alpha,
  ``difference ± t·SE`` with t the two-sided Student quantile at the Welch-Satterthwaite
  degrees of freedom and SE² = s_k²/n_k + s_prev²/n_prev: the same SE and df as the test, so
  the interval excludes 0 exactly when p < alpha (up to the last bit of rounding);
- ``effect_size``: Hedges' g, the difference over the pooled standard deviation
  (Cohen's d with s_pooled² = Σ(x - mean)² of both windows / (n_k + n_prev - 2)) times the
  small-sample correction J(m) = Γ(m/2) / (√(m/2)·Γ((m - 1)/2)), m = n_k + n_prev - 2.
  J is computed exactly (not the common 1 - 3/(4m - 1)); it is 0.56 at m = 2 and within 1e-6
  of 1 beyond m = 750 000, so with thousands of readings a window g is d.

Where a value is not defined it is None (absent from History): the difference when either
window has no reading; the interval and g when either window has fewer than two readings;
the interval also when neither window has any variance (SE = 0), g when the pooled standard
deviation is 0 (which is the same case); and any value that is not a finite float (only
possible from absurd persisted summaries, never from integer sums).

Everything comes from the exact sums the controller keeps (:class:`~controller.decision.moments
.Moments`): the difference, variances and d² are exact fractions, rounded once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from scipy import stats as scipy_stats

from controller.decision.moments import Moments, Welch

__all__ = ["NO_EFFECT", "Effect", "measure", "small_sample_correction"]

# Beyond this m, Γ(m/2) overflows a float; the asymptotic series is used instead, whose first
# omitted term is below 1e-14 there.
_GAMMA_LIMIT = 340


@dataclass(frozen=True, slots=True)
class Effect:
    """The size of a decision's change and its confidence interval; None where undefined."""

    difference: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    effect_size: float | None = None
    """Hedges' g (bias-corrected standardised difference)."""


NO_EFFECT = Effect()


def measure(
    current: Moments | None, previous: Moments | None, alpha: float, *, comparison: Welch | None
) -> Effect:
    """The effect of ``current`` against ``previous`` with its interval at 1 - ``alpha``.

    A window is None when it has no reading (or its summary is not finite). ``comparison`` is
    :func:`~controller.decision.moments.welch` of the two (None when it gave none, or a window
    has fewer than two readings): the test computed it already.
    """
    if current is None or previous is None:
        return NO_EFFECT
    difference = current.mean - previous.mean
    shown = _finite(difference)
    if current.count < 2 or previous.count < 2 or shown is None:
        return Effect(difference=shown)
    ci_low = ci_high = None
    if comparison is not None:
        quantile = float(scipy_stats.t.isf(alpha / 2, comparison.df))
        half = quantile * math.sqrt(_to_float(comparison.squared_error))
        if math.isfinite(half):
            ci_low, ci_high = shown - half, shown + half
    return Effect(shown, ci_low, ci_high, _hedges_g(current, previous, difference))


def _hedges_g(current: Moments, previous: Moments, difference: Fraction) -> float | None:
    m = current.count + previous.count - 2
    pooled = (current.deviations + previous.deviations) / m
    if pooled == 0:
        return None
    d = math.copysign(math.sqrt(_to_float(difference * difference / pooled)), difference)
    return _finite(d * small_sample_correction(m))


def small_sample_correction(m: int) -> float:
    """Hedges' J(m) = Γ(m/2) / (√(m/2)·Γ((m - 1)/2)) for m ≥ 2 degrees of freedom."""
    if m < 2:
        raise ValueError(f"J needs m >= 2, got {m}")
    if m <= _GAMMA_LIMIT:
        return math.gamma(m / 2) / (math.sqrt(m / 2) * math.gamma((m - 1) / 2))
    # Γ(y + 1/2)/Γ(y) = √y·(1 - 1/(8y) + 1/(128y²) + 5/(1024y³) - 21/(32768y⁴) + …), y = (m-1)/2.
    y = (m - 1) / 2
    series = 1 - 1 / (8 * y) + 1 / (128 * y**2) + 5 / (1024 * y**3) - 21 / (32768 * y**4)
    return math.sqrt(y / (m / 2)) * series


def _to_float(value: Fraction) -> float:
    """``float(value)``, ±inf beyond the float range (no OverflowError)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _finite(value: Fraction | float) -> float | None:
    number = _to_float(value) if isinstance(value, Fraction) else value
    return number if math.isfinite(number) else None
