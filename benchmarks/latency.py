"""Latency from a reading's creation to its commit: percentiles of what the probe saw. Pure.

The probe (:mod:`benchmarks.commit_probe`) gives, for each reading created inside the window,
its creation time (the stored ``timestamp``), when the controller received it
(``received_at``) and the start of the first poll that saw the row committed. A reading of
the window the probe never saw (still uncommitted when it stopped looking) is *late*: it
counts as slower than every reading seen, so a percentile that falls among the late ones is
reported as unknown (None) rather than as the slowest one seen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["LatencySummary", "percentile", "summarize"]


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Creation-to-commit latency of the readings of one window, in seconds.

    ``late`` readings were created in the window but not seen committed within the probe's
    drain time after it; a percentile among them is None ("more than the drain time").
    ``receive_p99_s`` is the part before the controller had it (``received_at - timestamp``).
    """

    readings: int
    late: int
    p50_s: float | None
    p99_s: float | None
    max_s: float | None
    receive_p99_s: float | None


def percentile(ordered: Sequence[int], late: int, fraction: float) -> int | None:
    """The nearest-rank percentile of ``ordered`` (ascending) plus ``late`` larger values.

    None when the rank falls among the late ones, or when there is nothing at all.
    """
    total = len(ordered) + late
    if total == 0:
        return None
    rank = max(1, math.ceil(fraction * total))
    return ordered[rank - 1] if rank <= len(ordered) else None


def summarize(committed_us: Sequence[int], received_us: Sequence[int], late: int) -> LatencySummary:
    """Percentiles of creation-to-commit (``committed_us``) and creation-to-receipt times."""
    ordered = sorted(committed_us)
    received = sorted(received_us)

    def seconds(value: int | None) -> float | None:
        return None if value is None else value / 1e6

    return LatencySummary(
        readings=len(ordered) + late,
        late=late,
        p50_s=seconds(percentile(ordered, late, 0.50)),
        p99_s=seconds(percentile(ordered, late, 0.99)),
        max_s=None if late or not ordered else seconds(ordered[-1]),
        receive_p99_s=seconds(percentile(received, 0, 0.99)),
    )
