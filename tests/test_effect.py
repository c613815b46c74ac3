"""Every decision's effect and confidence, against scipy/numpy computed from the raw samples.

The references never see the controller's sums: scipy's Welch test on the raw arrays gives the
confidence interval (``TtestResult.confidence_interval``), numpy the means and the pooled
standard deviation, and ``scipy.special.poch`` Hedges' correction J. Every value is shift-
invariant, so payloads near 2**63 are shifted near 0 before they become floats (where float64
holds them exactly); the controller's side gets them unshifted.
"""

from __future__ import annotations

import math
import random
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special
from scipy import stats as scipy_stats

from controller.decision.effect import NO_EFFECT, Effect, small_sample_correction
from controller.decision.rule import Outcome, WindowStats, decide

INT64_MAX = 2**63 - 1
REL = 1e-9


def exact(values: list[int]) -> WindowStats:
    stats = WindowStats()
    stats.add_many(values)
    return stats


def reference(current: list[int], previous: list[int], alpha: float) -> Effect:
    """The effect computed from raw samples with numpy/scipy (independent of WindowStats)."""
    base = min(current + previous)
    a = np.asarray([v - base for v in current], dtype=np.float64)
    b = np.asarray([v - base for v in previous], dtype=np.float64)
    difference = float(a.mean() - b.mean())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a constant array: scipy warns, exact
        interval = scipy_stats.ttest_ind(a, b, equal_var=False).confidence_interval(1 - alpha)
    m = a.size + b.size - 2
    pooled = math.sqrt(((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / m)
    j = special.poch((m - 1) / 2, 0.5) / math.sqrt(m / 2)
    g = difference / pooled * j if pooled > 0 else None
    low, high = float(interval.low), float(interval.high)
    if not (math.isfinite(low) and math.isfinite(high)):  # no variance in either window
        return Effect(difference, None, None, g)
    return Effect(difference, low, high, g)


def assert_close(got: Effect, want: Effect) -> None:
    """Within 1e-9 relative; an interval bound relative to the interval's own scale, since a
    bound near 0 is the difference of two much larger numbers in either computation."""
    assert got.difference == pytest.approx(want.difference, rel=REL)
    assert (got.ci_low is None) == (want.ci_low is None)
    if got.ci_low is not None and want.ci_low is not None and want.ci_high is not None:
        scale = max(abs(want.ci_low), abs(want.ci_high))
        assert got.ci_low == pytest.approx(want.ci_low, rel=REL, abs=REL * scale)
        assert got.ci_high == pytest.approx(want.ci_high, rel=REL, abs=REL * scale)
    assert (got.effect_size is None) == (want.effect_size is None)
    if want.effect_size is not None:
        assert got.effect_size == pytest.approx(want.effect_size, rel=REL)


def effect_of(current: list[int], previous: list[int], alpha: float = 0.05) -> Effect:
    return decide(exact(current), exact(previous), "down", alpha).effect


SETS = [
    pytest.param([10, 12, 11, 13, 12, 14], [5, 6, 5, 7, 6, 5], id="clearly-higher"),
    pytest.param([1, 2, 1, 2, 1], [9, 8, 9, 10, 9, 8, 9], id="clearly-lower"),
    pytest.param([3, 5, 4, 6, 5], [4, 5, 3, 6, 4], id="no-difference"),
    pytest.param([0, 10, 20, 30, 40, 50], [5, 7], id="unequal-sizes-and-spreads"),
    pytest.param([100, 101], [98, 99, 100, 97, 96, 95, 94, 93], id="two-readings"),
    pytest.param([4, 9], [1, 7], id="two-and-two"),
    pytest.param([4, 9, 5], [1, 7, 2], id="three-and-three"),
    pytest.param([7, 7, 7, 7, 7], [1, 3, 5, 2, 4], id="zero-variance-in-current"),
    pytest.param([1, 3, 5, 2, 4], [7, 7, 7], id="zero-variance-in-previous"),
    pytest.param([-50, -40, -45, -55], [-10, 0, 10, 5, -5], id="negative-payloads"),
    pytest.param(
        [INT64_MAX - 99 - (i % 2) for i in range(50)],
        [INT64_MAX - d for d in range(6)],
        id="near-int64-max",
    ),
    pytest.param(
        [-(2**63) + d for d in (3, 1, 4, 1, 5)],
        [-(2**63) + d for d in (9, 2, 6, 5, 3, 5)],
        id="near-int64-min",
    ),
]


@pytest.mark.parametrize(("current", "previous"), SETS)
@pytest.mark.parametrize("alpha", [0.05, 0.01, 0.5, 1e-6])
def test_effect_and_interval_match_scipy_on_raw_samples(
    current: list[int], previous: list[int], alpha: float
) -> None:
    assert_close(effect_of(current, previous, alpha), reference(current, previous, alpha))


def test_huge_windows_of_a_million_readings() -> None:
    rng = random.Random(14)
    current = [rng.randint(0, 1000) for _ in range(1_000_000)]
    previous = [rng.randint(1, 1000) for _ in range(1_000_000)]
    got = effect_of(current, previous)
    assert_close(got, reference(current, previous, 0.05))
    assert got.ci_low is not None
    assert got.ci_high is not None
    assert got.difference is not None
    assert got.ci_low < got.difference < got.ci_high


def test_a_million_readings_near_int64_max_that_floats_cannot_tell_apart() -> None:
    rng = random.Random(63)
    current = [INT64_MAX - rng.randint(0, 2000) for _ in range(1_000_000)]
    previous = [INT64_MAX - rng.randint(2, 2000) for _ in range(1_000_000)]
    got = effect_of(current, previous)
    # float(mean) is the same number for both windows here: only exact sums see the difference.
    assert exact(current).mean == exact(previous).mean
    assert got.difference != 0.0
    assert_close(got, reference(current, previous, 0.05))


def test_zero_variance_in_both_windows_has_a_difference_but_no_interval_or_g() -> None:
    decision = decide(exact([5, 5, 5]), exact([3, 3]), "down", 0.05)
    assert decision.outcome is Outcome.NO_VARIANCE
    assert decision.effect == Effect(difference=2.0)


def test_a_window_with_one_reading_has_a_difference_only() -> None:
    decision = decide(exact([9]), exact([1, 2, 3]), "down", 0.05)
    assert decision.outcome is Outcome.TOO_FEW_READINGS
    assert decision.effect == Effect(difference=7.0)


@pytest.mark.parametrize(("current", "previous"), [([], [1, 2, 3]), ([4, 5], []), ([], [])])
def test_an_empty_window_has_no_effect(current: list[int], previous: list[int]) -> None:
    assert effect_of(current, previous) == NO_EFFECT


def test_a_decision_replayed_from_its_audit_record_measures_the_same_effect() -> None:
    current, previous = [10, 12, 11, 13, 12, 14], [5, 6, 5, 7, 6, 5]
    live = decide(exact(current), exact(previous), "down", 0.05)
    replayed = decide(live.current, live.previous, "down", 0.05)
    assert_close(replayed.effect, live.effect)


def test_absurd_persisted_summaries_give_no_infinite_g() -> None:
    # Spreads of 1e-300 around means of ±1e300: d = 2e300 / 1e-300 is no float.
    current = WindowStats.from_summary(5, 1e300, 1e-300)
    previous = WindowStats.from_summary(5, -1e300, 1e-300)
    got = decide(current, previous, "down", 0.05).effect
    assert got.difference == 2e300
    assert got.effect_size is None


@pytest.mark.parametrize("m", [2, 3, 4, 10, 100, 339, 340, 341, 1000, 10**5, 2 * 10**6, 10**12])
def test_hedges_correction_matches_the_gamma_ratio(m: int) -> None:
    want = special.poch((m - 1) / 2, 0.5) / math.sqrt(m / 2)
    assert small_sample_correction(m) == pytest.approx(want, rel=1e-12)


# No deadline: a loaded 2-core machine stalls single examples for hundreds of milliseconds.
@settings(deadline=None)
@given(
    st.lists(st.integers(min_value=-1000, max_value=1000), min_size=2, max_size=60),
    st.lists(st.integers(min_value=-1000, max_value=1000), min_size=2, max_size=60),
    st.sampled_from([0.05, 0.01, 0.2]),
)
def test_random_samples_match_scipy_and_the_interval_agrees_with_the_test(
    current: list[int], previous: list[int], alpha: float
) -> None:
    if len(set(current)) == 1 and len(set(previous)) == 1:
        return  # no variance in either window (covered above)
    decision = decide(exact(current), exact(previous), "down", alpha)
    assert_close(decision.effect, reference(current, previous, alpha))
    low, high, p = decision.effect.ci_low, decision.effect.ci_high, decision.p_value
    assert low is not None
    assert high is not None
    assert p is not None
    if abs(p - alpha) > 1e-9:  # away from the boundary, where rounding could tip either way
        assert (p < alpha) == (low > 0 or high < 0)
