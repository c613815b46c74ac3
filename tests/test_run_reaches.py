"""A waiting window's polls read only the sensor runs that can hold it (issue 15).

The leader polls the runs' watermarks every 20 ms while a window waits. Each poll read every
run of the last minute: under a load that starts a run a stream (the benchmarks' flood, a
reconnect storm) that was thousands of rows, 50 times a second, in the decision loop's
event loop (4 % of the controller's samples in a 60-s profile of scenario b). Now a poll
asks the database for the holdable runs only, and every run is read once a decision.
On both backends: the database's prefilter must never change what holds a window.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from operator import attrgetter

import pytest

from controller.decision.loop import DecisionLoop
from controller.decision.rule import WindowStats
from controller.decision.watermarks import Holdable, RunReach, Watermarks
from controller.decision.windows import DecisionSchedule
from controller.storage.database import Database
from controller.storage.schema import run_marks, sensor_runs
from tests.databases import TestDatabase
from tests.test_decider import Commands, ManualClock

S = 1_000_000
P = 5 * S
GRACE = S // 2
IDLE = 2 * S
T0 = 1_800_000_000 * S  # window 360,000,000 starts here
run_id = attrgetter("run_id")


class Recording:
    """The database as the loop's ReachSource, counting the rows each read returned."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.polls: list[int] = []
        self.full_reads: list[int] = []

    async def run_reaches(self, holdable: Holdable | None = None) -> list[RunReach]:
        runs = await self.database.run_reaches(holdable)
        (self.full_reads if holdable is None else self.polls).append(len(runs))
        return runs


Mark = tuple[str, int, int]  # a node's run_marks row: (node, reached_us, heard_us)


async def store_runs(database: Database, runs: list[tuple[str, list[Mark]]]) -> None:
    """Runs ``(sensor_id, their nodes' marks)``, ids 1.. in order."""
    async with database.engine.begin() as conn:
        await conn.execute(
            sensor_runs.insert(),
            [
                {"id": run_id, "sensor_id": sensor_id, "boot_id": str(run_id)}
                for run_id, (sensor_id, _) in enumerate(runs, 1)
            ],
        )
        await conn.execute(
            run_marks.insert(),
            [
                {"run_id": run_id, "node": node, "reached_us": reached, "heard_us": heard}
                for run_id, (_, marks) in enumerate(runs, 1)
                for node, reached, heard in marks
            ],
        )


