"""Consecutive commands of one status as one History entry (controller.api.status_runs): pure."""

from __future__ import annotations

import dataclasses

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from controller.api.status_runs import Run, RunGrouper, entry_for_run
from controller.decision.effect import Effect
from controller.decision.policy import Streak
from controller.decision.rule import WindowSummary
from controller.records import CommandRecord
from tests.builders import command_record
from workcell.v1 import command_pb2, history_pb2


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


@pytest.mark.parametrize(
    "record",
    [
        # An old record (before revision 0006): no effect, policy, streak or sums.
        command_record(7, window_start=0, period_us=10, issued_at=0, acknowledged_at=None),
        # Before the epoch, with every field set (an entry is built field by field in place).
        dataclasses.replace(
            command_record(
                8, window_start=-1_500_001, acknowledged_at=-1, p_value=0.0, changed=True,
                window=WindowSummary(3, 1.5, 0.5), previous=WindowSummary(0, 0.0, 0.0),
                outcome="unconfirmed",
            ),
            effect=Effect(1.0, 0.5, 1.5, 2.0), min_effect=0.0, confirm=3,
            streak=Streak("down", 2), window_sums=(-5, 25),
        ),
    ],
    ids=["old record", "every field"],
)  # fmt: skip
def test_an_entry_is_the_message_its_fields_say(record: CommandRecord) -> None:
    def stamp(us: int) -> Timestamp:
        return Timestamp(seconds=us // 1_000_000, nanos=us % 1_000_000 * 1000)

    def summary(s: WindowSummary, sums: tuple[int, int] | None) -> history_pb2.WindowSummary:
        totals = {} if sums is None else {"total": str(sums[0]), "total_sq": str(sums[1])}
        return history_pb2.WindowSummary(count=s.count, mean=s.mean, std_dev=s.std, **totals)

    streak = record.streak
    expected = history_pb2.HistoryEntry(
        from_datetime=stamp(record.window_start),
        to_datetime=stamp(record.window_end),
        status=command_pb2.STATUS_UP if record.status == "up" else command_pb2.STATUS_DOWN,
        command_id=record.id,
        issued_at=stamp(record.issued_at),
        acknowledged_at=None if record.acknowledged_at is None else stamp(record.acknowledged_at),
        window=summary(record.window, record.window_sums),
        previous_window=summary(record.previous, (1, 1)),
        p_value=record.p_value,
        changed=record.changed,
        command_count=1,
        last_command_id=record.id,
        difference=record.effect.difference,
        difference_ci_low=record.effect.ci_low,
        difference_ci_high=record.effect.ci_high,
        effect_size=record.effect.effect_size,
        outcome=getattr(history_pb2, f"DECISION_OUTCOME_{record.outcome.upper()}"),
        policy=history_pb2.DecisionPolicy(
            alpha=record.alpha, min_effect=record.min_effect, confirm=record.confirm
        ),
        streak_length=0 if streak is None else streak.length,
        streak_status=(
            command_pb2.STATUS_DOWN
            if streak is not None and streak.direction == "down"
            else command_pb2.STATUS_UNSPECIFIED
        ),
    )
    entry = entry_for_run(Run.of(record), (1, 1))
    assert entry == expected
    for name in ("acknowledged_at", "p_value", "difference", "window", "policy"):
        assert entry.HasField(name) == expected.HasField(name), name
