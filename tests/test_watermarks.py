"""Which sensor runs a window waits for, and how far a commit group says each run reaches."""

from __future__ import annotations

import pytest

from controller.decision.watermarks import RunReach, Settled, Watermarks
from controller.records import ReadingRow
from controller.storage.inserts import NEW, REFUSED
from controller.storage.window_stats import HEARTBEAT_US, group_reach, mark_rows

S = 1_000_000  # one second, in microseconds
END = 100 * S  # the end of the window being decided
PERIOD = 5 * S
BOUND = 3 * S
IDLE = 2 * S


def run(run_id: int, reached: int, heard: int) -> RunReach:
    return RunReach(run_id, f"s{run_id}", reached, heard)


def marks(started: int = 0) -> Watermarks:
    return Watermarks(period_us=PERIOD, bound_us=BOUND, idle_us=IDLE, started_us=started)


def test_a_window_waits_for_live_runs_that_have_not_passed_its_end() -> None:
    live = run(1, END - 10_000, END - 5_000)  # heard 5 ms before the end, not past it
    past = run(2, END + 1_000, END + 2_000)
    assert marks().holding([live, past], END, END + 20_000) == [live]
    assert marks().holding([past], END, END + 20_000) == []


def test_the_deadline_is_the_bound_after_the_end_or_after_the_term_began() -> None:
    assert marks(started=0).deadline(END) == END + BOUND
    # A term that began after the window ended (a restart, a takeover) waits from its start:
    # the sensors' resent backlog gets the whole bound.
    assert marks(started=END + 7 * S).deadline(END) == END + 7 * S + BOUND


def test_a_silent_run_stops_holding_after_the_idle_bound() -> None:
    silent = run(1, END - S, END - S)  # last heard a second before the end
    assert marks().holding([silent], END, END - S + IDLE) == [silent]
    assert marks().holding([silent], END, END - S + IDLE + 1) == []


def test_after_a_restart_the_runs_heard_before_are_waited_for_until_the_deadline() -> None:
    # Sensors in their reconnect backoff look like stopped ones: waited for, within the bound.
    before = run(1, END - 30 * S, END - 30 * S)
    started = END + S
    watermarks = marks(started)
    assert watermarks.holding([before], END, started + BOUND) == [before]
    # ... unless the sensor came back under another run (it restarted: a new boot_id).
    restarted = RunReach(2, before.sensor_id, END + 5, started + 10)
    assert watermarks.holding([before, restarted], END, started + 20) == []
    # A run heard since the term began is idle after the idle bound, as ever.
    back = run(3, END - 5, started + 5)
    assert watermarks.holding([back], END, started + 5 + IDLE) == [back]
    assert watermarks.holding([back], END, started + 5 + IDLE + 1) == []


def test_a_run_later_than_the_bound_and_a_period_is_behind_and_not_waited_for() -> None:
    watermarks = marks()
    # Its newest reading was 9 s old when received: none of a window's readings can come
    # before the window's deadline (3 s after its end).
    far = run(1, END - 9 * S, END)
    # 7 s late: waited for until the deadline, whatever of it arrives by then counts.
    late = run(2, END - 7 * S, END)
    assert watermarks.holding([far, late], END, END + S) == [late]
    settled = watermarks.settle([far, late])
    assert (settled.behind, settled.caught_up) == ([far], [])
    assert watermarks.behind == [far]
    # Still behind at the next decision: nothing new to tell.
    assert watermarks.settle([far, late]) == Settled([], [])
    # Its lag back under the bound and a period: waited for again, and told.
    back = run(1, END + S, END + 2 * S)
    assert watermarks.settle([back, late]).caught_up == [back]
    assert watermarks.behind == []


def test_a_behind_run_gone_from_the_table_is_forgotten() -> None:
    watermarks = marks()
    watermarks.settle([run(1, END - 10 * S, END)])
    assert len(watermarks.behind) == 1
    assert watermarks.settle([]) == Settled([], [])
    assert watermarks.behind == []


@pytest.mark.parametrize(("period", "bound", "idle"), [(0, 0, 0), (S, -1, 0), (S, 0, -1)])
def test_bad_bounds_are_refused(period: int, bound: int, idle: int) -> None:
    with pytest.raises(ValueError, match="positive period"):
        Watermarks(period_us=period, bound_us=bound, idle_us=idle, started_us=0)


def rows(sensor: str, stamps: list[int], received: int) -> list[ReadingRow]:
    return [(sensor, "b1", seq, 7, stamp, received) for seq, stamp in enumerate(stamps, 1)]


def test_a_group_reaches_as_far_as_the_last_reading_of_each_message() -> None:
    segments = [
        (None, rows("a", [10, 20, 30], 1_000)),
        (None, rows("b", [5], 900)),
        (None, rows("a", [25], 1_100)),  # a resend of older readings: no step back
        (None, []),
    ]
    assert group_reach(segments, None) == {("a", "b1"): (30, 1_100), ("b", "b1"): (5, 900)}
    # A message whose last reading the database refused says nothing of its run.
    states = [NEW, NEW, NEW, NEW, REFUSED]
    assert group_reach(segments, states) == {("a", "b1"): (30, 1_000), ("b", "b1"): (5, 900)}


def test_a_run_mark_is_written_when_it_passes_a_window_end_or_its_heartbeat_is_due() -> None:
    period = 5 * S
    ids = {("a", "b1"): 1, ("b", "b1"): 2}
    written = {("a", "b1"): (12 * S, 12 * S), ("b", "b1"): (12 * S, 12 * S)}
    group = {
        ("a", "b1"): (12 * S + 100, 12 * S + 100),  # same window, heard just now: skip
        ("b", "b1"): (15 * S, 15 * S),  # passed the end of window [10, 15) s: write
    }
    rows_, kept = mark_rows("node", ids, written, group, period)
    assert rows_ == [(2, "node", 15 * S, 15 * S)]
    assert kept == {("b", "b1"): (15 * S, 15 * S)}
    # The heartbeat: a run in the same window is written once its receipt is that much newer.
    late = {("a", "b1"): (12 * S + 200, 12 * S + HEARTBEAT_US)}
    assert mark_rows("node", ids, written, late, period)[0] == [
        (1, "node", 12 * S + 200, 12 * S + HEARTBEAT_US)
    ]
    # An older reading (a resend) never moves a mark back.
    old = {("a", "b1"): (3 * S, 13 * S)}
    assert mark_rows("node", ids, written, old, period)[0] == [(1, "node", 12 * S, 13 * S)]
    # A run not written yet is written at once.
    assert mark_rows("node", ids, {}, {("a", "b1"): (1, 2)}, period)[0] == [(1, "node", 1, 2)]
