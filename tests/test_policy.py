"""The guards against flapping (controller.decision.policy) and their state across a restart.

Pure units for the state machine, then the decision loop driven by hand (an injected clock, a
list for a database) to show that a controller restarted in the middle of a streak, resuming
from its last command as a new leader does, decides exactly as one that never stopped.
"""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.config import parse_config
from controller.decision.loop import DecisionLoop
from controller.decision.policy import (
    NO_STREAK,
    Policy,
    PolicyOutcome,
    Streak,
    Verdict,
    decide_under,
    govern,
)
from controller.decision.restore import restore
from controller.decision.rule import WindowStats, decide
from controller.decision.windows import DecisionSchedule, window_index
from controller.records import ClosedWindows, CloseWindows, CommandRecord
from tests.test_decider import ManualClock

INT64_MAX = 2**63 - 1


def window(level: int, *, n: int = 20) -> WindowStats:
    """``n`` readings around ``level`` (spread 0..2): any two levels 3 apart differ clearly."""
    stats = WindowStats()
    stats.add_many([level + (0, 1, 2, 1)[i % 4] for i in range(n)])
    return stats


def run(levels: list[int], policy: Policy, status: str = "down") -> list[Verdict]:
    """The verdicts on windows at ``levels``, each compared with the one before."""
    verdicts = []
    streak = NO_STREAK
    for previous, current in itertools.pairwise(levels):
        _, verdict = decide_under(window(current), window(previous), status, streak, policy)
        verdicts.append(verdict)
        status, streak = verdict.status, verdict.streak
    return verdicts


def outcomes(verdicts: list[Verdict]) -> list[str]:
    return [str(v.outcome) for v in verdicts]


def statuses(verdicts: list[Verdict]) -> list[str]:
    return [v.status for v in verdicts]


# --- the state machine -------------------------------------------------------------------


def test_the_default_policy_is_the_rule() -> None:
    verdicts = run([0, 10, 10, 0, 0, 10], Policy())
    assert outcomes(verdicts) == [
        "significant", "not_significant", "significant", "not_significant", "significant",
    ]  # fmt: skip
    assert statuses(verdicts) == ["up", "up", "down", "down", "up"]
    assert [v.changed for v in verdicts] == [True, False, True, False, True]


@settings(deadline=None)  # a loaded 2-core machine stalls single examples
@given(
    st.lists(
        st.lists(st.integers(min_value=-20, max_value=20), min_size=0, max_size=12),
        min_size=2,
        max_size=12,
    ),
    st.sampled_from(["up", "down"]),
    st.sampled_from([0.05, 0.3]),
)
def test_with_the_defaults_every_decision_is_the_rules_exactly(
    windows: list[list[int]], status: str, alpha: float
) -> None:
    policy = Policy(alpha=alpha)
    streak = NO_STREAK
    for previous_values, current_values in itertools.pairwise(windows):
        current, previous = WindowStats(), WindowStats()
        current.add_many(current_values)
        previous.add_many(previous_values)
        rule = decide(current, previous, status, alpha)
        _, verdict = decide_under(current, previous, status, streak, policy)
        assert (verdict.status, verdict.changed, str(verdict.outcome)) == (
            rule.status, rule.changed, str(rule.outcome),
        )  # fmt: skip
        status, streak = verdict.status, verdict.streak


def test_below_the_minimum_effect_the_status_stays() -> None:
    verdicts = run([0, 3, 13, 10], Policy(min_effect=5.0))
    # +3 is significant but small; +10 moves the status; -3 is small again.
    assert outcomes(verdicts) == ["below_min_effect", "significant", "below_min_effect"]
    assert statuses(verdicts) == ["down", "up", "up"]
    assert verdicts[0].streak == NO_STREAK


def test_a_difference_of_exactly_the_minimum_effect_qualifies() -> None:
    verdicts = run([0, 5], Policy(min_effect=5.0))
    assert outcomes(verdicts) == ["significant"]
    assert statuses(verdicts) == ["up"]


def test_k_consecutive_significant_windows_in_one_direction_change_the_status() -> None:
    verdicts = run([0, 10, 20, 30, 40], Policy(confirm=3))
    assert outcomes(verdicts) == ["unconfirmed", "unconfirmed", "significant", "significant"]
    assert statuses(verdicts) == ["down", "down", "up", "up"]
    assert [v.changed for v in verdicts] == [False, False, True, False]
    assert [v.streak for v in verdicts] == [Streak("up", n) for n in (1, 2, 3, 4)]


