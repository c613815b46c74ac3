"""Scenario (d): the cost of one decision tick, in process.

A window holding ``n`` readings is closed and decided: ``WindowBook.close`` → ``decide`` (the
exact Welch test on the running sums) against the previous window, as the decision loop does.
With statistics accumulated on ingest this does not depend on ``n``; the time to fold the
readings in is reported beside it.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass

from controller.decision.rule import WindowStats, decide
from controller.decision.windows import WindowBook

__all__ = ["TickCost", "tick_cost"]

PERIOD_US = 5_000_000


@dataclass(frozen=True, slots=True)
class TickCost:
    """Median and worst tick time in seconds for windows of ``readings`` readings."""

    readings: int
    median_s: float
    max_s: float
    ingest_s_per_reading: float


def tick_cost(readings: int, repeats: int = 200, seed: int = 7) -> TickCost:
    """Time ``repeats`` ticks of a window with ``readings`` readings."""
    rng = random.Random(seed)
    payloads = [rng.randrange(0, 1000) for _ in range(readings)]
    timestamps = [PERIOD_US * 11 + (i % PERIOD_US) for i in range(readings)]
    book = WindowBook(PERIOD_US, 500_000, last_decided=10)
    started = time.perf_counter()
    for offset in range(0, readings, 1000):  # as the writer hands them over, a group at a time
        book.add_batch(timestamps[offset : offset + 1000], payloads[offset : offset + 1000])
    ingest = (time.perf_counter() - started) / readings
    filled = book.stats(11)
    previous = WindowStats()
    previous.add_many(payloads[: max(2, readings // 2)])
    decide(filled, previous, "down", 0.05)  # scipy's first call is slow
    times = []
    for _ in range(repeats):
        fresh = WindowBook(PERIOD_US, 500_000, last_decided=10)
        fresh.seed(11, filled)
        started = time.perf_counter()
        stats = fresh.close(11)
        decide(stats, previous, "down", 0.05)
        times.append(time.perf_counter() - started)
    return TickCost(readings, statistics.median(times), max(times), ingest)
