"""History entries carry each decision's effect, policy, outcome, streak and exact sums.

``entry_for_run`` (pure), then ``workcell history``'s table and JSON for the new fields.
"""

from __future__ import annotations

import dataclasses
import json

from controller.api.status_runs import Run, entry_for_run
from controller.decision.effect import Effect
from controller.decision.policy import NO_STREAK, PolicyOutcome, Streak
from controller.decision.rule import WindowSummary
from controller.records import CommandRecord
from tests.builders import command_record
from workcell.history_table import entry_record, format_table
from workcell.v1 import command_pb2, history_pb2

SUMMARY = WindowSummary(1500, 101.25, 9.5)


def guarded(command_id: int = 1, **changes: object) -> CommandRecord:
    record = command_record(
        command_id,
        window_start=1_740_830_400_000_000 + command_id * 5_000_000,
        status="down",
        outcome="unconfirmed",
        p_value=0.001,
        window=SUMMARY,
        previous=WindowSummary(1490, 99.0, 9.0),
    )
    record = dataclasses.replace(
        record,
        alpha=0.01,
        effect=Effect(2.25, 1.5, 3.0, 0.24),
        min_effect=1.0,
        confirm=3,
        streak=Streak("up", 2),
        window_sums=(151_875, 15_512_345),
    )
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


def test_an_entry_carries_the_effect_policy_outcome_and_streak() -> None:
    entry = entry_for_run(Run.of(guarded()))

    assert entry.difference == 2.25
    assert (entry.difference_ci_low, entry.difference_ci_high) == (1.5, 3.0)
    assert entry.effect_size == 0.24
    assert entry.outcome == history_pb2.DECISION_OUTCOME_UNCONFIRMED
    assert entry.policy.alpha == 0.01
    assert (entry.policy.min_effect, entry.policy.confirm) == (1.0, 3)
    assert (entry.streak_length, entry.streak_status) == (2, command_pb2.STATUS_UP)
    assert (entry.window.total, entry.window.total_sq) == ("151875", "15512345")
    assert (entry.previous_window.total, entry.previous_window.total_sq) == ("", "")


def test_every_outcome_has_its_enum_value() -> None:
    for outcome in PolicyOutcome:
        entry = entry_for_run(Run.of(guarded(outcome=str(outcome))))
        name = history_pb2.DecisionOutcome.Name(entry.outcome)
        assert name == f"DECISION_OUTCOME_{outcome.name}"


def test_undefined_and_unrecorded_values_are_unset() -> None:
    old = command_record(1, window_start=0, outcome="too_few_readings")  # before revision 0006
    entry = entry_for_run(Run.of(old))
    for field in ("difference", "difference_ci_low", "difference_ci_high", "effect_size"):
        assert not entry.HasField(field), field
    assert entry.policy.alpha == 0.05
    assert not entry.policy.HasField("min_effect")
    assert not entry.policy.HasField("confirm")
    assert (entry.streak_length, entry.streak_status) == (0, command_pb2.STATUS_UNSPECIFIED)
    assert entry.window.total == ""
    assert entry.outcome == history_pb2.DECISION_OUTCOME_TOO_FEW_READINGS
    # A difference without an interval (a window of one reading), and no streak.
    partial = entry_for_run(Run.of(guarded(effect=Effect(difference=7.0), streak=NO_STREAK)))
    assert partial.difference == 7.0
    assert not partial.HasField("difference_ci_low")
    assert (partial.streak_length, partial.streak_status) == (0, command_pb2.STATUS_UNSPECIFIED)


def test_an_outcome_this_controller_does_not_know_is_unspecified() -> None:
    entry = entry_for_run(Run.of(guarded(outcome="changed")))
    assert entry.outcome == history_pb2.DECISION_OUTCOME_UNSPECIFIED


def test_a_merged_run_shows_the_decision_that_started_it() -> None:
    run = Run.of(guarded(1, outcome="significant", changed=True))
    run.append(guarded(2, effect=Effect(0.1, -0.5, 0.7, 0.01), outcome="not_significant"))
    entry = entry_for_run(run)
    assert entry.difference == 2.25
    assert entry.outcome == history_pb2.DECISION_OUTCOME_SIGNIFICANT


# --- workcell history ----------------------------------------------------------------------


def test_the_table_shows_the_difference_with_its_interval_in_one_column() -> None:
    lines = format_table([entry_for_run(Run.of(guarded()))]).splitlines()
    header = lines[0].split()
    assert "difference" in header
    # The interval is symmetric about the difference: its half-width says all of it.
    assert "+2.25 ±0.75" in lines[2]


def test_the_table_says_why_a_significant_decision_kept_the_status() -> None:
    unconfirmed = format_table([entry_for_run(Run.of(guarded()))]).splitlines()[2]
    assert " no (unconfirmed 2/3) " in unconfirmed
    small = guarded(outcome="below_min_effect", streak=NO_STREAK)
    assert " no (< min effect) " in format_table([entry_for_run(Run.of(small))]).splitlines()[2]


def test_the_table_shows_a_dash_without_a_difference() -> None:
    old = command_record(1, window_start=0, outcome="too_few_readings")
    row = format_table([entry_for_run(Run.of(old))]).splitlines()[2]
    assert " no  " in row  # the plain "no": nothing to explain
    cells = row.split()
    assert "-" in cells


def test_json_has_the_effect_policy_outcome_and_streak() -> None:
    record = entry_record(entry_for_run(Run.of(guarded())))
    assert record["difference"] == 2.25
    assert (record["difference_ci_low"], record["difference_ci_high"]) == (1.5, 3.0)
    assert record["effect_size"] == 0.24
    assert record["outcome"] == "unconfirmed"
    assert record["policy"] == {"alpha": 0.01, "min_effect": 1.0, "confirm": 3}
    assert record["streak"] == {"status": "up", "length": 2}
    assert (record["window_total"], record["window_total_sq"]) == ("151875", "15512345")
    json.dumps(record)
    old = entry_record(entry_for_run(Run.of(command_record(1, window_start=0))))
    assert old["difference"] is None
    assert old["policy"] == {"alpha": 0.05, "min_effect": None, "confirm": None}
    assert old["streak"] is None
    assert old["window_total"] is None
