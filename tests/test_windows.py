"""Window alignment, the stale rule, the decision schedule and batches split by window."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.decision.rule import WindowStats
from controller.decision.windows import (
    DecisionSchedule,
    due_windows,
    split_by_window,
    window_bounds,
    window_index,
)

P = 5_000_000  # a 5-second period, in microseconds
GRACE = 200_000


def at(index: int, offset_us: int = 0) -> int:
    """A timestamp ``offset_us`` into window ``index``."""
    return index * P + offset_us


def due(book: DecisionSchedule, now_us: int) -> tuple[list[int], list[int]]:
    """(windows skipped, windows decided) at ``now_us``."""
    windows = book.due(now_us)
    return list(windows.skipped), list(windows.decide)


@pytest.mark.parametrize(
    ("timestamp", "index"),
    [
        (0, 0),
        (1, 0),
        (P - 1, 0),
        (P, 1),
        (-1, -1),
        (-P, -1),
        (-P - 1, -2),
        (1_700_000_000_000_000, 340_000_000),
    ],
)
def test_window_index_floors_at_boundaries_and_for_negatives(timestamp: int, index: int) -> None:
    assert window_index(timestamp, P) == index


@given(st.integers(min_value=-(2**62), max_value=2**62), st.integers(min_value=1, max_value=10**9))
def test_every_timestamp_lies_in_its_window(timestamp: int, period: int) -> None:
    start, end = window_bounds(window_index(timestamp, period), period)

    assert start <= timestamp < end
    assert end - start == period


def test_window_bounds() -> None:
    assert window_bounds(0, P) == (0, P)
    assert window_bounds(3, P) == (3 * P, 4 * P)
    assert window_bounds(-2, P) == (-2 * P, -P)


@pytest.mark.parametrize(("period", "grace"), [(0, 0), (-1, 0), (P, -1)])
def test_book_refuses_bad_period_or_grace(period: int, grace: int) -> None:
    with pytest.raises(ValueError, match=r"period_us|grace_us"):
        DecisionSchedule(period, grace, last_decided=0)


def test_end_and_next_due() -> None:
    book = DecisionSchedule(P, GRACE, last_decided=9)

    assert book.next_due() == 10
    assert book.end(10) == 11 * P  # decided from then on, at the latest grace later


def test_stale_rule_follows_the_schedule() -> None:
    """Readings of a window count until it is decided, and never after."""
    book = DecisionSchedule(P, GRACE, last_decided=9)
    assert book.decided_until == at(10)
    # Before window 10 ends nothing is to decide.
    assert due(book, at(11) - 1) == ([], [])
    # Once it has ended it is the window to decide (issue 14, item 4: it used to wait for
    # its deadline; the loop now decides it as soon as its data is complete, at the latest
    # at the deadline: controller.decision.watermarks).
    assert due(book, at(11)) == ([], [10])
    assert due(book, at(11, GRACE)) == ([], [10])
    book.decided(10)
    # From now on every reading of window <= 10 is stale; window 11 keeps counting.
    windows, stale = split_by_window(
        [at(10, P - 1), at(3), at(11)], [50, 50, 200], P, book.decided_until
    )
    assert stale == 2
    assert windows == {at(11): WindowStats(1, 200, 40_000)}
    assert due(book, at(12) - 1) == ([], [])
    assert due(book, at(12)) == ([], [11])


def test_after_a_stall_only_the_latest_due_window_is_decided() -> None:
    # This test used to expect every missed window to be decided in turn: the burst of
    # commands issue 9 (item 7) reports. The rule is now the restart's.
    book = DecisionSchedule(P, GRACE, last_decided=9)

    # The loop stalled: windows 10 to 14 all passed their deadlines, 15 has not.
    skipped, decided = due(book, at(15, GRACE))

    assert (skipped, decided) == ([10, 11, 12, 13], [14])
    assert due(book, at(15, GRACE - 1)) == ([10, 11, 12], [13])
    book.decided(14)
    assert due(book, at(15, GRACE)) == ([], [])
    assert book.last_decided == 14


def test_due_before_any_deadline_is_empty() -> None:
    book = DecisionSchedule(P, GRACE, last_decided=9)

    assert due(book, at(0)) == ([], [])
    assert due(book, -(10**15)) == ([], [])


def test_due_and_index_work_with_zero_grace() -> None:
    book = DecisionSchedule(P, 0, last_decided=-3)

    assert due(book, -P) == ([], [-2])
    assert due(book, 0) == ([-2], [-1])


@given(
    st.integers(min_value=-50, max_value=50),
    st.integers(min_value=-100 * P, max_value=100 * P),
    st.integers(min_value=1, max_value=10 * P),
    st.integers(min_value=0, max_value=20 * P),
)
def test_due_windows_rule(last_decided: int, now: int, period: int, grace: int) -> None:
    """Grace below or above the period: what is skipped was overdue by a period, no more."""
    windows = due_windows(last_decided, now, period, grace)

    def deadline(index: int) -> int:
        return (index + 1) * period + grace

    assert windows.skipped.start == last_decided + 1
    assert windows.decide.start == windows.skipped.stop
    assert len(windows.decide) <= 1
    if windows.skipped:  # missed by a whole period (the latest skipped, so all): not decided
        assert deadline(windows.skipped[-1]) + period <= now
    for index in windows.decide:  # ended, and not yet a period past its deadline
        assert (index + 1) * period <= now < deadline(index) + period
    # Everything after is not due yet: never skipped, decided in its turn.
    assert deadline(max(windows.decide.stop, last_decided + 1)) > now
    # A window that has ended is never left waiting behind nothing.
    if (windows.skipped.stop + 1) * period <= now:
        assert windows.decide


@given(
    st.integers(min_value=-50, max_value=50),
    st.integers(min_value=-100 * P, max_value=100 * P),
    st.integers(min_value=0, max_value=P - 1),
)
def test_due_windows_keeps_the_old_restart_rule_past_the_grace(
    last_decided: int, now: int, grace: int
) -> None:
    # The restart used max(last window, current window - 2). With grace < period and `now`
    # past the grace of its window the rule gives the same; inside the grace it also decides
    # the window before the one that just ended, whose deadline passed less than a period ago.
    windows = due_windows(last_decided, now, P, grace)
    current = window_index(now, P)

    if now - current * P >= grace:
        assert windows.skipped.stop - 1 == max(last_decided, current - 2)
    else:
        assert windows.skipped.stop - 1 == max(last_decided, current - 3)


def test_a_restart_with_grace_above_the_period_skips_no_window_not_yet_due() -> None:
    # Period 1 s, grace 5 s (issue 10, item 5): window 100 was decided at its deadline, the
    # controller was killed and is back 1.5 s later. Window 101 is due (its deadline passed
    # 0.5 s ago); windows 102 to 106 are not due yet and keep counting their readings.
    period, grace = 1_000_000, 5_000_000
    deadline_100 = 101 * period + grace

    windows = due_windows(100, deadline_100 + 1_500_000, period, grace)

    assert (list(windows.skipped), list(windows.decide)) == ([], [101])


@pytest.mark.parametrize("index", [8, 9])
def test_decided_refuses_windows_already_decided(index: int) -> None:
    book = DecisionSchedule(P, GRACE, last_decided=9)

    with pytest.raises(ValueError, match="not after the last decided"):
        book.decided(index)


def test_split_counts_stale_and_groups_by_window() -> None:
    timestamps = [at(9), at(10), at(11), at(8), at(10, 1), at(12), at(9, P - 1)]
    payloads = [-1, 1, 2, -1, 3, 4, -1]

    windows, stale = split_by_window(timestamps, payloads, P, at(10))

    assert stale == 3
    assert windows == {
        at(10): WindowStats(count=2, total=4, total_sq=10),
        at(11): WindowStats(count=1, total=2, total_sq=4),
        at(12): WindowStats(count=1, total=4, total_sq=16),
    }


def test_split_in_one_window_and_empty() -> None:
    windows, stale = split_by_window([at(10, i) for i in range(100)], list(range(100)), P, at(10))
    assert stale == 0
    assert windows[at(10)].count == 100
    assert windows[at(10)].total == sum(range(100))
    assert split_by_window([], [], P, at(10)) == ({}, 0)


def test_split_entirely_stale() -> None:
    assert split_by_window([at(9, i) for i in range(10)], [7] * 10, P, at(10)) == ({}, 10)


def test_split_refuses_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="2 timestamps but 1 payloads"):
        split_by_window([at(10), at(10)], [1], P, at(10))


@given(
    st.integers(min_value=-3, max_value=3),
    st.lists(
        st.tuples(
            st.integers(min_value=-5 * P, max_value=5 * P),
            st.integers(min_value=-(2**63), max_value=2**63 - 1),
        ),
        max_size=60,
    ),
)
def test_split_equals_adding_one_by_one(last_decided: int, readings: list[tuple[int, int]]) -> None:
    decided_until = (last_decided + 1) * P
    windows, stale = split_by_window(
        [t for t, _ in readings], [p for _, p in readings], P, decided_until
    )
    single: dict[int, WindowStats] = {}
    for t, p in readings:
        if t >= decided_until:
            single.setdefault(window_index(t, P) * P, WindowStats()).add(p)

    assert stale == sum(1 for t, _ in readings if t < decided_until)
    assert windows == single
