"""Each command's effect, policy, streak and exact window sums in the database (revision 0006).

On both backends: recorded through the writer and read back whole, taken as recorded when a
retry inserts it again, restored by a new leader, and upgraded from an older database.
"""

from __future__ import annotations

import dataclasses

import pytest
from alembic import command as alembic_command

from controller.decision.effect import NO_EFFECT, Effect
from controller.decision.policy import NO_STREAK, Streak
from controller.decision.restore import restore
from controller.decision.rule import WindowStats, WindowSummary
from controller.errors import RejectedWrite
from controller.records import CommandRecord
from controller.storage.database import Database
from controller.storage.migrate import alembic_config
from controller.storage.rows import command_values
from controller.storage.writer import Writer
from tests.databases import TestDatabase
from tests.test_migrations import database_at

P = 5_000_000
START = 1_800_000_000_000_000
INT64_MAX = 2**63 - 1
# Columns revision 0006 adds: an older database has none of them.
REVISION_0006 = (
    "difference", "ci_low", "ci_high", "effect_size", "min_effect", "confirm",
    "streak_direction", "streak_length", "window_total", "window_total_sq",
)  # fmt: skip


def guarded_command(command_id: int = 1) -> CommandRecord:
    # 6 readings near 2**63: a sum of squares of 130 bits, which no integer column holds.
    stats = WindowStats()
    stats.add_many([INT64_MAX - d for d in range(6)])
    return CommandRecord(
        id=command_id,
        status="down",
        window_start=START,
        window_end=START + P,
        issued_at=START + P + 500_000,
        outcome="unconfirmed",
        changed=False,
        p_value=1e-12,
        alpha=0.01,
        window=stats.summary(),
        previous=WindowSummary(6, 9.2e18, 1.5),
        epoch=3,
        effect=Effect(difference=-2.5, ci_low=-3.25, ci_high=-1.75, effect_size=-1.5),
        min_effect=2.0,
        confirm=3,
        streak=Streak("up", 2),
        window_sums=(int(stats.total), int(stats.total_sq)),
    )


async def record(database: TestDatabase, *records: CommandRecord) -> None:
    db = await Database.open(database.url)
    try:
        writer = Writer(db.engine, backend=db.write_backend)
        await writer.start()
        try:
            for one in records:
                await writer.record_command(one)
        finally:
            await writer.close()
    finally:
        await db.close()


async def stored(database: TestDatabase) -> tuple[int, CommandRecord | None]:
    db = await Database.open(database.url)
    try:
        return await db.decision_snapshot()
    finally:
        await db.close()


async def test_a_command_keeps_its_effect_policy_streak_and_exact_sums(
    database: TestDatabase,
) -> None:
    sent = guarded_command()
    await record(database, sent)

    _, last = await stored(database)

    assert last == sent
    assert last.window_sums is not None
    assert last.window_sums[1] > 2**127  # kept whole, as decimal text
    text = database.fetch("SELECT window_total, window_total_sq FROM commands")
    assert text == [(str(sent.window_sums[0]), str(sent.window_sums[1]))]  # type: ignore[index]


async def test_undefined_values_are_stored_as_null(database: TestDatabase) -> None:
    sent = CommandRecord(
        id=1,
        status="down",
        window_start=START,
        window_end=START + P,
        issued_at=START + P,
        outcome="too_few_readings",
        changed=False,
        p_value=None,
        alpha=0.05,
        window=WindowSummary(1, 4.0, 0.0),
        previous=WindowSummary(0, 0.0, 0.0),
        effect=NO_EFFECT,
        min_effect=0.0,
        confirm=1,
        streak=NO_STREAK,
        window_sums=(4, 16),
    )
    await record(database, sent)
    assert database.fetch(
        "SELECT difference, ci_low, ci_high, effect_size, streak_direction, streak_length "
        "FROM commands"
    ) == [(None, None, None, None, None, 0)]
    _, last = await stored(database)
    assert last == sent


async def test_recording_a_command_again_compares_every_new_column(
    database: TestDatabase,
) -> None:
    # A retry after an unknown commit outcome finds its own row: the same command is taken
    # as recorded; one that differs only in its streak is another command.
    sent = guarded_command(7)
    await record(database, sent, sent)
    other = dataclasses.replace(sent, streak=Streak("up", 1))
    with pytest.raises(RejectedWrite, match="command 7"):
        await record(database, other)


async def test_a_new_leader_resumes_the_streak_and_the_exact_window(
    database: TestDatabase,
) -> None:
    sent = guarded_command()
    await record(database, sent)
    decided_until, last = await stored(database)

    state = restore(
        last,
        decided_until=decided_until or sent.window_end,
        now_us=sent.window_end + 100_000,
        period_us=P,
        grace_us=500_000,
        initial_status="up",
    )

    assert state.streak == Streak("up", 2)
    assert (state.previous.total, state.previous.total_sq) == sent.window_sums
    assert state.previous.count == 6


async def test_commands_of_an_older_database_have_none_of_it(
    database: TestDatabase,
) -> None:
    await database_at(database, "0005")
    values = command_values(guarded_command())
    for column in REVISION_0006:
        del values[column]
    values["outcome"] = "significant"
    database.execute(
        f"INSERT INTO commands ({', '.join(values)}) VALUES ({', '.join(':' + k for k in values)})",
        **values,
    )

    _, last = await stored(database)  # opening migrates to the head

    assert last is not None
    assert (last.min_effect, last.confirm) == (None, None)  # not recorded
    assert last.effect == NO_EFFECT
    assert last.streak is None
    assert last.window_sums is None
    # A new leader rebuilds the previous window from the floats, as before revision 0006.
    state = restore(last, decided_until=last.window_end, now_us=last.window_end + 1,
                    period_us=P, grace_us=500_000, initial_status="up")  # fmt: skip
    assert state.streak == NO_STREAK
    assert state.previous.summary() == last.window


async def test_downgrading_to_0005_drops_the_columns_and_keeps_the_commands(
    database: TestDatabase,
) -> None:
    await record(database, guarded_command())
    db = await Database.open(database.url)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(
                lambda sync: alembic_command.downgrade(alembic_config(sync), "0005")
            )
    finally:
        await db.close()
    assert database.fetch("SELECT id, outcome FROM commands") == [(1, "unconfirmed")]
    _, last = await stored(database)  # and up again
    assert last is not None
    assert (last.min_effect, last.confirm, last.streak) == (None, None, None)
