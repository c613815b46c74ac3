"""Replaying a policy over recorded decisions (controller.decision.replay, workcell.replay_data).

The records come from the controller's own decision loop driven by hand (an injected clock, a
list for a database: ``tests.test_policy``'s cell), restarted in the middle with another
policy as an operator would; they reach the replay the way ``workcell replay`` gets them, as
History entries (``entry_for_run``, with the previous command's sums as History/Query serves
them). Replayed under the recorded policy, every decision must come out as it was issued,
from any first window on; under a stricter one, the status must move less and still follow
a step.
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from controller.api.status_runs import Run, entry_for_run
from controller.decision.policy import NO_STREAK, Policy, Streak
from controller.decision.replay import PolicyOverride, RecordedDecision, Replay
from controller.decision.rule import WindowStats, WindowSummary
from controller.records import CommandRecord
from tests.test_decider import ManualClock
from tests.test_policy import FIRST, Cell, P, loop_for, resumed_loop, window
from workcell.replay_data import ReplayTally, recorded_from_entry
from workcell.v1 import history_pb2

RULE = Policy()
GUARDED = Policy(min_effect=4.0, confirm=2)


def drifting(
    seed: int, count: int, *, step_at: int | None = None, n: int = 60
) -> list[WindowStats]:
    """Windows of ``n`` noisy readings around a mean that drifts by a unit or two per window
    (significant now and then at this n: the rule flaps) and steps up by 30 in window
    ``step_at`` (half of it in that window, the rest in the next)."""
    rng = random.Random(seed)
    level = 100.0
    windows = []
    for k in range(count):
        level += rng.gauss(0, 1.5)
        stats = WindowStats()
        for i in range(n):
            step = 0
            if step_at is not None and (k > step_at or (k == step_at and i >= n // 2)):
                step = 30
            stats.add(round(rng.gauss(level + step, 3.0)))
        windows.append(stats)
    return windows


async def record(
    windows: list[WindowStats], policies: list[tuple[int, Policy]]
) -> list[CommandRecord]:
    """The commands the decision loop issues over ``windows``; ``policies`` says from which
    window on each policy decides (a restart from the last command at each change)."""
    cell, clock = Cell(windows), ManualClock(FIRST * P)
    starts = dict(policies)
    loop = loop_for(cell, clock, starts[0])
    for k in range(len(windows)):
        if k in starts and k > 0:
            loop = resumed_loop(cell, clock, starts[k])
        await loop.step()
    return cell.recorded


def served(records: list[CommandRecord]) -> list[history_pb2.HistoryEntry]:
    """The records as History/Query serves them, previous sums included."""
    sums = {r.id: r.window_sums for r in records}
    return [entry_for_run(Run.of(r), sums.get(r.id - 1)) for r in records]


def replay(
    entries: list[history_pb2.HistoryEntry],
    override: PolicyOverride | None = None,
    initial_status: str | None = None,
) -> tuple[list[tuple[object, ...]], ReplayTally]:
    replayer = Replay(override or PolicyOverride(), initial_status=initial_status)
    tally = ReplayTally()
    out: list[tuple[object, ...]] = []
    for entry in entries:
        replayed = replayer.step(recorded_from_entry(entry))
        tally.add(replayed)
        decision, verdict = replayed.decision, replayed.verdict
        out.append(
            (verdict.status, verdict.changed, str(verdict.outcome), verdict.streak,
             decision.p_value, decision.effect)
        )  # fmt: skip
    return out, tally


def issued(records: list[CommandRecord]) -> list[tuple[object, ...]]:
    return [(r.status, r.changed, r.outcome, r.streak, r.p_value, r.effect) for r in records]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    "policies",
    [
        [(0, RULE)],
        [(0, GUARDED)],
        [(0, Policy(confirm=3))],
        [(0, RULE), (12, GUARDED), (25, Policy(alpha=0.2, min_effect=2.0))],
    ],
    ids=["rule", "guarded", "confirm-3", "restarted-with-other-policies"],
)
async def test_the_recorded_policy_reproduces_every_decision(
    seed: int, policies: list[tuple[int, Policy]]
) -> None:
    records = await record(drifting(seed, 40, step_at=20), policies)
    entries = served(records)
    assert all(recorded_from_entry(e).exact for e in entries)
    replayed, tally = replay(entries)
    assert replayed == issued(records)
    assert (tally.windows, tally.differing, tally.inexact) == (40, [], 0)
    assert tally.replayed_changes == tally.issued_changes == sum(r.changed for r in records)


@pytest.mark.parametrize("seed", range(3))
async def test_a_replay_from_any_window_on_reproduces_the_rest(seed: int) -> None:
    """The first window of a range starts from the status and streak recorded before it."""
    records = await record(drifting(seed, 30, step_at=15), [(0, Policy(confirm=3))])
    entries = served(records)
    for first in range(len(records)):
        replayed, _ = replay(entries[first:])
        assert replayed == issued(records[first:]), f"from command {records[first].id}"


@pytest.mark.parametrize("seed", range(6))
async def test_a_stricter_policy_moves_less_and_still_follows_the_step(seed: int) -> None:
    records = await record(drifting(seed, 40, step_at=20), [(0, RULE)])
    replayed, tally = replay(served(records), PolicyOverride(min_effect=10.0, confirm=2))
    assert tally.issued_changes > tally.replayed_changes >= 1
    # The step (windows 20 and 21, 15 up each) moves the replayed status up at window 21 and
    # it stays up: the drift alone never gets past a minimum effect of 10.
    statuses = [status for status, *_ in replayed]
    assert statuses[21:] == ["up"] * 19
    assert replayed[21][1], "the status moved at the step"
    # ... and the windows where it differs from the rule's are counted, as id ranges.
    differs = [k for k, (status, *_) in enumerate(replayed) if status != records[k].status]
    assert tally.differing_windows == len(differs)


async def test_an_override_keeps_what_it_does_not_set() -> None:
    records = await record(drifting(1, 20), [(0, Policy(alpha=0.2, min_effect=2.0))])
    replayer = Replay(PolicyOverride(confirm=2))
    replayed = replayer.step(recorded_from_entry(served(records)[0]))
    assert replayed.policy == Policy(alpha=0.2, min_effect=2.0, confirm=2)


async def test_an_initial_status_starts_afresh() -> None:
    # Levels 0, 10, 20: with --confirm 2 the rise to 20 (window 2) changes the status.
    records = await record([window(level) for level in (0, 10, 20)], [(0, Policy(confirm=2))])
    assert [r.status for r in records] == ["down", "down", "up"]
    assert records[1].streak == Streak("up", 1)
    last = served(records)[2:]
    # From the recorded state: the streak of one before window 2 is known, so it confirms.
    assert [s for s, *_ in replay(last)[0]] == ["up"]
    # From "down" and no streak: the rise to 20 is the first of a streak, unconfirmed.
    replayed, tally = replay(last, initial_status="down")
    assert [(s, outcome) for s, _, outcome, *_ in replayed] == [("down", "unconfirmed")]
    assert tally.differing == [(3, 3)]
    # From "up": nothing moves.
    assert [(s, changed) for s, changed, *_ in replay(last, initial_status="up")[0]] == [
        ("up", False)
    ]


async def test_commands_missing_from_the_feed_are_refused() -> None:
    entries = served(await record(drifting(2, 5), [(0, RULE)]))
    replayer = Replay()
    replayer.step(recorded_from_entry(entries[0]))
    with pytest.raises(ValueError, match="command 3 does not follow command 1"):
        replayer.step(recorded_from_entry(entries[2]))


async def test_commands_recorded_before_revision_0006_replay_from_their_summaries() -> None:
    records = await record([window(level) for level in (0, 0, 10, 10)], [(0, RULE)])
    old = [
        dataclasses.replace(r, min_effect=None, confirm=None, streak=None, window_sums=None)
        for r in records
    ]
    recorded = [recorded_from_entry(e) for e in served(old)]
    first = recorded[2]
    assert not first.exact
    assert isinstance(first.window, WindowSummary)
    assert (first.policy, first.streak) == (RULE, None)
    replayed, tally = replay(served(old))
    assert [s for s, *_ in replayed] == [r.status for r in records]
    assert tally.inexact == 4


def test_a_first_entry_with_an_empty_previous_window_is_exact() -> None:
    recorded = RecordedDecision(
        1, 0, P, WindowStats(2, 3, 5), WindowSummary(0, 0.0, 0.0), "down", False, RULE
    )
    assert recorded.exact
    assert recorded.status_before == "down"
    assert dataclasses.replace(recorded, status="up", changed=True).status_before == "down"


@pytest.mark.parametrize(
    "override",
    [{"alpha": 0.0}, {"alpha": 1.0}, {"min_effect": -1.0}, {"min_effect": float("nan")},
     {"confirm": 0}],
)  # fmt: skip
def test_an_override_out_of_bounds_is_refused(override: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        PolicyOverride(**override)  # type: ignore[arg-type]


def test_the_tally_keeps_differing_windows_as_ranges() -> None:
    tally = ReplayTally()
    replayer = Replay(initial_status="up")
    for command_id in range(1, 8):
        # Too few readings: every replayed status stays up; the issued ones alternate in pairs.
        status = "down" if command_id in (2, 3, 4, 7) else "up"
        recorded = RecordedDecision(
            command_id, 0, P, WindowStats(1, 1, 1), WindowStats(1, 1, 1), status, False, RULE,
            NO_STREAK,
        )  # fmt: skip
        tally.add(replayer.step(recorded))
    assert tally.differing == [(2, 4), (7, 7)]
    assert tally.differing_windows == 4
