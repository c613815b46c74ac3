"""The absolute send schedule of a sensor: pure arithmetic, no clock of its own.

Reading ``i`` (0-based) is due at ``start + i / rate`` seconds, computed from
``i`` every time rather than by adding ``1 / rate`` step after step, so float
rounding never accumulates into drift. A caller that wakes up late takes every
reading that is due at once (catch-up) and the schedule stays where it was.
The caller passes the time in (a monotonic clock in seconds), so tests drive
the schedule with a fake clock.
"""

from __future__ import annotations

import math

__all__ = ["Pacer", "Schedule"]


class Schedule:
    """When each reading is due: ``start + index / rate`` (seconds)."""

    __slots__ = ("rate", "start")

    def __init__(self, rate: float, start: float) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a finite number > 0, got {rate!r}")
        self.rate = rate
        self.start = start

    def due_at(self, index: int) -> float:
        """The time reading ``index`` is due."""
        return self.start + index / self.rate

    def due_by(self, now: float) -> int:
        """How many readings are due at ``now`` (those with ``due_at(i) <= now``)."""
        if now < self.start:
            return 0
        count = int((now - self.start) * self.rate) + 1
        # The product above and due_at() round differently; settle on due_at()
        # so the two methods never disagree about a reading.
        while self.due_at(count) <= now:
            count += 1
        while count > 0 and self.due_at(count - 1) > now:
            count -= 1
        return count

    def due_before(self, end: float) -> int:
        """How many readings are due strictly before ``end``."""
        count = self.due_by(end)
        while count > 0 and self.due_at(count - 1) >= end:
            count -= 1
        return count


class Pacer:
    """Hands out reading indices as they fall due, up to an optional limit.

    ``limit`` is the total number of readings to produce (``None``: no end);
    with a duration, use ``Schedule.due_before(start + duration)`` as the limit.
    """

    __slots__ = ("limit", "next_index", "schedule")

    def __init__(self, schedule: Schedule, limit: int | None = None) -> None:
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        self.schedule = schedule
        self.limit = limit
        self.next_index = 0

    @property
    def finished(self) -> bool:
        """True once every reading up to ``limit`` has been taken."""
        return self.limit is not None and self.next_index >= self.limit

    def take_due(self, now: float) -> range:
        """The indices due at ``now`` that were not taken yet (possibly several)."""
        due = self.schedule.due_by(now)
        if self.limit is not None:
            due = min(due, self.limit)
        taken = range(self.next_index, max(due, self.next_index))
        self.next_index = taken.stop
        return taken

    def delay(self, now: float) -> float:
        """Seconds from ``now`` until the next reading is due (0 when overdue, inf when done)."""
        if self.finished:
            return math.inf
        return max(0.0, self.schedule.due_at(self.next_index) - now)
