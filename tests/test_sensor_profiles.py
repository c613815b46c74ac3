"""The sensor's payload profiles: pure functions of time, seeded."""

from __future__ import annotations

import itertools
import random
import statistics

import pytest

from sensor.profiles import PROFILE_NAMES, RegimeProfile, make_profile

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
