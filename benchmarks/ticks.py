"""Scenario (d): the cost of one decision tick, in process.

A window holding ``n`` readings is decided: its partial sums (as the leader reads them from
``window_partials``) are merged and ``decide`` runs (the exact Welch test on the running sums)
against the previous window, as the closing transaction does. With statistics accumulated on
ingest this does not depend on ``n``; the time to fold the readings in (``split_by_window``, as
the writer does per commit group) is reported beside it. The database round trips of a close
are not included.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass

from controller.decision.rule import WindowStats, decide
from controller.decision.windows import split_by_window

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
    filled = WindowStats()
    started = time.perf_counter()
    for offset in range(0, readings, 1000):  # as the writer counts them, a group at a time
        windows, _ = split_by_window(
            timestamps[offset : offset + 1000],
            payloads[offset : offset + 1000],
            PERIOD_US,
            PERIOD_US * 11,
        )
        for stats in windows.values():
            filled.merge(stats)
    ingest = (time.perf_counter() - started) / readings
    previous = WindowStats()
    previous.add_many(payloads[: max(2, readings // 2)])
    decide(filled, previous, "down", 0.05)  # scipy's first call is slow
    times = []
    for _ in range(repeats):
        # Two nodes' partial rows, as read back: decimal text to exact ints.
        rows = [(filled.count, str(filled.total), str(filled.total_sq))] * 2
        started = time.perf_counter()
        stats = WindowStats()
        for count, total, total_sq in rows:
            stats.merge(WindowStats(count, int(total), int(total_sq)))
        decide(stats, previous, "down", 0.05)
        times.append(time.perf_counter() - started)
    return TickCost(readings, statistics.median(times), max(times), ingest)
