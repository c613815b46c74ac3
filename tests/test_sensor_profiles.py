"""The sensor's payload profiles: pure functions of time, seeded."""

from __future__ import annotations

import itertools
import random
import statistics

import pytest

from sensor.profiles import (
    DRIFT_STEP_SIZE,
    PROFILE_NAMES,
    DriftStepProfile,
    Profile,
    RegimeProfile,
    make_profile,
)

US = 1_000_000
T0 = 1_700_000_000 * US


def series(name: str, seed: int, *, seconds: int = 300, rate: int = 20) -> list[int]:
    profile = make_profile(name, seed=seed, step_at_us=T0 + 100 * US)
    return [profile(T0 + i * US // rate) for i in range(seconds * rate)]


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_same_seed_same_payloads(name: str) -> None:
    assert series(name, 7, seconds=120) == series(name, 7, seconds=120)
    assert series(name, 7, seconds=120) != series(name, 8, seconds=120)


def test_step_shifts_level_at_the_given_time() -> None:
    profile = make_profile("step", seed=1, step_at_us=T0 + 10 * US)
    before = [profile(T0 + i * 1000) for i in range(9_000)]
    after = [profile(T0 + 10 * US + i * 1000) for i in range(9_000)]
    assert max(before) <= 105 < 195 <= min(after)
    assert statistics.mean(before) == pytest.approx(100, abs=0.5)
    assert statistics.mean(after) == pytest.approx(200, abs=0.5)
    assert len(set(before)) > 1  # some noise, so a t-test has variance to work with
    assert profile(T0 + 10 * US - 1) <= 105
    assert profile(T0 + 10 * US) >= 195


def test_regime_shows_more_than_one_level_going_up_and_down() -> None:
    profile = RegimeProfile(random.Random(3))
    levels: list[int] = []
    for second in range(600):
        profile(T0 + second * US)
        if not levels or levels[-1] != profile.level:
            levels.append(profile.level)
    assert len(set(levels)) > 1
    steps = [b - a for a, b in itertools.pairwise(levels)]
    assert any(s > 0 for s in steps)
    assert any(s < 0 for s in steps)
    # regimes last 10-60 s: ten minutes hold between 10 and 60 of them
    assert 10 <= len(levels) <= 61


def test_regime_means_follow_the_levels() -> None:
    payloads = series("regime", 11, seconds=600)
    per_10s = [statistics.mean(payloads[i : i + 200]) for i in range(0, len(payloads), 200)]
    assert max(per_10s) - min(per_10s) > 15


def test_uniform_stays_in_range_and_spreads() -> None:
    payloads = series("uniform", 5, seconds=60)
    assert min(payloads) >= 0
    assert max(payloads) <= 1000
    assert len(set(payloads)) > 500


def test_unknown_profile_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown profile"):
        make_profile("sine", seed=1, step_at_us=0)


def window_means(profile: Profile, *, start: int, seconds: int, rate: int) -> list[float]:
    """The mean payload of each 1-s window from ``start``, ``rate`` readings a second."""
    return [
        statistics.mean(profile(start + s * US + i * US // rate) for i in range(rate))
        for s in range(seconds)
    ]


def test_drift_step_without_drift_or_noise_is_an_exact_step() -> None:
    profile = DriftStepProfile(
        random.Random(1), step_at_us=T0 + 10 * US, base=100, step=30, drift=(), noise=0.0
    )
    assert {profile(T0 + i * 1000) for i in range(10_000)} == {100}
    assert profile(T0 + 10 * US - 1) == 100
    assert {profile(T0 + 10 * US + i * 1000) for i in range(10_000)} == {130}


def test_drift_step_steps_by_its_size_at_the_given_time() -> None:
    profile = make_profile("drift-step", seed=4, step_at_us=T0 + 300 * US)
    means = window_means(profile, start=T0, seconds=600, rate=300)
    # Windows 299 and 300 straddle nothing: the step is at the start of window 300.
    jump = means[300] - means[299]
    assert jump == pytest.approx(DRIFT_STEP_SIZE, abs=3.0)


def test_drift_step_drifts_slowly_both_ways_and_stays_bounded() -> None:
    profile = make_profile("drift-step", seed=5, step_at_us=T0 + 10_000 * US)
    means = window_means(profile, start=T0, seconds=600, rate=100)
    per_10s = [statistics.mean(means[i : i + 10]) for i in range(0, 600, 10)]
    # The drift is there (several units of spread, going up and down) ...
    assert max(per_10s) - min(per_10s) > 4
    steps = [b - a for a, b in itertools.pairwise(per_10s)]
    assert any(s > 1 for s in steps)
    assert any(s < -1 for s in steps)
    # ... and bounded: the waves' amplitudes add up to 7.
    assert all(abs(m - 100) < 8 for m in per_10s)


def test_drift_step_drift_is_the_processs_the_same_for_every_sensor() -> None:
    """Drift and step are the same function of time whatever the seed (they add up in the
    cell's mean); the noise is each seed's own."""
    a = make_profile("drift-step", seed=1, step_at_us=T0 + 5 * US)
    b = make_profile("drift-step", seed=2, step_at_us=T0 + 5 * US)
    assert isinstance(a, DriftStepProfile)
    assert isinstance(b, DriftStepProfile)
    times = [T0 + i * 7_777 for i in range(2_000)]
    assert [a.drift(t) for t in times] == [b.drift(t) for t in times]
    assert [a(t) for t in times] != [b(t) for t in times]
    # Continuous in time, to the microsecond (no float rounding of the epoch's microseconds).
    assert abs(a.drift(T0 + 1) - a.drift(T0)) < 1e-5


def test_drift_step_a_minimum_effect_tells_the_step_from_the_drift() -> None:
    """Window to window (1 s at 300/s), the drift and the noise move the mean by a few units
    at most; the step moves it by its full size over one or two windows. So a minimum effect
    between the two keeps the drift from moving the status and lets the step through."""
    step_us = T0 + 300 * US + US // 2  # in the middle of window 300: half in each of two
    profile = make_profile("drift-step", seed=6, step_at_us=step_us)
    means = window_means(profile, start=T0, seconds=600, rate=300)
    differences = [b - a for a, b in itertools.pairwise(means)]  # differences[k-1]: k vs k-1
    step_windows = {299, 300}  # window 300 vs 299, window 301 vs 300
    drift = [abs(d) for k, d in enumerate(differences) if k not in step_windows]
    assert max(drift) < 6
    assert differences[299] > 10
    assert differences[300] > 10
    assert differences[299] + differences[300] == pytest.approx(DRIFT_STEP_SIZE, abs=3.0)
    # The noise keeps a window's variance well above zero, so the t-test runs.
    assert statistics.stdev(profile(step_us + 100 * US + i * 1000) for i in range(300)) > 3
