"""Decision windows: which window a reading belongs to, which are due, which readings are stale.

Window k is [k·P, (k+1)·P) in Unix microseconds, by each reading's own timestamp. Window k is
decided at (k+1)·P + grace; from then on a reading of window <= k is stale: the store keeps it, but
no decision counts it. The book has no clock: callers pass the time in.

When the controller was not there at a deadline (stopped, stalled, or its database refused the
last command for a while), several windows are due at once. :func:`due_windows` is the one rule
for that, used by the decision loop and by the restart alike: only the latest due window is
decided (late); the older due ones are skipped, get no command, and their readings are never
counted. So after any outage the manipulator gets one command at once and then one per period,
never a burst. Windows not yet due are never skipped, whatever the grace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from controller.decision.rule import WindowStats

__all__ = ["DueWindows", "WindowBook", "due_windows", "latest_due", "window_bounds", "window_index"]


def window_index(timestamp_us: int, period_us: int) -> int:
    """The index of the window holding ``timestamp_us`` (floor division: right for negatives)."""
    return timestamp_us // period_us


def window_bounds(index: int, period_us: int) -> tuple[int, int]:
    """The window's [start, end) in microseconds."""
    start = index * period_us
    return start, start + period_us


def latest_due(now_us: int, period_us: int, grace_us: int) -> int:
    """The latest window whose deadline, (k + 1)·P + grace, is at or before ``now_us``."""
    return (now_us - grace_us) // period_us - 1


@dataclass(frozen=True, slots=True)
class DueWindows:
    """What to do at one moment: windows to pass over, then windows to decide (both ascending)."""

    skipped: range
    """Due windows older than the latest due one: no command, their statistics dropped."""
    decide: range
    """The latest due window, if it is not decided yet (at most one window)."""


def due_windows(last_decided: int, now_us: int, period_us: int, grace_us: int) -> DueWindows:
    """The windows after ``last_decided`` to skip and to decide at ``now_us``.

    On time (the usual case) nothing is skipped and the one window whose deadline has just
    passed is decided. After an outage every due window but the latest is skipped: a window
    whose deadline passed a period or more ago is not decided any more. ``skipped.stop - 1``
    is the window to resume after (``last_decided`` when nothing is skipped).
    """
    latest = latest_due(now_us, period_us, grace_us)
    first = max(last_decided + 1, latest)
    return DueWindows(
        skipped=range(last_decided + 1, first), decide=range(first, max(first, latest + 1))
    )


class WindowBook:
    """Statistics of the windows not yet decided; knows which readings are stale.

    Only windows after ``last_decided`` are held, and closing a window drops everything up to
    it, so memory stays bounded as long as far-future readings are rejected before they get
    here (the ingest validator's maximum skew does that).
    """

    __slots__ = ("_open", "grace_us", "last_decided", "period_us")

    def __init__(self, period_us: int, grace_us: int, last_decided: int) -> None:
        if period_us <= 0:
            raise ValueError(f"period_us must be positive, got {period_us}")
        if grace_us < 0:
            raise ValueError(f"grace_us must not be negative, got {grace_us}")
        self.period_us = period_us
        self.grace_us = grace_us
        self.last_decided = last_decided
        self._open: dict[int, WindowStats] = {}

    def add(self, timestamp_us: int, payload: int) -> bool:
        """Count one reading; False (not counted) when its window is already decided."""
        index = timestamp_us // self.period_us
        if index <= self.last_decided:
            return False
        stats = self._open.get(index)
        if stats is None:
            stats = self._open[index] = WindowStats()
        stats.add(payload)
        return True

    def add_batch(self, timestamps_us: Sequence[int], payloads: Sequence[int]) -> int:
        """Count a batch of readings; returns how many were stale (and so not counted)."""
        if len(timestamps_us) != len(payloads):
            raise ValueError(
                f"{len(timestamps_us)} timestamps but {len(payloads)} payloads in one batch"
            )
        if not timestamps_us:
            return 0
        period = self.period_us
        last = self.last_decided
        first_index = min(timestamps_us) // period
        # The common case on the hot path: the whole batch falls in one open window, so a
        # C-level min/max replaces the per-reading loop.
        if first_index > last and first_index == max(timestamps_us) // period:
            self._stats_for(first_index).add_many(payloads)
            return 0
        groups: dict[int, list[int]] = {}
        stale = 0
        for timestamp, payload in zip(timestamps_us, payloads, strict=True):
            index = timestamp // period
            if index <= last:
                stale += 1
                continue
            group = groups.get(index)
            if group is None:
                groups[index] = [payload]
            else:
                group.append(payload)
        for index, values in groups.items():
            self._stats_for(index).add_many(values)
        return stale

    def is_stale(self, timestamp_us: int) -> bool:
        """Whether a reading of that time would not be counted (its window is decided)."""
        return timestamp_us // self.period_us <= self.last_decided

    def stats(self, index: int) -> WindowStats:
        """A copy of window ``index``'s statistics (empty if it has none)."""
        stats = self._open.get(index)
        return stats.copy() if stats is not None else WindowStats()

    def seed(self, index: int, stats: WindowStats) -> None:
        """Merge restored statistics into an open window (at start-up, from the store)."""
        if index <= self.last_decided:
            raise ValueError(
                f"cannot seed window {index}: windows up to {self.last_decided} are decided"
            )
        self._stats_for(index).merge(stats)

    def open_windows(self) -> list[int]:
        """Indices of the windows holding statistics, ascending."""
        return sorted(self._open)

    def deadline(self, index: int) -> int:
        """When window ``index`` is decided: (index + 1)·P + grace, in microseconds."""
        return (index + 1) * self.period_us + self.grace_us

    def next_due(self) -> int:
        """The index of the next window to decide."""
        return self.last_decided + 1

    def due(self, now_us: int) -> DueWindows:
        """The undecided windows to skip and to decide at ``now_us`` (see :func:`due_windows`).

        Closing the window to decide drops the skipped windows' statistics.
        """
        return due_windows(self.last_decided, now_us, self.period_us, self.grace_us)

    def close(self, index: int) -> WindowStats:
        """Take window ``index``'s statistics and mark it decided.

        Statistics of any earlier window still held are dropped (they can no longer be decided).
        ``index`` must be after ``last_decided``.
        """
        if index <= self.last_decided:
            raise ValueError(
                f"window {index} is not after the last decided window {self.last_decided}"
            )
        stats = self._open.pop(index, None)
        self.last_decided = index
        for old in [k for k in self._open if k < index]:
            del self._open[old]
        return stats if stats is not None else WindowStats()

    def _stats_for(self, index: int) -> WindowStats:
        stats = self._open.get(index)
        if stats is None:
            stats = self._open[index] = WindowStats()
        return stats
