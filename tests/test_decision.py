"""The decision rule and window statistics, against scipy/numpy/statistics references."""

from __future__ import annotations

import math
import statistics
import warnings
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from controller.decision.rule import Decision, Outcome, WindowStats, WindowSummary, decide

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def summarize(values: list[int]) -> WindowSummary:
    stats = WindowStats()
    stats.add_many(values)
    return stats.summary()


def welch_reference(current: list[int], previous: list[int]) -> float:
    """The p-value scipy computes from the raw arrays (independent of WindowStats)."""
    with warnings.catch_warnings():
        # scipy warns of "catastrophic cancellation" on a constant array; its result is exact.
        warnings.simplefilter("ignore", RuntimeWarning)
        result = scipy_stats.ttest_ind(
            np.asarray(current, dtype=float), np.asarray(previous, dtype=float), equal_var=False
        )
    return float(result.pvalue)


def decide_raw(current: list[int], previous: list[int], status: str, alpha: float) -> Decision:
    return decide(summarize(current), summarize(previous), status, alpha)


# (current, previous): hand-made windows spanning clear, borderline and null differences.
REFERENCE_SETS = [
    pytest.param([10, 12, 11, 13, 12, 14], [5, 6, 5, 7, 6, 5], id="clearly-higher"),
    pytest.param([1, 2, 1, 2, 1], [9, 8, 9, 10, 9, 8, 9], id="clearly-lower"),
    pytest.param([3, 5, 4, 6, 5], [4, 5, 3, 6, 4], id="no-difference"),
    pytest.param([0, 10, 20, 30, 40, 50], [5, 7], id="unequal-sizes-and-spreads"),
    pytest.param([100, 101], [98, 99, 100, 97, 96, 95, 94, 93], id="two-readings"),
    pytest.param([7, 7, 7, 7, 7], [1, 3, 5, 2, 4], id="zero-variance-in-current"),
    pytest.param([-50, -40, -45, -55], [-10, 0, 10, 5, -5], id="negative-payloads"),
    pytest.param(
        [10**12 + d for d in (3, 1, 4, 1, 5, 9, 2, 6)],
        [10**12 + d for d in (2, 7, 1, 8, 2, 8, 1, 8)],
        id="large-offset",
    ),
]


@pytest.mark.parametrize(("current", "previous"), REFERENCE_SETS)
def test_p_value_matches_scipy_on_raw_arrays(current: list[int], previous: list[int]) -> None:
    decision = decide_raw(current, previous, "down", alpha=0.05)

    assert decision.p_value is not None
    assert decision.p_value == pytest.approx(welch_reference(current, previous), rel=1e-9)


def test_significant_higher_mean_turns_up() -> None:
    decision = decide_raw([10, 12, 11, 13, 12, 14], [5, 6, 5, 7, 6, 5], "down", alpha=0.05)

    assert decision.status == "up"
    assert decision.changed
    assert decision.outcome is Outcome.SIGNIFICANT
    assert decision.p_value is not None
    assert decision.p_value < 0.05


def test_significant_lower_mean_turns_down() -> None:
    decision = decide_raw([1, 2, 1, 2, 1], [9, 8, 9, 10, 9, 8, 9], "up", alpha=0.05)

    assert decision.status == "down"
    assert decision.changed
    assert decision.outcome is Outcome.SIGNIFICANT


def test_significant_in_the_current_direction_is_not_a_change() -> None:
    decision = decide_raw([10, 12, 11, 13, 12, 14], [5, 6, 5, 7, 6, 5], "up", alpha=0.05)

    assert decision.status == "up"
    assert not decision.changed
    assert decision.outcome is Outcome.SIGNIFICANT


@pytest.mark.parametrize("status", ["up", "down"])
def test_not_significant_keeps_status(status: str) -> None:
    decision = decide_raw([3, 5, 4, 6, 5], [4, 5, 3, 6, 4], status, alpha=0.05)

    assert decision.status == status
    assert not decision.changed
    assert decision.outcome is Outcome.NOT_SIGNIFICANT
    assert decision.p_value is not None
    assert decision.p_value >= 0.05


def test_alpha_is_the_threshold() -> None:
    current, previous = [0, 10, 20, 30, 40, 50], [5, 7]
    p_value = welch_reference(current, previous)

    assert decide_raw(current, previous, "down", alpha=p_value * 1.01).status == "up"
    assert decide_raw(current, previous, "down", alpha=p_value * 0.99).status == "down"