def test_a_window_that_is_not_significant_ends_the_streak() -> None:
    verdicts = run([0, 10, 20, 20, 30, 40], Policy(confirm=3))
    assert outcomes(verdicts) == [
        "unconfirmed", "unconfirmed", "not_significant", "unconfirmed", "unconfirmed",
    ]  # fmt: skip
    assert verdicts[2].streak == NO_STREAK
    assert set(statuses(verdicts)) == {"down"}


def test_the_other_direction_starts_a_new_streak() -> None:
    verdicts = run([0, 10, 20, 10, 0, -10], Policy(confirm=3), status="up")
    # Up twice (the status is up already: significant, nothing to confirm), then down thrice.
    assert outcomes(verdicts) == [
        "significant", "significant", "unconfirmed", "unconfirmed", "significant",
    ]  # fmt: skip
    assert [v.streak for v in verdicts] == [
        Streak("up", 1), Streak("up", 2), Streak("down", 1), Streak("down", 2), Streak("down", 3),
    ]  # fmt: skip
    assert statuses(verdicts) == ["up", "up", "up", "up", "down"]


def test_a_window_below_the_minimum_effect_ends_the_streak() -> None:
    verdicts = run([0, 10, 13, 23, 33], Policy(min_effect=5.0, confirm=2))
    assert outcomes(verdicts) == ["unconfirmed", "below_min_effect", "unconfirmed", "significant"]
    assert statuses(verdicts) == ["down", "down", "down", "up"]


def test_a_window_without_a_test_ends_the_streak() -> None:
    decision = decide(WindowStats(), window(0), "down", 0.05)
    verdict = govern(decision, "down", Streak("up", 4), Policy(confirm=5))
    assert verdict == Verdict("down", False, PolicyOutcome.TOO_FEW_READINGS, NO_STREAK)


def test_guards_together_flap_less_on_noise_with_a_step() -> None:
    # Noise around 100 with a step to 110 in the middle of window 10 (so windows 10 and 11
    # both differ from their predecessors upwards): the rule flaps, the guarded policy moves once.
    rng = random.Random(7)
    windows = []
    for k in range(20):
        stats = WindowStats()
        stats.add_many(
            [round(rng.gauss(110 if (k, i) >= (10, 100) else 100, 3)) for i in range(200)]
        )
        windows.append(stats)

    def changes(policy: Policy) -> int:
        status, streak, changed = "down", NO_STREAK, 0
        for previous, current in itertools.pairwise(windows):
            _, verdict = decide_under(current, previous, status, streak, policy)
            status, streak, changed = verdict.status, verdict.streak, changed + verdict.changed
        assert status == "up"  # the step is caught either way
        return changed

    assert changes(Policy(alpha=0.3)) > 1
    assert changes(Policy(alpha=0.3, min_effect=2.0, confirm=2)) == 1


@pytest.mark.parametrize(
    "kwargs",
    [{"alpha": 0.0}, {"alpha": 1.0}, {"min_effect": -1.0}, {"min_effect": math.inf},
     {"min_effect": math.nan}, {"confirm": 0}],
)  # fmt: skip
def test_a_policy_out_of_bounds_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        Policy(**kwargs)  # type: ignore[arg-type]


def test_a_streak_has_a_direction_exactly_when_it_has_a_length() -> None:
    for direction, length in (("up", 0), (None, 2), ("sideways", 1)):
        with pytest.raises(ValueError, match="streak"):
            Streak(direction, length)


# --- across a restart ----------------------------------------------------------------------

P = 1_000_000
GRACE = 200_000
FIRST = 10  # the first window decided


class Cell:
    """The database and the manipulator at once: window statistics, commands in order."""

    def __init__(self, windows: list[WindowStats]) -> None:
        self.windows = {FIRST + k: stats for k, stats in enumerate(windows)}
        self.recorded: list[CommandRecord] = []

    async def close_windows(self, close: CloseWindows) -> ClosedWindows:
        assert close.decide is not None
        stats = self.windows[window_index(close.window_start, P)].copy()
        record = close.decide(stats)
        self.recorded.append(record)
        return ClosedWindows(record, stats)

    def enqueue(self, record: CommandRecord) -> None:
        pass


