"""A grace longer than the period loses nothing across a restart (issue 10, item 5).

Before: with ``--period 1 --grace 5``, SIGKILL and an immediate restart skipped every window
up to the current one minus two, although their deadlines (end + 5 s) had not come: they got no
command and about 1,200 stored readings were never counted. The restart now skips only windows
whose deadline passed while the controller was down (controller.decision.windows.due_windows): every
window not yet due at the restart gets its command, counting the readings stored before the
kill (read back from the database) and those resent after it.
"""

from __future__ import annotations

import signal
from pathlib import Path

from controller.decision.windows import window_index
from tests.databases import READINGS_WITH_RUNS, TestDatabase
from tests.processes import Service
from tests.test_faults import cleanup, report, start_controller, start_manipulator, start_sensor
from tests.test_stall import DECISION, wait_decisions
from workcell.timeconv import US_PER_SECOND, now_us

PERIOD = 1.0
GRACE = 5.0
PERIOD_US = round(PERIOD * US_PER_SECOND)
GRACE_US = round(GRACE * US_PER_SECOND)
# A reading received this long before its window's deadline is surely committed before it.
MARGIN_US = 1_000_000


def test_windows_not_yet_due_at_a_restart_are_still_decided(
    tmp_path: Path, database: TestDatabase
) -> None:
    services: list[Service] = []
    with cleanup(services):
        manipulator = start_manipulator(tmp_path)
        assert manipulator.port is not None
        controller = start_controller(database, manipulator.port, period=PERIOD, grace=GRACE)
        services += [manipulator, controller]
        port = controller.port
        assert port is not None
        sensor = start_sensor("grace-1", port)
        services.append(sensor)
        wait_decisions(controller, 2, timeout=40)

        controller.signal(signal.SIGKILL)
        controller.wait(10)
        killed = now_us()
        controller = start_controller(
            database, manipulator.port, port=port, period=PERIOD, grace=GRACE
        )
        services.append(controller)
        restarted = now_us()  # the state was restored before the controller listened
        wait_decisions(controller, 7, timeout=40)
        assert sensor.stop() == 0, sensor.output()
        assert controller.stop() == 0, controller.output()
        assert manipulator.stop() == 0, manipulator.output()
        decided_after = len(DECISION.findall(controller.output()))

    commands = database.fetch("SELECT id, window_start, window_count FROM commands ORDER BY id")
    windows = {window_index(int(start), PERIOD_US): int(count) for _, start, count in commands}
    [(first_reading,)] = database.fetch(f"SELECT min(timestamp) FROM {READINGS_WITH_RUNS}")
    first_window = max(min(windows), window_index(int(first_reading), PERIOD_US))
    last_window = max(windows)
    # Every window of the cell whose deadline had not come when the controller was back, and
    # that had begun before the kill, holds readings stored before it: each got its command
    # (windows decide as soon as their data is complete now, so the first controller's two
    # decisions come soon after its start: the windows before the sensor's first reading are
    # not the ones this is about)
    open_at_kill = [
        w
        for w in range(window_index(killed, PERIOD_US) - 6, window_index(killed, PERIOD_US) + 1)
        if (w + 1) * PERIOD_US + GRACE_US > restarted and first_window <= w <= last_window
    ]
    assert open_at_kill, (killed, restarted, sorted(windows))
    missing = [w for w in open_at_kill if w not in windows]
    assert not missing, f"windows {missing} got no command (decided: {sorted(windows)})"
    # ... counting every reading of it that arrived in time, and no more than were stored.
    for window in open_at_kill:
        start, deadline = window * PERIOD_US, (window + 1) * PERIOD_US + GRACE_US
        [(stored,)] = database.fetch(
            f"SELECT count(*) FROM {READINGS_WITH_RUNS} WHERE timestamp >= :start AND "
            "timestamp < :end",
            start=start,
            end=start + PERIOD_US,
        )
        [(in_time,)] = database.fetch(
            f"SELECT count(*) FROM {READINGS_WITH_RUNS} WHERE timestamp >= :start AND "
            "timestamp < :end AND received_at < :ready",
            start=start,
            end=start + PERIOD_US,
            ready=deadline - MARGIN_US,
        )
        assert int(in_time) <= windows[window] <= int(stored), (window, in_time, stored)
        assert int(stored) > 0, window
    report(
        "restart with grace > period",
        grace=GRACE,
        period=PERIOD,
        downtime_s=round((restarted - killed) / US_PER_SECOND, 2),
        windows_open_at_kill=len(open_at_kill),
        decided_after_restart=decided_after,
    )
