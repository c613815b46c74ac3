"""The sensor's absolute schedule, driven by a fake clock."""

from __future__ import annotations

import itertools
import math

import pytest

from sensor.pacing import Pacer, Schedule


class FakeClock:
    """Monotonic seconds that move only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def run_paced(pacer: Pacer, clock: FakeClock, *, until: float) -> list[tuple[int, float]]:
    """Play the sensor loop: take what is due, "sleep" exactly the delay; (index, taken at)."""
    taken: list[tuple[int, float]] = []
    while clock.now < until and not pacer.finished:
        taken.extend((i, clock.now) for i in pacer.take_due(clock()))
        clock.now += pacer.delay(clock())
    return taken


def test_due_times_are_evenly_spaced_within_each_second() -> None:
    clock = FakeClock()
    pacer = Pacer(Schedule(300, clock.now))
    taken = run_paced(pacer, clock, until=clock.now + 2.0)
    first_second = [t for i, t in taken if i < 300]
    assert len(first_second) == 300
    gaps = [b - a for a, b in itertools.pairwise(first_second)]
    assert all(math.isclose(g, 1 / 300, rel_tol=1e-6) for g in gaps)
    assert [i for i, _ in taken] == list(range(len(taken)))


def test_nothing_is_due_before_start_and_first_is_due_at_start() -> None:
    schedule = Schedule(10, 50.0)
    assert schedule.due_by(49.999) == 0
    assert schedule.due_by(50.0) == 1
    assert schedule.due_by(50.1) == 2
    assert schedule.due_before(50.1) == 1
    assert schedule.due_before(51.0) == 10


def test_catches_up_at_once_after_a_stall() -> None:
    clock = FakeClock(0.0)
    pacer = Pacer(Schedule(100, 0.0))
    assert list(pacer.take_due(0.0)) == [0]
    clock.now = 0.5  # the loop was blocked for half a second
    late = pacer.take_due(clock())
    assert list(late) == list(range(1, 51))
    assert pacer.delay(clock()) == pytest.approx(0.01)
    # and the schedule did not move: reading 51 is still due at 0.51
    assert pacer.schedule.due_at(51) == pytest.approx(0.51)


def test_delay_is_zero_when_overdue_and_inf_when_finished() -> None:
    pacer = Pacer(Schedule(10, 0.0), limit=3)
    assert list(pacer.take_due(0.0)) == [0]
    assert pacer.delay(0.5) == 0.0
    assert list(pacer.take_due(5.0)) == [1, 2]  # never past the limit
    assert pacer.finished
    assert pacer.delay(5.0) == math.inf
    assert list(pacer.take_due(10.0)) == []


def test_no_drift_over_a_million_readings() -> None:
    rate = 300.0
    start = 12_345.678
    schedule = Schedule(rate, start)
    pacer = Pacer(schedule)
    index = 0
    now = start
    # Wake up at each due time, a little late each time (as a real loop does).
    while index < 1_000_000:
        taken = pacer.take_due(now)
        index = taken.stop if taken else index
        now = now + pacer.delay(now) + 0.0001
    # Reading 10^6 is due exactly 10^6 / rate seconds after start, not later.
    assert schedule.due_at(1_000_000) - start == pytest.approx(1_000_000 / rate, abs=1e-6)
    assert now - start == pytest.approx(1_000_000 / rate, abs=0.01)
    # Counting by time gives the same answer at any horizon.
    for seconds in (1, 60, 3600):
        assert schedule.due_before(start + seconds) == int(rate * seconds)


def test_due_by_agrees_with_due_at_for_every_index() -> None:
    schedule = Schedule(7.0, 0.3)
    for i in range(10_000):
        due = schedule.due_at(i)
        assert schedule.due_by(due) == i + 1
        assert schedule.due_before(due) == i


@pytest.mark.parametrize("rate", [0, -1, math.inf, math.nan])
def test_rejects_bad_rates(rate: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        Schedule(rate, 0.0)