@pytest.mark.parametrize(
    ("current", "previous"),
    [
        pytest.param([], [], id="both-empty"),
        pytest.param([5], [1, 2, 3], id="one-current"),
        pytest.param([100, 200, 300], [1], id="one-previous"),
        pytest.param([], [1, 2, 3], id="empty-current"),
    ],
)
def test_too_few_readings_keeps_status(current: list[int], previous: list[int]) -> None:
    decision = decide_raw(current, previous, "up", alpha=0.05)

    assert decision.status == "up"
    assert not decision.changed
    assert decision.outcome is Outcome.TOO_FEW_READINGS
    assert decision.p_value is None


def test_zero_variance_in_both_keeps_status_even_when_means_differ() -> None:
    decision = decide_raw([9, 9, 9], [1, 1, 1, 1], "down", alpha=0.05)

    assert decision.status == "down"
    assert not decision.changed
    assert decision.outcome is Outcome.NO_VARIANCE
    assert decision.p_value is None


def test_zero_variance_in_one_window_only_is_still_tested() -> None:
    current, previous = [7, 7, 7, 7, 7], [1, 3, 5, 2, 4]
    decision = decide_raw(current, previous, "down", alpha=0.05)

    assert decision.outcome is Outcome.SIGNIFICANT
    assert decision.status == "up"
    assert decision.p_value == pytest.approx(welch_reference(current, previous), rel=1e-9)


def test_nan_p_value_is_no_test() -> None:
    # A summary scipy cannot compute a statistic from gives p = NaN; the rule must not act on it.
    current = WindowSummary(count=5, mean=math.nan, std=1.0)
    previous = WindowSummary(count=5, mean=0.0, std=1.0)

    decision = decide(current, previous, "up", alpha=0.05)

    assert decision.outcome is Outcome.NO_VARIANCE
    assert decision.status == "up"
    assert decision.p_value is None


def test_decision_records_what_it_was_based_on() -> None:
    current, previous = summarize([1, 2, 3]), summarize([4, 5, 6, 7])

    decision = decide(current, previous, "up", alpha=0.05)

    assert decision.current == current
    assert decision.previous == previous
    assert isinstance(decision.p_value, float)


