"""Sensors/ListRuns: the per-run tallies a node keeps as its commit groups settle."""

from __future__ import annotations

import time
from pathlib import Path

from controller.records import ReadingRow
from controller.sensor_runs import LIVE_PERIODS, SensorRuns
from tests.controller_harness import make_reading, running_cell, stream
from tests.databases import TestDatabase
from workcell.timeconv import US_PER_SECOND, from_timestamp, now_us
from workcell.v1 import sensors_pb2, sensors_pb2_grpc

PERIOD = 5 * US_PER_SECOND
T0 = 1_700_000_000 * US_PER_SECOND  # a window start (a multiple of PERIOD)


def row(sensor: str, boot: str, seq: int, timestamp: int, received: int) -> ReadingRow:
    return (sensor, boot, seq, 7, timestamp, received)


def test_tallies_per_run_and_per_window() -> None:
    runs = SensorRuns(PERIOD)
    now = T0 + PERIOD + 1
    runs.add_stored(
        [row("a", "1", i, T0 + i, now) for i in range(3)]  # the last window
        + [row("a", "1", 10 + i, T0 + PERIOD + i, now) for i in range(2)]  # the current one
        + [row("b", "9", 0, T0 - PERIOD, now)]  # before both
    )
    runs.add_stale([row("b", "9", 0, T0 - PERIOD, now)])
    runs.add_duplicates([row("a", "1", 0, T0, now), row("c", "2", 0, T0, now)])
    a, b, c = runs.snapshot(now)
    assert (a.sensor_id, a.boot_id, a.stored, a.current_window, a.last_window) == (
        "a",
        "1",
        5,
        2,
        3,
    )
    assert (a.duplicates, a.stale, a.live) == (1, 0, True)
    assert a.last_reading_at == T0 + PERIOD + 1
    assert (b.stored, b.stale, b.current_window, b.last_window) == (1, 1, 0, 0)
    # A run seen only through resends (stored by another node) is listed too.
    assert (c.sensor_id, c.stored, c.duplicates) == ("c", 0, 1)
    # Live: a reading within the last two periods.
    later = now + LIVE_PERIODS * PERIOD + 1
    assert [s.live for s in runs.snapshot(later)] == [False, False, False]


def test_windows_kept_per_run_are_bounded_and_silent_runs_are_forgotten() -> None:
    runs = SensorRuns(PERIOD, forget_after_us=60 * US_PER_SECOND, max_runs=3)
    for k in range(10):
        runs.add_stored([row("a", "1", k, T0 + k * PERIOD, T0 + k * PERIOD)])
    [a] = runs.snapshot(T0 + 9 * PERIOD)
    assert (a.stored, a.current_window, a.last_window) == (10, 1, 1)
    for n in range(5):  # more runs than max_runs: the most silent go first
        runs.add_stored([row(f"s{n}", "1", 0, T0, T0 + 10 * PERIOD + n)])
    runs.forget_silent(T0 + 10 * PERIOD + 10)
    assert [s.sensor_id for s in runs.snapshot(T0 + 10 * PERIOD + 10)] == ["s2", "s3", "s4"]
    assert runs.snapshot(T0 + 10 * PERIOD + 61 * US_PER_SECOND) == []


def test_ten_thousand_sensors_are_tallied_and_listed() -> None:
    runs = SensorRuns(PERIOD)
    start = T0 + PERIOD
    groups = [
        [row(f"sensor-{s:05d}", "boot", i, start + i, start + i) for s in range(g, g + 50)]
        for i, g in enumerate(range(0, 10_000, 50))
    ]
    for group in groups:
        runs.add_stored(group)
    assert len(runs) == 10_000
    snapshot = runs.snapshot(start + 1000)
    assert len(snapshot) == 10_000
    assert sum(s.current_window for s in snapshot) == 10_000


async def test_list_runs_reports_what_this_node_stored(
    tmp_path: Path, database: TestDatabase
) -> None:
    async with running_cell(tmp_path, database_url=database.url, period=1.0) as cell:
        now = now_us()
        readings = [make_reading(i, 10 + i % 3, now - 1000 + i, sensor_id="s1") for i in range(5)]
        assert (await stream(cell, readings)).stored == 5
        assert (await stream(cell, readings[:2])).duplicates == 2  # resent: stored once
        await stream(cell, [make_reading(0, 1, now, sensor_id="s2", boot_id="b7")])
        stub = sensors_pb2_grpc.SensorsStub(cell.channel)
        answer = await stub.ListRuns(sensors_pb2.ListRunsRequest())
        assert answer.node == cell.controller.node
        assert answer.period.ToMicroseconds() == US_PER_SECOND
        s1, s2 = answer.runs
        assert (s1.sensor_id, s1.boot_id, s1.stored, s1.duplicates, s1.live) == (
            "s1", "b1", 5, 2, True,
        )  # fmt: skip
        window = from_timestamp(answer.current_window_start)
        in_current = sum(1 for r in readings if from_timestamp(r.timestamp) >= window)
        assert s1.current_window_readings + s1.last_window_readings == 5
        assert s1.current_window_readings == in_current
        assert (s2.sensor_id, s2.boot_id, s2.stored) == ("s2", "b7", 1)
        assert from_timestamp(s2.last_reading_at) == now
        assert abs(from_timestamp(s2.last_received_at) - time.time() * US_PER_SECOND) < 60e6