def loop_for(cell: Cell, clock: ManualClock, policy: Policy) -> DecisionLoop:
    return DecisionLoop(
        schedule=DecisionSchedule(P, GRACE, FIRST - 1),
        alpha=policy.alpha,
        min_effect=policy.min_effect,
        confirm=policy.confirm,
        status="down",
        previous=WindowStats(),
        next_id=1,
        closer=cell,
        sender=cell,
        clock=clock,
        sleep=clock.sleep,
    )


def resumed_loop(cell: Cell, clock: ManualClock, policy: Policy) -> DecisionLoop:
    """A new loop from the last command only, as a restarted controller or a new leader."""
    last = cell.recorded[-1]
    state = restore(
        last,
        decided_until=last.window_end,
        now_us=clock.now_us,
        period_us=P,
        grace_us=GRACE,
        initial_status="down",
    )
    return DecisionLoop(
        schedule=state.schedule,
        alpha=policy.alpha,
        min_effect=policy.min_effect,
        confirm=policy.confirm,
        status=state.status,
        previous=state.previous,
        streak=state.streak,
        next_id=state.next_id,
        closer=cell,
        sender=cell,
        clock=clock,
        sleep=clock.sleep,
        last_issued_at=state.last_issued_at,
    )


async def decide_all(
    windows: list[WindowStats], policy: Policy, *, restart_after: int | None
) -> list[CommandRecord]:
    cell, clock = Cell(windows), ManualClock(FIRST * P)
    loop = loop_for(cell, clock, policy)
    for k in range(len(windows)):
        if k == restart_after:
            loop = resumed_loop(cell, clock, policy)
        await loop.step()
    return cell.recorded


def decisions(records: list[CommandRecord]) -> list[tuple[object, ...]]:
    return [
        (r.id, r.window_start, r.status, r.changed, r.outcome, r.p_value, r.effect, r.streak)
        for r in records
    ]


async def test_a_restart_in_the_middle_of_a_streak_decides_as_without_it() -> None:
    # Levels 0, 0, 10, 20 | 30, 40: with --confirm 3 the third step up (window 14, the first
    # after the restart) changes the status, only if the streak of two survived the restart.
    windows = [window(level) for level in (0, 0, 10, 20, 30, 40)]
    policy = Policy(min_effect=5.0, confirm=3)

    straight = await decide_all(windows, policy, restart_after=None)
    restarted = await decide_all(windows, policy, restart_after=4)

    assert decisions(restarted) == decisions(straight)
    assert [r.outcome for r in straight] == [
        "too_few_readings", "not_significant", "unconfirmed", "unconfirmed", "significant",
        "significant",
    ]  # fmt: skip
    assert straight[4].changed
    assert straight[3].streak == Streak("up", 2)
    assert all((r.min_effect, r.confirm, r.alpha) == (5.0, 3, 0.05) for r in straight)


async def test_a_restart_near_int64_max_compares_with_the_exact_previous_window() -> None:
    # Means 97 apart near 2**63, where floats are 2048 apart: restored from its stored float
    # mean and std the previous window's mean would be 2**63 and the difference -100.5.
    windows = []
    for values in (
        [INT64_MAX - d for d in range(6)],
        [INT64_MAX - 99 - (i % 2) for i in range(50)],
    ):
        stats = WindowStats()
        stats.add_many(values)
        windows.append(stats)
    straight = await decide_all(windows, Policy(), restart_after=None)
    restarted = await decide_all(windows, Policy(), restart_after=1)

    assert decisions(restarted) == decisions(straight)
    assert straight[1].effect.difference == -97.0
    assert straight[0].window_sums == (windows[0].total, windows[0].total_sq)


# --- the flags -----------------------------------------------------------------------------


def test_the_guards_are_off_unless_asked_for() -> None:
    config = parse_config([], environ={})
    assert (config.min_effect, config.confirm) == (0.0, 1)
    config = parse_config(["--min-effect", "2.5"], environ={"WORKCELL_CONFIRM": "3"})
    assert (config.min_effect, config.confirm) == (2.5, 3)


@pytest.mark.parametrize(
    "args", [["--min-effect", "-1"], ["--min-effect", "nan"], ["--confirm", "0"],
             ["--confirm", "1.5"], ["--confirm", "1001"]],
)  # fmt: skip
def test_guards_out_of_bounds_exit_2(args: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_config(args, environ={})
    assert exited.value.code == 2
