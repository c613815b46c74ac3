"""Consecutive commands of one status as one History entry (controller.api.status_runs): pure."""

from __future__ import annotations

from controller.api.status_runs import Run, RunGrouper, entry_for_run
from controller.decision.rule import WindowSummary
from controller.records import CommandRecord
from tests.builders import command_record
from workcell.v1 import command_pb2


def command(command_id: int, status: str, *, acknowledged: bool = True) -> CommandRecord:
    summary = WindowSummary(command_id, float(command_id), 1.0)
    return command_record(
        command_id,
        window_start=command_id * 10,
        period_us=10,
        status=status,
        issued_at=command_id * 10 + 11,
        acknowledged_at=command_id * 10 + 12 if acknowledged else None,
        outcome="significant",
        changed=True,
        p_value=0.01,
        window=summary,
        previous=summary,
    )


def spans(runs: list[Run]) -> list[tuple[int, int, int, str, bool]]:
    return [(r.first.id, r.last.id, r.count, r.status, r.acknowledged) for r in runs]


def test_a_run_is_complete_once_a_command_of_another_status_follows() -> None:
    grouper = RunGrouper()
    done = grouper.feed([command(1, "up"), command(2, "up"), command(3, "down")])
    assert spans(done) == [(1, 2, 2, "up", True)]
    assert spans(grouper.feed([command(4, "down", acknowledged=False)])) == []
    run = grouper.take_open()
    assert run is not None
    assert spans([run]) == [(3, 4, 2, "down", False)]
    assert grouper.take_open() is None


def test_a_run_extended_by_a_seek_counts_its_ids() -> None:
    run = Run.of(command(5, "up"))
    run.extend_to(command(900, "up"), acknowledged=False)
    assert (run.count, run.last_id, run.acknowledged) == (896, 900, False)


def test_an_entry_carries_the_first_decision_and_the_last_acknowledgement() -> None:
    run = Run.of(command(1, "up"))
    run.append(command(2, "up"))
    entry = entry_for_run(run)
    assert (entry.command_id, entry.last_command_id, entry.command_count) == (1, 2, 2)
    assert entry.status == command_pb2.STATUS_UP
    assert entry.window.count == 1  # the decision that started the run
    assert entry.acknowledged_at.ToMicroseconds() == 32
    run.append(command(3, "up", acknowledged=False))
    assert not entry_for_run(run).HasField("acknowledged_at")
