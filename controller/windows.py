"""Decision windows: which window a reading belongs to, which are due, which readings are stale.

Window k is [k·P, (k+1)·P) in Unix microseconds, by each reading's own timestamp. Window k is
decided at (k+1)·P + grace; from then on a reading of window <= k is stale: the store keeps it, but
no decision counts it. The book has no clock: callers pass the time in.
"""

from __future__ import annotations

from collections.abc import Sequence

from controller.decision import WindowStats

__all__ = ["WindowBook", "window_bounds", "window_index"]


def window_index(timestamp_us: int, period_us: int) -> int:
    """The index of the window holding ``timestamp_us`` (floor division: right for negatives)."""
    return timestamp_us // period_us


def window_bounds(index: int, period_us: int) -> tuple[int, int]:
    """The window's [start, end) in microseconds."""
    start = index * period_us
    return start, start + period_us


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

    def due(self, now_us: int) -> list[int]:
        """Every undecided window whose deadline is at or before ``now_us``, ascending.

        After a stall this is several windows; each is to be decided in turn. The list grows
        with the stall's length, so a caller facing a huge clock jump may want to cap it.
        """
        # The latest k with (k + 1)·P + grace <= now, without walking window by window.
        latest = (now_us - self.grace_us) // self.period_us - 1
        return list(range(self.last_decided + 1, latest + 1))

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
