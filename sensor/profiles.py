"""Signal generators for the sensor's payload: pure and seeded.

A profile is a callable from the reading's wall time (microseconds since the
epoch) to an integer payload, so tests call it with made-up times, no clock.
Each one draws from its own seeded ``random.Random`` (cheap per call, which
matters at hundreds of readings per second), so a seed reproduces a run.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

from workcell.timeconv import US_PER_SECOND

__all__ = [
    "DRIFT_STEP_SIZE",
    "DRIFT_WAVES",
    "PROFILE_NAMES",
    "DriftStepProfile",
    "Profile",
    "RegimeProfile",
    "StepProfile",
    "UniformProfile",
    "make_profile",
]

Profile = Callable[[int], int]

PROFILE_NAMES = ("regime", "uniform", "step", "drift-step")

# The drift-step profile's step, in payload units: several times what its drift moves the
# mean from one window to the next, so a --min-effect between the two tells them apart.
DRIFT_STEP_SIZE = 30


class RegimeProfile:
    """A mean that switches among a few levels every so often, plus Gaussian noise.

    The first call starts the first regime; each regime lasts a random
    ``min_seconds``..``max_seconds`` and the next one takes a different level,
    so a running cell sees the mean go both up and down. Time is expected to
    move forward; a time earlier than the current regime just keeps its level.
    """

    def __init__(
        self,
        rng: random.Random,
        *,
        levels: Sequence[int] = (100, 120, 140, 160),
        min_seconds: float = 10.0,
        max_seconds: float = 60.0,
        noise: float = 10.0,
    ) -> None:
        if len(levels) < 2:
            raise ValueError("a regime profile needs at least two levels")
        if not 0 < min_seconds <= max_seconds:
            raise ValueError("need 0 < min_seconds <= max_seconds")
        self._rng = rng
        self._levels = tuple(levels)
        self._min_us = int(min_seconds * US_PER_SECOND)
        self._max_us = int(max_seconds * US_PER_SECOND)
        self._noise = noise
        self._level = rng.choice(self._levels)
        self._regime_end: int | None = None

    @property
    def level(self) -> int:
        """The mean of the current regime."""
        return self._level

    def _regime_length(self) -> int:
        return self._rng.randint(self._min_us, self._max_us)

    def __call__(self, time_us: int) -> int:
        if self._regime_end is None:
            self._regime_end = time_us + self._regime_length()
        while time_us >= self._regime_end:
            self._level = self._rng.choice([v for v in self._levels if v != self._level])
            self._regime_end += self._regime_length()
        return round(self._rng.gauss(self._level, self._noise))


class UniformProfile:
    """Independent random integers in ``[low, high]``."""

    def __init__(self, rng: random.Random, *, low: int = 0, high: int = 1000) -> None:
        if low > high:
            raise ValueError("need low <= high")
        self._rng = rng
        self._low = low
        self._high = high

    def __call__(self, time_us: int) -> int:
        return self._rng.randint(self._low, self._high)


class StepProfile:
    """``low`` before ``step_at_us``, ``high`` from then on, each with small seeded noise."""

    def __init__(
        self,
        rng: random.Random,
        *,
        step_at_us: int,
        low: int = 100,
        high: int = 200,
        noise: int = 5,
    ) -> None:
        self._rng = rng
        self.step_at_us = step_at_us
        self._low = low
        self._high = high
        self._noise = noise

    def __call__(self, time_us: int) -> int:
        level = self._low if time_us < self.step_at_us else self._high
        # Some noise keeps the variance non-zero, so the controller's t-test runs.
        return level + self._rng.randint(-self._noise, self._noise)


# The drift-step profile's drift: (period in seconds, amplitude) of a few slow waves. Their sum
# wanders up and down by a few units (standard deviation 2.9) and turns every few seconds; it
# moves the mean of a 1-s window by about 1.3 units from the one before (at most about 4), of
# a 5-s window by about 1.8 (at most about 5), well below the step.
DRIFT_WAVES = ((4.0, 1.5), (9.0, 1.0), (17.0, 1.5), (37.0, 2.0), (79.0, 2.5))


class DriftStepProfile:
    """A mean that drifts slowly and steps once, plus Gaussian noise.

    The mean is ``base`` + a drift + ``step`` from ``step_at_us`` on. The drift and the step
    belong to the process the sensors watch, not to a sensor: the drift is a fixed function of
    the time (a sum of slow waves, :data:`DRIFT_WAVES`), the same for every sensor and seed,
    so in the cell's mean it adds up instead of averaging out. The seed draws each reading's
    noise. With hundreds of readings a window the t-test finds the drift significant, so the
    specified rule follows it up and down; a guarded policy (``--min-effect`` between the
    drift's window-to-window moves and the step, ``--confirm 2`` for a step inside a window)
    reacts to the step alone.
    """

    def __init__(
        self,
        rng: random.Random,
        *,
        step_at_us: int,
        base: float = 100.0,
        step: float = DRIFT_STEP_SIZE,
        drift: Sequence[tuple[float, float]] = DRIFT_WAVES,
        noise: float = 5.0,
    ) -> None:
        if noise < 0 or any(period <= 0 for period, _ in drift):
            raise ValueError("need noise >= 0 and drift periods > 0")
        self._rng = rng
        self.step_at_us = step_at_us
        self._base = base
        self._step = step
        # Periods in microseconds, and fixed phases so the waves do not all start together.
        self._waves = tuple(
            (round(period * US_PER_SECOND), amplitude, 1.7 * k)
            for k, (period, amplitude) in enumerate(drift)
        )
        self._noise = noise

    def drift(self, time_us: int) -> float:
        """The drift's offset from the base at ``time_us``."""
        # The time is reduced modulo each period in integers first, so the phase keeps its
        # microseconds (a float of microseconds since 1970 would round them).
        return sum(
            amplitude * math.sin(2 * math.pi * (time_us % period) / period + phase)
            for period, amplitude, phase in self._waves
        )

    def __call__(self, time_us: int) -> int:
        level = self._base + self.drift(time_us)
        if time_us >= self.step_at_us:
            level += self._step
        return round(self._rng.gauss(level, self._noise))


def make_profile(name: str, *, seed: int, step_at_us: int) -> Profile:
    """The profile called ``name`` (one of :data:`PROFILE_NAMES`), seeded with ``seed``."""
    rng = random.Random(seed)
    if name == "regime":
        return RegimeProfile(rng)
    if name == "uniform":
        return UniformProfile(rng)
    if name == "step":
        return StepProfile(rng, step_at_us=step_at_us)
    if name == "drift-step":
        return DriftStepProfile(rng, step_at_us=step_at_us)
    raise ValueError(f"unknown profile {name!r} (expected one of {', '.join(PROFILE_NAMES)})")
