"""Repeated runs: a figure's median and its spread (min-max) over the repetitions. Pure.

Each timed scenario runs ``--repeat`` times, the project and its ceiling interleaved, and a
target is judged on the ratio of the medians. With three runs an interquartile range says no
more than min-max, so the spread shown is min-max: every run lies inside it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from benchmarks.report import Combined, Measured, Spread, spread

__all__ = ["combine", "interleave"]

T = TypeVar("T")


def _field(values: Sequence[float | None]) -> Spread | None:
    present = [value for value in values if value is not None]
    return spread(present) if present else None


def combine(repetitions: Sequence[Sequence[Measured]]) -> list[Combined]:
    """One row per process: each figure's median and spread over the repetitions.

    Every repetition gives the same rows in the same order (the same processes); notes that
    differ between runs are all kept, in run order.
    """
    if not repetitions:
        return []
    shapes = {tuple((row.run, row.process) for row in rows) for rows in repetitions}
    if len(shapes) != 1:
        raise ValueError(f"repetitions measured different rows: {sorted(shapes)}")
    combined = []
    for rows in zip(*repetitions, strict=True):
        notes = list(dict.fromkeys(row.note for row in rows if row.note))
        combined.append(
            Combined(
                run=rows[0].run,
                process=rows[0].process,
                readings_per_s=_field([row.readings_per_s for row in rows]),
                cpu_percent=_field([row.cpu_percent for row in rows]),
                cpu_s_per_million=_field([row.cpu_s_per_million for row in rows]),
                peak_rss_mib=_field([row.peak_rss_mib for row in rows]),
                note=" | ".join(notes),
            )
        )
    return combined


def interleave(repeat: int, steps: Sequence[Callable[[int], T]]) -> list[list[T]]:
    """Run each step ``repeat`` times, in turn (1, 2, 1, 2, ...); each step's results.

    Interleaving spreads whatever else the machine does over the project and its ceiling
    alike, rather than onto whichever ran while it happened.
    """
    results: list[list[T]] = [[] for _ in steps]
    for repetition in range(repeat):
        for index, step in enumerate(steps):
            results[index].append(step(repetition))
    return results
