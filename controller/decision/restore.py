"""Where decisions resume after a start: pure, from the last command stored and the time.

The same rule as after a stall (:func:`~controller.decision.windows.due_windows`): of the
windows whose deadline passed while the controller was down only the latest is still decided;
windows not yet due are kept. The window the next decision compares with is the last command's,
as after a stall. Readings of the open windows that were stored before the stop are counted
again (:meth:`DecisionState.count_restored`): the caller reads them back from
:attr:`DecisionState.open_since` on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from controller.decision.rule import WindowStats
from controller.decision.windows import WindowBook, due_windows, window_index
from controller.records import CommandRecord

__all__ = ["DecisionState", "restore"]


@dataclass(slots=True)
class DecisionState:
    """What the decision loop starts from."""

    book: WindowBook
    status: str
    previous: WindowStats
    """The window the next decision compares with (exact sums)."""
    next_id: int
    last_issued_at: int
    """Issue times never go back, even if the clock does (0: no command yet)."""
    skipped: range
    """Windows whose deadline passed while the controller was down: they get no command."""

    @property
    def open_since(self) -> int:
        """The start (µs) of the first window not decided yet."""
        return (self.book.last_decided + 1) * self.book.period_us

    def count_restored(self, readings: Iterable[tuple[int, int]]) -> int:
        """Count ``(timestamp_us, payload)`` readings stored before the start; how many."""
        count = 0
        for timestamp, payload in readings:
            self.book.add(timestamp, payload)
            count += 1
        return count


def restore(
    last: CommandRecord | None,
    *,
    now_us: int,
    period_us: int,
    grace_us: int,
    initial_status: str,
) -> DecisionState:
    """The state at ``now_us`` after ``last``, the last command stored (None: none yet)."""
    if last is None:
        book = WindowBook(period_us, grace_us, window_index(now_us, period_us) - 1)
        return DecisionState(book, initial_status, WindowStats(), 1, 0, range(0))
    skipped = due_windows(
        window_index(last.window_start, period_us), now_us, period_us, grace_us
    ).skipped
    return DecisionState(
        WindowBook(period_us, grace_us, skipped.stop - 1),
        last.status,
        WindowStats.from_summary(last.window.count, last.window.mean, last.window.std),
        last.id + 1,
        last.issued_at,
        skipped,
    )
