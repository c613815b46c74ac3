"""Where decisions resume after a start (controller.decision.restore): pure, no database."""

from __future__ import annotations

from controller.decision.restore import restore
from controller.decision.rule import WindowSummary
from controller.records import CommandRecord
from tests.builders import command_record

P = 1_000_000
GRACE = 300_000


def last_command(window: int, *, status: str = "up", issued_at: int | None = None) -> CommandRecord:
    summary = WindowSummary(4, 10.0, 2.0)
    return command_record(
        41,
        window_start=window * P,
        period_us=P,
        status=status,
        issued_at=issued_at if issued_at is not None else (window + 1) * P + GRACE,
        outcome="not_significant",
        p_value=0.5,
        window=summary,
        previous=summary,
    )


def test_an_empty_database_starts_at_the_current_window_with_the_initial_status() -> None:
    state = restore(None, decided_until=0, now_us=100 * P + 1, period_us=P, grace_us=GRACE,
                    initial_status="down")  # fmt: skip
    assert (state.status, state.next_id, state.last_issued_at) == ("down", 1, 0)
    assert state.schedule.last_decided == 99  # window 100 (now) is the first decided
    assert state.previous.count == 0
    assert not state.skipped
    assert state.schedule.decided_until == 100 * P


def test_a_quick_restart_skips_nothing_and_continues_ids_status_and_issue_times() -> None:
    last = last_command(99, issued_at=100 * P + GRACE + 5)
    state = restore(last, decided_until=100 * P, now_us=100 * P + GRACE + 900_000, period_us=P,
                    grace_us=GRACE,
                    initial_status="down")  # fmt: skip
    assert (state.status, state.next_id, state.last_issued_at) == ("up", 42, last.issued_at)
    assert state.schedule.last_decided == 99
    assert not state.skipped
    # The next decision compares with the last command's window.
    assert state.previous.summary() == WindowSummary(4, 10.0, 2.0)


def test_windows_that_fell_due_while_down_are_skipped_but_the_latest() -> None:
    # Down from before window 100's deadline until window 106's: 100..106 fell due.
    state = restore(last_command(99), decided_until=100 * P, now_us=107 * P + GRACE,
                    period_us=P, grace_us=GRACE,
                    initial_status="down")  # fmt: skip
    assert state.skipped == range(100, 106)
    assert state.schedule.last_decided == 105  # window 106, the latest due, is decided next
    assert state.schedule.due(107 * P + GRACE).decide == range(106, 107)


def test_a_term_resumes_from_the_decided_boundary_not_the_last_command() -> None:
    # A skip at a takeover moved decided_until past the last command's window.
    state = restore(last_command(99), decided_until=103 * P, now_us=103 * P + GRACE + 1,
                    period_us=P, grace_us=GRACE, initial_status="down")  # fmt: skip
    assert state.schedule.last_decided == 102
    assert not state.skipped
    assert state.next_id == 42


def test_a_new_cell_whose_first_windows_were_skipped_keeps_the_initial_status() -> None:
    state = restore(None, decided_until=50 * P, now_us=50 * P + 1, period_us=P, grace_us=GRACE,
                    initial_status="up")  # fmt: skip
    assert (state.status, state.next_id, state.schedule.last_decided) == ("up", 1, 49)
