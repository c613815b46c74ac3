"""Window alignment, the stale rule and the book of open windows, with times passed in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.decision import WindowStats
from controller.windows import WindowBook, window_bounds, window_index

P = 5_000_000  # a 5-second period, in microseconds
GRACE = 200_000


def at(index: int, offset_us: int = 0) -> int:
    """A timestamp ``offset_us`` into window ``index``."""
    return index * P + offset_us


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
        WindowBook(period, grace, last_decided=0)


def test_deadline_and_next_due() -> None:
    book = WindowBook(P, GRACE, last_decided=9)

    assert book.next_due() == 10
    assert book.deadline(10) == 11 * P + GRACE


def test_stale_rule_follows_the_clock() -> None:
    """Readings of a window count until it is closed at its deadline, and never after."""
    book = WindowBook(P, GRACE, last_decided=9)

    # Window 10 is open: readings anywhere in it count, and so do early readings of window 11.
    assert book.add(at(10), 1)
    assert book.add(at(10, P - 1), 3)
    assert book.add(at(11, 5), 100)
    # Still in the grace period after window 10 ends: nothing is due, a late reading counts.
    assert book.due(at(11, GRACE - 1)) == []
    assert book.add(at(10, 123), 2)
    # At the deadline window 10 is due; the shell closes it.
    assert book.due(at(11, GRACE)) == [10]
    closed = book.close(10)

    assert closed.summary().count == 3
    assert closed.mean == 2.0
    # From now on every reading of window <= 10 is stale; window 11 keeps counting.
    assert not book.add(at(10, P - 1), 50)
    assert not book.add(at(3), 50)
    assert book.add(at(11), 200)
    assert book.stats(10) == WindowStats()
    assert book.stats(11).count == 2
    assert book.due(at(12, GRACE - 1)) == []
    assert book.due(at(12, GRACE)) == [11]


def test_due_lists_every_window_missed_by_a_stall() -> None:
    book = WindowBook(P, GRACE, last_decided=9)

    # The loop stalled: windows 10 to 13 all passed their deadlines, 14 has not.
    due = book.due(at(15, GRACE))

    assert due == [10, 11, 12, 13, 14]
    assert book.due(at(15, GRACE - 1)) == [10, 11, 12, 13]
    for index in due:
        book.close(index)
    assert book.due(at(15, GRACE)) == []
    assert book.last_decided == 14


def test_due_before_any_deadline_is_empty() -> None:
    book = WindowBook(P, GRACE, last_decided=9)

    assert book.due(at(0)) == []
    assert book.due(-(10**15)) == []


def test_due_and_index_work_with_zero_grace() -> None:
    book = WindowBook(P, 0, last_decided=-3)

    assert book.due(-P) == [-2]
    assert book.due(0) == [-2, -1]


def test_close_drops_older_windows_and_returns_empty_when_none() -> None:
    book = WindowBook(P, GRACE, last_decided=9)
    for index in (10, 11, 12, 13):
        assert book.add(at(index), index)

    closed = book.close(12)  # windows 10 and 11 were skipped: their statistics go

    assert closed.count == 1
    assert closed.total == 12
    assert book.open_windows() == [13]
    assert book.last_decided == 12
    assert book.close(14) == WindowStats()
    assert book.open_windows() == []


@pytest.mark.parametrize("index", [8, 9])
def test_close_refuses_decided_windows(index: int) -> None:
    book = WindowBook(P, GRACE, last_decided=9)

    with pytest.raises(ValueError, match="not after the last decided"):
        book.close(index)


def test_stats_returns_a_copy() -> None:
    book = WindowBook(P, GRACE, last_decided=0)
    book.add(at(1), 5)

    book.stats(1).add(1000)
    book.stats(2).add(1000)

    assert book.stats(1).count == 1
    assert book.open_windows() == [1]


def test_add_batch_counts_stale_and_groups_by_window() -> None:
    book = WindowBook(P, GRACE, last_decided=9)
    timestamps = [at(9), at(10), at(11), at(8), at(10, 1), at(12), at(9, P - 1)]
    payloads = [-1, 1, 2, -1, 3, 4, -1]

    stale = book.add_batch(timestamps, payloads)

    assert stale == 3
    assert book.stats(10) == WindowStats(count=2, total=4, total_sq=10)
    assert book.stats(11) == WindowStats(count=1, total=2, total_sq=4)
    assert book.stats(12) == WindowStats(count=1, total=4, total_sq=16)
    assert book.open_windows() == [10, 11, 12]


def test_add_batch_in_one_window() -> None:
    book = WindowBook(P, GRACE, last_decided=9)

    assert book.add_batch([at(10, i) for i in range(100)], list(range(100))) == 0
    assert book.add_batch([], []) == 0
    assert book.stats(10).count == 100
    assert book.stats(10).total == sum(range(100))


def test_add_batch_entirely_stale() -> None:
    book = WindowBook(P, GRACE, last_decided=9)

    assert book.add_batch([at(9, i) for i in range(10)], [7] * 10) == 10
    assert book.open_windows() == []


def test_add_batch_refuses_mismatched_lengths() -> None:
    book = WindowBook(P, GRACE, last_decided=9)

    with pytest.raises(ValueError, match="2 timestamps but 1 payloads"):
        book.add_batch([at(10), at(10)], [1])


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
def test_add_batch_equals_adding_one_by_one(
    last_decided: int, readings: list[tuple[int, int]]
) -> None:
    batched = WindowBook(P, GRACE, last_decided)
    single = WindowBook(P, GRACE, last_decided)

    stale = batched.add_batch([t for t, _ in readings], [p for _, p in readings])
    counted = sum(single.add(t, p) for t, p in readings)

    assert stale == len(readings) - counted
    assert batched.open_windows() == single.open_windows()
    for index in single.open_windows():
        assert batched.stats(index) == single.stats(index)


def test_seed_merges_with_readings_already_counted() -> None:
    book = WindowBook(P, GRACE, last_decided=9)
    book.add(at(10), 4)
    restored = WindowStats()
    restored.add_many([1, 2, 3])

    book.seed(10, restored)
    book.seed(11, WindowStats.from_summary(2, 5.0, 1.0))

    assert book.stats(10) == WindowStats(count=4, total=10, total_sq=30)
    assert book.stats(11).summary().mean == 5.0
    assert book.stats(11).summary().std == 1.0


def test_seed_refuses_decided_windows() -> None:
    book = WindowBook(P, GRACE, last_decided=9)

    with pytest.raises(ValueError, match="decided"):
        book.seed(9, WindowStats(count=1, total=1, total_sq=1))
