"""A controller that stalls (SIGSTOP) and one that restarts resume the same way (issue 9, item 7).

Real processes on loopback: a manipulator, a controller with ``--period 1`` and a sensor.
The controller is stopped with SIGSTOP for several periods and continued, then killed and
restarted after an outage of the same length. Both times the windows whose deadlines passed
meanwhile are skipped except the latest one, which is decided at once; then one window per
period again. What each command was issued for, when, and against which previous window is read
from the database afterwards. Runs on SQLite and on PostgreSQL (the ``database`` fixture).
"""

from __future__ import annotations

import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from controller.decision.windows import window_index
from tests.databases import TestDatabase
from tests.processes import Service
from tests.test_faults import cleanup, report, start_controller, start_manipulator, start_sensor
from workcell.timeconv import US_PER_SECOND, now_us

PERIOD = 1.0
PERIOD_US = round(PERIOD * US_PER_SECOND)
GRACE_US = 300_000  # start_controller's --grace 0.3
OUTAGE = 4.6  # seconds: several periods pass while the controller is stopped or down
DECISION = re.compile(r"decision: command (\d+) ")
SKIPPED = re.compile(r"skipped (\d+) windows")


@dataclass(frozen=True)
class Command:
    id: int
    window: int
    issued_at: int
    window_count: int
    window_mean: float
    previous_count: int
    previous_mean: float

    @property
    def deadline(self) -> int:
        return (self.window + 1) * PERIOD_US + GRACE_US


def commands_in(database: TestDatabase) -> list[Command]:
    rows = database.fetch(
        "SELECT id, window_start, issued_at, window_count, window_mean, previous_count, "
        "previous_mean FROM commands ORDER BY id"
    )
    return [
        Command(
            int(i), window_index(int(s), PERIOD_US), int(t), int(n), float(m), int(pn), float(pm)
        )
        for i, s, t, n, m, pn, pm in rows
    ]


def wait_decisions(service: Service, count: int, timeout: float = 30.0) -> None:
    """Block until ``service`` has logged ``count`` decisions in all."""
    deadline = time.monotonic() + timeout
    while len(DECISION.findall(service.output())) < count:
        assert service.process.poll() is None, service.output()
        assert time.monotonic() < deadline, f"fewer than {count} decisions:\n{service.output()}"
        time.sleep(0.1)


def assert_resumed_by_the_rule(
    commands: list[Command], stopped: int, resumed: int, skipped_logged: list[int]
) -> int:
    """The commands around an outage [stopped, resumed) follow the one rule; the windows skipped."""
    before = [c for c in commands if c.issued_at < stopped]
    after = [c for c in commands if c.issued_at >= resumed]
    assert before, "no command before the outage"
    assert len(after) >= 3, after
    assert len(before) + len(after) == len(commands), "a command issued during the outage"
    # No burst: the second after resuming holds at most two commands (the latest window due,
    # decided at once, and the next one at its deadline).
    assert len([c for c in after if c.issued_at < resumed + PERIOD_US]) <= 2, after
    last, first = before[-1], after[0]
    skipped = first.window - last.window - 1
    # Several deadlines passed meanwhile: all but the latest got no command, said in one line.
    assert skipped >= 2, (last, first)
    # One line per episode; a restart can take two when a deadline passes between restoring
    # the state and the loop's first step (the loop then applies the same rule once more).
    assert 1 <= len(skipped_logged) <= 2
    assert sum(skipped_logged) == skipped
    # The latest window due when it resumed is decided first (at once after a stall; after a
    # restart once the sensor is back with its backlog, within --grace of the restart) ...
    # (the restored process took over at some moment between ``resumed`` and that decision).
    latest_due = [window_index(t - GRACE_US, PERIOD_US) - 1 for t in (resumed, first.issued_at)]
    assert latest_due[0] <= first.window <= latest_due[1], (latest_due, first)
    # ... then one window per period, each decided after its end (once its data is complete,
    # issue 14, item 4: it used to be at its deadline) and before the next one's deadline.
    assert [c.window for c in after] == list(range(first.window, first.window + len(after)))
    for command in after:
        assert (command.window + 1) * PERIOD_US <= command.issued_at, command
    # (The first after a restart may wait up to --grace past the restart, for the backlog.)
    for command in after[1:]:
        assert command.issued_at < command.deadline + PERIOD_US, command
    # The first decision after the skip compares with the last window decided before it.
    assert (first.previous_count, first.previous_mean) == (last.window_count, last.window_mean)
    return skipped


def test_a_stall_and_a_restart_skip_the_missed_windows_alike(
    tmp_path: Path, database: TestDatabase
) -> None:
    services: list[Service] = []
    with cleanup(services):
        manipulator = start_manipulator(tmp_path)
        assert manipulator.port is not None
        controller = start_controller(database, manipulator.port, period=PERIOD)
        services += [manipulator, controller]
        port = controller.port
        assert port is not None
        sensor = start_sensor("stall-1", port)
        services.append(sensor)
        wait_decisions(controller, 3)

        # 1. Stalled: SIGSTOP for several periods, then SIGCONT.
        controller.signal(signal.SIGSTOP)
        stall = (now_us(), 0)
        time.sleep(OUTAGE)
        stall = (stall[0], now_us())
        controller.signal(signal.SIGCONT)
        decided = len(DECISION.findall(controller.output()))
        wait_decisions(controller, decided + 3)
        stalled_log = controller.output()

        # 2. Killed, down for as long, restarted on the same database and port.
        controller.signal(signal.SIGKILL)
        controller.wait(10)
        outage = (now_us(), 0)
        time.sleep(OUTAGE)
        outage = (outage[0], now_us())
        controller = start_controller(database, manipulator.port, port=port, period=PERIOD)
        services.append(controller)
        wait_decisions(controller, 3)

        assert sensor.stop() == 0, sensor.output()
        assert controller.stop() == 0, controller.output()
        assert manipulator.stop() == 0, manipulator.output()

    commands = commands_in(database)
    assert [c.id for c in commands] == list(range(1, len(commands) + 1))
    restart = [c for c in commands if c.issued_at >= outage[1]]
    stalled = assert_resumed_by_the_rule(
        [c for c in commands if c not in restart],
        *stall,
        [int(n) for n in SKIPPED.findall(stalled_log)],
    )
    restarted = assert_resumed_by_the_rule(
        commands, *outage, [int(n) for n in SKIPPED.findall(controller.output())]
    )
    report(
        "stall vs restart",
        period=PERIOD,
        outage_s=OUTAGE,
        skipped_after_stall=stalled,
        skipped_after_restart=restarted,
        commands=len(commands),
    )
