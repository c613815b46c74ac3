"""Capped exponential backoff with jitter: the one retry schedule of every service (pure).

A retry loop takes its delays from :meth:`Backoff.delays` (or :meth:`Backoff.delay` for attempt
``n``) and sleeps them itself, so the schedule is tested without a clock::

    for delay in RECONNECT.delays():
        try:
            return await connect()
        except OSError:
            await asyncio.sleep(delay)
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays of ``initial`` seconds, times ``multiplier`` per attempt, capped at ``maximum``.

    ``jitter`` is the fraction a delay may be shortened by at random, so many clients that
    failed together do not retry together.
    """

    initial: float = 0.1
    maximum: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError(f"need 0 < initial <= maximum, got {self.initial}, {self.maximum}")
        if self.multiplier < 1 or not 0 <= self.jitter < 1:
            raise ValueError(f"need multiplier >= 1 and 0 <= jitter < 1, got {self}")

    def delay(self, attempt: int, fraction: float) -> float:
        """Seconds to wait before retry number ``attempt`` (1, 2, ...); ``fraction`` in [0, 1)."""
        base = min(self.maximum, self.initial * self.multiplier ** max(0, attempt - 1))
        return base * (1.0 - self.jitter * fraction)

    def delays(self, random_fraction: Callable[[], float] = random.random) -> Iterator[float]:
        """The delays before retries 1, 2, 3, ... (endless)."""
        attempt = 0
        while True:
            attempt += 1
            yield self.delay(attempt, random_fraction())