@pytest.mark.parametrize("status", ["UP", "", "sideways"])
def test_unknown_status_is_refused(status: str) -> None:
    with pytest.raises(ValueError, match="status"):
        decide(summarize([1, 2]), summarize([3, 4]), status, alpha=0.05)


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, math.nan])
def test_alpha_outside_unit_interval_is_refused(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha"):
        decide(summarize([1, 2]), summarize([3, 4]), "up", alpha=alpha)


def test_outcome_values_are_stable_strings() -> None:
    # These strings are persisted with each decision record.
    assert [o.value for o in Outcome] == [
        "significant",
        "not_significant",
        "too_few_readings",
        "no_variance",
    ]


# --- WindowStats ---------------------------------------------------------------------------


def test_empty_stats_are_zero() -> None:
    assert WindowStats().summary() == WindowSummary(count=0, mean=0.0, std=0.0)


def test_single_reading_has_zero_std() -> None:
    stats = WindowStats()
    stats.add(42)

    assert stats.summary() == WindowSummary(count=1, mean=42.0, std=0.0)


def test_add_and_add_many_agree() -> None:
    values = [3, -1, 4, 1, -5, 9, 2, 6]
    one_by_one = WindowStats()
    for value in values:
        one_by_one.add(value)
    batched = WindowStats()
    batched.add_many(values[:3])
    batched.add_many(iter(values[3:]))  # any iterable, not only lists
    batched.add_many([])

    assert one_by_one == batched
    assert batched.total == sum(values)
    assert batched.total_sq == sum(v * v for v in values)


def test_huge_int64_payloads_are_exact() -> None:
    # Floats would cancel to garbage here: the spread is tiny next to the magnitude.
    values = [INT64_MAX - d for d in (0, 1, 2, 3, 5, 8, 13)]
    stats = WindowStats()
    stats.add_many(values)

    assert isinstance(stats.total, int)
    assert isinstance(stats.total_sq, int)
    assert stats.mean == statistics.mean(values)
    assert stats.std == pytest.approx(statistics.stdev(values), rel=1e-15)
    centered = np.asarray([v - INT64_MAX for v in values], dtype=float)
    assert stats.std == pytest.approx(float(np.std(centered, ddof=1)), rel=1e-12)


def test_extreme_int64_payloads() -> None:
    values = [INT64_MIN, INT64_MAX, INT64_MIN, INT64_MAX, 0]
    stats = WindowStats()
    stats.add_many(values)

    assert stats.mean == statistics.mean(values)
    assert stats.std == pytest.approx(statistics.stdev(values), rel=1e-15)


def test_equal_huge_payloads_have_zero_std() -> None:
    stats = WindowStats()
    stats.add_many([INT64_MIN] * 1000)

    assert stats.std == 0.0
    assert stats.mean == float(INT64_MIN)


@given(st.lists(st.integers(min_value=INT64_MIN, max_value=INT64_MAX), max_size=200))
def test_stats_match_exact_reference(values: list[int]) -> None:
    stats = WindowStats()
    stats.add_many(values)

    assert stats.count == len(values)
    if values:
        assert stats.mean == float(Fraction(sum(values), len(values)))
    if len(values) >= 2:
        assert stats.std == pytest.approx(statistics.stdev(values), rel=1e-15, abs=0.0)


@given(st.lists(st.integers(min_value=-(10**6), max_value=10**6), min_size=2, max_size=200))
def test_stats_match_numpy(values: list[int]) -> None:
    stats = WindowStats()
    stats.add_many(values)
    array = np.asarray(values, dtype=float)

    assert stats.mean == pytest.approx(float(array.mean()), rel=1e-12, abs=1e-9)
    assert stats.std == pytest.approx(float(array.std(ddof=1)), rel=1e-9, abs=1e-9)


def test_float_sums_are_accepted_and_never_negative_variance() -> None:
    # Float rounding can push n*sumsq - sum^2 below zero; std clamps instead of failing.
    stats = WindowStats(count=3, total=0.3, total_sq=0.03)

    assert stats.std == 0.0


def test_merge_adds_both_windows() -> None:
    left, right = WindowStats(), WindowStats()
    left.add_many([1, 2, 3])
    right.add_many([10, 20])

    left.merge(right)

    assert left == WindowStats(count=5, total=36, total_sq=514)


def test_copy_is_independent() -> None:
    stats = WindowStats()
    stats.add(1)
    copy = stats.copy()
    copy.add(2)

    assert stats.count == 1
    assert copy.count == 2


@given(
    st.integers(min_value=0, max_value=10**6),
    st.floats(min_value=-1e15, max_value=1e15, allow_nan=False),
    # Integer payloads give std 0 or at least ~1/n; far smaller ones would underflow the
    # variance, which no real window can have.
    st.just(0.0) | st.floats(min_value=1e-9, max_value=1e12),
)
def test_from_summary_round_trip(count: int, mean: float, std: float) -> None:
    summary = WindowStats.from_summary(count, mean, std).summary()

    assert summary.count == count
    if count == 0:
        assert summary == WindowSummary(0, 0.0, 0.0)
        return
    assert summary.mean == mean
    expected_std = std if count > 1 else 0.0
    assert summary.std == pytest.approx(expected_std, rel=1e-15, abs=0.0)


def test_from_summary_then_add_matches_raw_data() -> None:
    # A window restored at start-up keeps counting: the result equals counting it all at once.
    first, later = [10**15 + d for d in (1, 5, 2, 8)], [10**15 + d for d in (3, 9, 4)]
    saved = summarize(first)
    restored = WindowStats.from_summary(saved.count, saved.mean, saved.std)
    restored.add_many(later)

    assert restored.count == len(first + later)
    assert restored.mean == pytest.approx(statistics.mean(first + later), rel=1e-15)
    assert restored.std == pytest.approx(statistics.stdev(first + later), rel=1e-9)


@pytest.mark.parametrize(
    ("count", "mean", "std"),
    [(-1, 0.0, 0.0), (2, math.nan, 1.0), (2, 0.0, math.inf), (2, 0.0, -1.0)],
)
def test_from_summary_refuses_impossible_values(count: int, mean: float, std: float) -> None:
    with pytest.raises(ValueError, match="must"):
        WindowStats.from_summary(count, mean, std)


# --- means near 2**63: the test runs on exact differences (issue 9, item 11) -----------------


def exact_stats(values: list[int]) -> WindowStats:
    stats = WindowStats()
    stats.add_many(values)
    return stats


# Six readings of 2**63-1, then 50 alternating 2**63-100 / 2**63-101: the means differ by 99.5,
# far below the spacing of floats there (2048), so both means round to the same float.
NEAR_MAX_PREVIOUS = [INT64_MAX] * 6
NEAR_MAX_CURRENT = [INT64_MAX - 99 - (i % 2) for i in range(50)]


def shifted_reference(current: list[int], previous: list[int]) -> float:
    """Welch's p of the same data shifted near 0, where floats hold it exactly (shift-invariant)."""
    base = min(current + previous)
    return welch_reference([v - base for v in current], [v - base for v in previous])


def test_means_near_int64_max_are_tested_exactly() -> None:
    decision = decide(
        exact_stats(NEAR_MAX_CURRENT), exact_stats(NEAR_MAX_PREVIOUS), "up", alpha=0.05
    )

    assert decision.p_value is not None
    assert decision.p_value < 1e-100
    assert decision.p_value == pytest.approx(
        shifted_reference(NEAR_MAX_CURRENT, NEAR_MAX_PREVIOUS), rel=1e-9
    )
    assert decision.outcome is Outcome.SIGNIFICANT
    assert decision.status == "down"
    assert decision.changed
    # The audit record stays the rounded public summary.
    assert decision.current == exact_stats(NEAR_MAX_CURRENT).summary()
    assert decision.previous == exact_stats(NEAR_MAX_PREVIOUS).summary()


def test_a_previous_window_restored_from_persisted_floats_still_works_near_int64_max() -> None:
    # After a restart the previous window is rebuilt from its stored float mean and std:
    # 2**63-1 is stored as 2**63, so the difference is 100.5 instead of 99.5, still exact from
    # there on and still overwhelmingly significant.
    saved = exact_stats(NEAR_MAX_PREVIOUS).summary()
    restored = WindowStats.from_summary(saved.count, saved.mean, saved.std)

    decision = decide(exact_stats(NEAR_MAX_CURRENT), restored, "up", alpha=0.05)

    assert decision.p_value is not None
    assert decision.p_value < 1e-100
    assert decision.status == "down"
    assert decision.changed


@given(
    st.lists(st.integers(min_value=-1000, max_value=1000), min_size=2, max_size=60),
    st.lists(st.integers(min_value=-1000, max_value=1000), min_size=2, max_size=60),
    st.integers(min_value=-(10**6), max_value=10**6),
)
def test_p_value_matches_scipy_on_raw_samples(
    current: list[int], previous: list[int], shift: int
) -> None:
    if len(set(current)) == 1 and len(set(previous)) == 1:
        return  # no variance in either window: no test (covered above)
    current = [v + shift for v in current]
    previous = [v + shift for v in previous]

    decision = decide(exact_stats(current), exact_stats(previous), "down", alpha=0.05)

    assert decision.p_value is not None
    assert decision.p_value == pytest.approx(welch_reference(current, previous), rel=1e-8)


@given(
    st.lists(st.integers(min_value=-(10**9), max_value=10**9), min_size=2, max_size=40),
    st.lists(st.integers(min_value=-(10**9), max_value=10**9), min_size=2, max_size=40),
)
def test_exact_sums_and_persisted_summaries_give_the_same_ordinary_decision(
    current: list[int], previous: list[int]
) -> None:
    # A previous window restored from its stored floats decides like the live one when the
    # floats hold the data well (the ordinary case).
    saved = exact_stats(previous).summary()
    restored = WindowStats.from_summary(saved.count, saved.mean, saved.std)

    live = decide(exact_stats(current), exact_stats(previous), "down", alpha=0.05)
    after_restart = decide(exact_stats(current), restored, "down", alpha=0.05)

    assert after_restart.outcome is live.outcome
    assert after_restart.status == live.status
    if live.p_value is not None:
        assert after_restart.p_value == pytest.approx(live.p_value, rel=1e-6, abs=1e-300)


def test_a_t_statistic_beyond_float_range_gives_p_zero() -> None:
    # Persisted summaries with absurdly small spreads: t**2 does not fit a float.
    current = WindowStats.from_summary(5, 1e6, 1e-200)
    previous = WindowStats.from_summary(5, 0.0, 1e-200)

    decision = decide(current, previous, "down", alpha=0.05)

    assert decision.p_value == 0.0
    assert decision.status == "up"