def deciding_loop(
    clock: ManualClock,
    commands: Commands,
    reaches: Recording,
    sleep: Callable[[float], Awaitable[None]],
) -> DecisionLoop:
    """A leader's loop about to decide the window starting at T0, polling ``reaches``."""
    return DecisionLoop(
        schedule=DecisionSchedule(P, GRACE, (T0 // P) - 1),
        alpha=0.05,
        status="down",
        previous=WindowStats(),
        next_id=1,
        closer=commands,
        sender=commands,
        clock=clock,
        sleep=sleep,
        reaches=reaches,
        idle_us=IDLE,
    )


async def test_a_poll_reads_only_the_runs_that_can_hold_the_window(
    database: TestDatabase,
) -> None:
    # 2,000 runs that ended before the window did and were last heard more than the idle
    # time ago (a stream each, a load generator's), and one live run not past the end yet.
    end = T0 + P
    ended = [(f"gen-{i % 16}", [("n1", end - 3 * S - i, end - 3 * S - i)]) for i in range(2_000)]
    db = await Database.open(database.url)
    try:
        await store_runs(db, [*ended, ("live", [("n1", end - 40_000, end - 30_000)])])
        clock = ManualClock(end - 10 * S)  # the term began before: no run is from before it
        commands, reaches = Commands(), Recording(db)
        polls_to_pass = 5

        async def sleep(seconds: float) -> None:
            await clock.sleep(seconds)
            if len(reaches.polls) == polls_to_pass:  # the live run passes the end
                await store_marks(db, run_id=len(ended) + 1, reached=end + 10, heard=clock())

        loop = deciding_loop(clock, commands, reaches, sleep)
        clock.now_us = end
        await loop.decide_window(T0 // P)
    finally:
        await db.close()

    # Waited for the live run (not the deadline), polling it alone; every run read once.
    assert reaches.polls == [1] * polls_to_pass + [0]
    assert reaches.full_reads == [len(ended) + 1]
    assert commands.sent[0].issued_at < end + GRACE


async def store_marks(database: Database, *, run_id: int, reached: int, heard: int) -> None:
    async with database.engine.begin() as conn:
        await conn.execute(
            run_marks.update()
            .where(run_marks.c.run_id == run_id)
            .values(reached_us=reached, heard_us=heard)
        )


# Every instant of the next test on a grid of a quarter second, so heard times fall exactly
# on now - idle and on the term's start, reaches exactly on the window's end, and lags
# exactly on the bound plus a period.
Q = S // 4
LAGS = (0, Q, GRACE + P, GRACE + P + 1, 2 * S, 6 * S)


def population(rng: random.Random, end: int) -> list[tuple[str, list[Mark]]]:
    """Runs around a window's end: live, ended, idle, behind, some stored by two nodes, and
    sensors with several runs (restarted)."""
    runs = []
    for _ in range(300):
        marks = []
        for node in ("n1", "n2")[: rng.choice((1, 1, 2))]:
            heard = end + Q * rng.randrange(-48, 12)
            marks.append((node, heard - rng.choice(LAGS), heard))
        runs.append((f"s{rng.randrange(60)}", marks))
    return runs


async def test_the_prefilter_never_changes_which_runs_hold_a_window(
    database: TestDatabase,
) -> None:
    rng = random.Random(15)
    end = T0 + P
    db = await Database.open(database.url)
    try:
        await store_runs(db, population(rng, end))
        every = await db.run_reaches()
        assert len(every) > 250
        for _ in range(60):
            # Terms that began before the window, and after (a takeover's first windows).
            started = end + Q * rng.randrange(-80, 16)
            asked = max(started, end) + Q * rng.randrange(0, 12)
            watermarks = Watermarks(period_us=P, bound_us=GRACE, idle_us=IDLE, started_us=started)
            read = await db.run_reaches(watermarks.holdable(end, asked))
            # The loop judges with a time at or after the one it asked with.
            for now in (asked, asked + 1, asked + Q):
                assert sorted(watermarks.holding(read, end, now), key=run_id) == sorted(
                    watermarks.holding(every, end, now), key=run_id
                ), (started, asked, now)
    finally:
        await db.close()


@pytest.mark.parametrize("silent", [False, True], ids=["restarted only", "and one silent"])
async def test_after_a_restart_a_poll_reads_only_the_runs_from_before_it_still_waited_for(
    database: TestDatabase, silent: bool
) -> None:
    # The term began a second after the window ended (a restart). Sensor a's run from before
    # it is not waited for: a came back under a new run, already past the end. Sensor b's
    # run from before is waited for until the deadline: b may be in its reconnect backoff.
    end = T0 + P
    started = end + S
    runs: list[tuple[str, list[Mark]]] = [
        ("a", [("old", end - 3 * S, end - 3 * S)]),
        ("a", [("new", end + S + Q, end + S + 2 * Q)]),
    ]
    if silent:
        runs.append(("b", [("old", end - 3 * S, end - 3 * S)]))
    db = await Database.open(database.url)
    try:
        await store_runs(db, runs)
        clock, commands, reaches = ManualClock(started), Commands(), Recording(db)
        loop = deciding_loop(clock, commands, reaches, clock.sleep)
        await loop.decide_window(T0 // P)
    finally:
        await db.close()

    deadline = started + GRACE
    if silent:
        assert commands.sent[0].issued_at == deadline
        assert set(reaches.polls) == {1}  # b's run alone, not a's
    else:
        assert commands.sent[0].issued_at == started
        assert reaches.polls == [0]
    assert reaches.full_reads == [len(runs)]  # once, for the decision's report
