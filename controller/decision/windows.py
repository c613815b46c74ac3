"""Decision windows: which window a reading belongs to, which are due, which readings are stale.

Window k is [k·P, (k+1)·P) in Unix microseconds, by each reading's own timestamp. Window k is
decided once it has ended and its data is complete (every live sensor run's committed readings
passed its end: :mod:`controller.decision.watermarks`), and at the latest at its deadline,
(k+1)·P + grace; from then on a reading of window <= k is stale: the store keeps it, but no
decision counts it. In the database that boundary is ``decided_until``, the end of the last
window decided (:mod:`controller.storage.window_stats`). Nothing here has a clock: callers pass
the time in.

When the controller was not there at a deadline (stopped, stalled, or its database refused the
last command for a while), several windows are due at once. :func:`due_windows` is the one rule
for that, used by the decision loop and by the restart alike: only the latest due window is
decided (late); the older due ones are skipped, get no command, and their readings are never
counted. So after any outage the manipulator gets one command at once and then one per period,
never a burst. Windows not yet due are never skipped, whatever the grace: they are decided in
turn, each once it has ended.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from controller.decision.rule import WindowStats

__all__ = [
    "DecisionSchedule",
    "DueWindows",
    "due_windows",
    "latest_due",
    "split_by_window",
    "window_bounds",
    "window_index",
]


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

    On time (the usual case) nothing is skipped and the window that has just ended is the
    one to decide (once its data is complete). After an outage every due window but the
    latest is skipped: a window whose deadline passed a period or more ago is not decided
    any more; that latest one is decided. ``skipped.stop - 1`` is the window to resume
    after (``last_decided`` when nothing is skipped).
    """
    latest = latest_due(now_us, period_us, grace_us)
    first = max(last_decided + 1, latest)
    ended = now_us // period_us - 1  # the latest window whose end has passed
    return DueWindows(skipped=range(last_decided + 1, first), decide=range(first, ended + 1)[:1])


def split_by_window(
    timestamps_us: Sequence[int], payloads: Sequence[int], period_us: int, decided_until: int
) -> tuple[dict[int, WindowStats], int]:
    """The statistics of a batch of readings per window (keyed by the window's start), and
    how many of them are stale (stamped before ``decided_until``, so counted nowhere)."""
    if len(timestamps_us) != len(payloads):
        raise ValueError(
            f"{len(timestamps_us)} timestamps but {len(payloads)} payloads in one batch"
        )
    if not timestamps_us:
        return {}, 0
    first = min(timestamps_us)
    # The common case on the hot path: the whole batch falls in one open window, so a
    # C-level min/max replaces the per-reading loop.
    if first >= decided_until and first // period_us == max(timestamps_us) // period_us:
        stats = WindowStats()
        stats.add_many(payloads)
        return {first // period_us * period_us: stats}, 0
    groups: dict[int, list[int]] = {}
    stale = 0
    for timestamp, payload in zip(timestamps_us, payloads, strict=True):
        if timestamp < decided_until:
            stale += 1
            continue
        start = timestamp // period_us * period_us
        group = groups.get(start)
        if group is None:
            groups[start] = [payload]
        else:
            group.append(payload)
    windows = {}
    for start, values in groups.items():
        windows[start] = stats = WindowStats()
        stats.add_many(values)
    return windows, stale


class DecisionSchedule:
    """When each window is decided, and the last one decided (the leader's clockwork).

    The statistics themselves are in the database, summed when a window is closed
    (:mod:`controller.storage.window_stats`); this only knows which window is next.
    """

    __slots__ = ("grace_us", "last_decided", "period_us")

    def __init__(self, period_us: int, grace_us: int, last_decided: int) -> None:
        if period_us <= 0:
            raise ValueError(f"period_us must be positive, got {period_us}")
        if grace_us < 0:
            raise ValueError(f"grace_us must not be negative, got {grace_us}")
        self.period_us = period_us
        self.grace_us = grace_us
        self.last_decided = last_decided

    @property
    def decided_until(self) -> int:
        """The end of the last window decided: readings stamped before it are stale."""
        return (self.last_decided + 1) * self.period_us

    def end(self, index: int) -> int:
        """When window ``index`` ends, (index + 1)·P: from then on it may be decided."""
        return (index + 1) * self.period_us

    def next_due(self) -> int:
        """The index of the next window to decide."""
        return self.last_decided + 1

    def due(self, now_us: int) -> DueWindows:
        """The undecided windows to skip and to decide at ``now_us`` (see :func:`due_windows`)."""
        return due_windows(self.last_decided, now_us, self.period_us, self.grace_us)

    def decided(self, index: int) -> None:
        """Window ``index`` is decided (and every window before it with it)."""
        if index <= self.last_decided:
            raise ValueError(
                f"window {index} is not after the last decided window {self.last_decided}"
            )
        self.last_decided = index
