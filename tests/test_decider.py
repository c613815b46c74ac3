"""The decision loop driven by hand: an injected clock and sleep, no sockets, no database.

The closer and sender are the two seams of :class:`~controller.decision.loop.DecisionLoop`; here
they are plain lists, because what is under test is which windows get a command and when.
"""

from __future__ import annotations

import logging

import pytest

from controller.decision.loop import DecisionLoop
from controller.decision.rule import WindowStats
from controller.decision.windows import DecisionSchedule, window_index
from controller.errors import NotLeader, StorageError
from controller.metrics import ControllerMetrics
from controller.records import ClosedWindows, CloseWindows, CommandRecord

P = 1_000_000  # a 1-second period, in microseconds
GRACE = 200_000


class ManualClock:
    """A clock that moves only when the loop sleeps or the test says so."""

    def __init__(self, now_us: int) -> None:
        self.now_us = now_us

    def __call__(self) -> int:
        return self.now_us

    async def sleep(self, seconds: float) -> None:
        self.now_us += round(seconds * 1_000_000)


class Commands:
    """The database and the sender at once: window statistics, and every command in order."""

    def __init__(self) -> None:
        self.recorded: list[CommandRecord] = []
        self.sent: list[CommandRecord] = []
        self.windows: dict[int, WindowStats] = {}

    def add(self, timestamp_us: int, payload: int) -> None:
        self.windows.setdefault(window_index(timestamp_us, P), WindowStats()).add(payload)

    async def close_windows(self, close: CloseWindows) -> ClosedWindows:
        assert close.decide is not None
        stats = self.windows.get(window_index(close.window_start, P), WindowStats())
        record = close.decide(stats)
        self.recorded.append(record)
        return ClosedWindows(record, stats)

    def enqueue(self, record: CommandRecord) -> None:
        self.sent.append(record)


def make_loop(
    clock: ManualClock, commands: Commands, metrics: ControllerMetrics, *, last_decided: int
) -> DecisionLoop:
    return DecisionLoop(
        schedule=DecisionSchedule(P, GRACE, last_decided),
        alpha=0.05,
        status="down",
        previous=WindowStats(),
        next_id=1,
        closer=commands,
        sender=commands,
        clock=clock,
        sleep=clock.sleep,
        metrics=metrics,
    )


def windows_of(records: list[CommandRecord]) -> list[int]:
    return [window_index(r.window_start, P) for r in records]


async def test_on_time_every_window_gets_one_command() -> None:
    clock, commands, metrics = ManualClock(10 * P), Commands(), ControllerMetrics()
    loop = make_loop(clock, commands, metrics, last_decided=9)

    for _ in range(4):
        await loop.step()

    assert windows_of(commands.sent) == [10, 11, 12, 13]
    assert [r.id for r in commands.sent] == [1, 2, 3, 4]
    assert metrics.windows_skipped._value.get() == 0


async def test_a_stall_skips_the_windows_it_missed_and_decides_the_latest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, commands, metrics = ManualClock(10 * P), Commands(), ControllerMetrics()
    loop = make_loop(clock, commands, metrics, last_decided=9)
    for value in (1, 2, 3, 4):
        commands.add(10 * P + value, value)
    await loop.step()  # window 10, on time
    assert windows_of(commands.sent) == [10]

    # Stopped (SIGSTOP) just after deciding window 10; resumed 5.5 periods later, in window 16
    # after its grace: windows 11 to 15 passed their deadlines meanwhile.
    clock.now_us = 16 * P + GRACE + 300_000
    with caplog.at_level(logging.WARNING, logger="controller.decision.loop"):
        resumed = await loop.step()

    # No burst: only the latest due window is decided now, as after a restart.
    assert windows_of(resumed) == [15]
    assert metrics.windows_skipped._value.get() == 4
    skipped_lines = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped_lines) == 1
    assert "4 windows" in skipped_lines[0]
    assert "1970-01-01T00:00:11" in skipped_lines[0]  # windows [11 s, 15 s)
    assert "1970-01-01T00:00:15" in skipped_lines[0]
    # After the skip the next decision compares with the last window decided (window 10).
    assert resumed[0].previous.count == 4
    assert resumed[0].previous.mean == 2.5
    # Then the cadence goes on, one window per period.
    await loop.step()
    await loop.step()
    assert windows_of(commands.sent) == [10, 15, 16, 17]
    assert [r.id for r in commands.sent] == [1, 2, 3, 4]
    assert metrics.windows_skipped._value.get() == 4


async def test_issue_times_never_go_backwards_with_the_clock() -> None:
    # History orders commands by (issued_at, id) and counts a merged run by its
    # ids: that holds only if issue times follow the ids, whatever the clock does.
    clock, commands, metrics = ManualClock(10 * P), Commands(), ControllerMetrics()
    loop = make_loop(clock, commands, metrics, last_decided=9)
    await loop.step()
    first = commands.sent[-1].issued_at
    clock.now_us -= 3 * P // 4  # an NTP step back, within the period
    await loop.decide_window(11)
    assert commands.sent[-1].issued_at == first


async def test_after_a_restart_issue_times_continue_from_the_last_command() -> None:
    clock, commands = ManualClock(10 * P + GRACE), Commands()
    loop = DecisionLoop(
        schedule=DecisionSchedule(P, GRACE, 9),
        alpha=0.05,
        status="down",
        previous=WindowStats(),
        next_id=8,
        closer=commands,
        sender=commands,
        clock=clock,
        sleep=clock.sleep,
        last_issued_at=12 * P,  # the last command stored, issued by a clock ahead of this one
    )
    await loop.decide_window(10)
    assert commands.sent[-1].issued_at == 12 * P


class RefusingFor(Commands):
    """A recorder whose database refuses the first ``failures`` writes."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def close_windows(self, close: CloseWindows) -> ClosedWindows:
        if self.failures:
            self.failures -= 1
            raise StorageError("database write failed: database is locked")
        return await super().close_windows(close)


async def test_a_refused_recording_is_retried_and_the_cadence_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, metrics = ManualClock(10 * P), ControllerMetrics()
    commands = RefusingFor(failures=3)
    loop = make_loop(clock, commands, metrics, last_decided=9)
    with caplog.at_level(logging.WARNING, logger="controller.decision.loop"):
        await loop.step()
    # Recorded on the fourth try, then sent: never sent unrecorded.
    assert [r.id for r in commands.recorded] == [r.id for r in commands.sent] == [1]
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "command 1 not recorded yet"  # once for the episode, not per retry
    ]
    for _ in range(3):
        await loop.step()
    assert windows_of(commands.sent) == [10, 11, 12, 13]
    assert [r.id for r in commands.sent] == [1, 2, 3, 4]


class Deposing(Commands):
    """A database that says the term is over."""

    async def close_windows(self, close: CloseWindows) -> ClosedWindows:
        raise NotLeader(f"epoch {close.epoch} no longer leads")


async def test_a_term_the_database_ends_stops_the_loop_without_sending() -> None:
    clock, commands = ManualClock(10 * P), Deposing()
    loop = make_loop(clock, commands, ControllerMetrics(), last_decided=9)
    with pytest.raises(NotLeader):
        await loop.run()
    assert commands.sent == []
    assert loop.next_id == 1  # nothing was issued: the next leader issues id 1
