"""The sensor's progress line and rate meter."""

from __future__ import annotations

import asyncio
import contextlib
import re

import pytest

from sensor.progress import Counters, ProgressReporter, RateMeter, progress_line

# What `workcell run` parses; keep in step with it.
LINE = re.compile(
    r"sensor (\S+): rate=(\d+\.\d)/s sent=(\d+) acked=(\d+) buffered=(\d+) dropped=(\d+)$"
)


def test_progress_line_format_is_stable() -> None:
    line = progress_line("s-1", 299.96, Counters(10, 9, 8, 2, 1))
    assert line == "sensor s-1: rate=300.0/s sent=9 acked=8 buffered=2 dropped=1"
    assert LINE.fullmatch(line)


def test_the_line_tells_stale_readings_once_there_are_any() -> None:
    # Readings the controller stored too late to count: the sensor's own line says so.
    line = progress_line("s-1", 300.0, Counters(10, 9, 8, 2, 1, stale=7))
    assert line == "sensor s-1: rate=300.0/s sent=9 acked=8 buffered=2 dropped=1 stale=7"
    # What `workcell run` parses is unchanged (its pattern is not anchored at the end).
    assert re.match(LINE.pattern.removesuffix("$"), line)


def test_the_line_tells_rejected_readings_once_there_are_any() -> None:
    line = progress_line("s-1", 300.0, Counters(10, 9, 5, 2, 1, stale=7, rejected=2))
    assert line == (
        "sensor s-1: rate=300.0/s sent=9 acked=5 buffered=2 dropped=1 rejected=2 stale=7"
    )
    assert re.match(LINE.pattern.removesuffix("$"), line)


def test_rate_meter_measures_each_interval() -> None:
    meter = RateMeter(0, 100.0)
    assert meter.sample(1500, 105.0) == pytest.approx(300.0)
    assert meter.sample(2000, 107.0) == pytest.approx(250.0)
    assert meter.sample(2000, 107.0) == 0.0


async def test_reporter_logs_lines_without_a_terminal(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="sensor.progress")
    created = 0
    now = 0.0

    def counters() -> Counters:
        return Counters(created, created, created - 1, 1, 0)

    reporter = ProgressReporter("s-2", counters, bar=False, log_interval=0.01, clock=lambda: now)
    task = asyncio.create_task(reporter.run())
    try:
        while len(caplog.records) < 3:
            created += 30
            now += 0.1
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    lines = [r.getMessage() for r in caplog.records]
    assert all(LINE.fullmatch(line) for line in lines), lines


@pytest.mark.parametrize("bar", [False, True])
async def test_reporter_keeps_the_rate_of_the_last_interval(bar: bool) -> None:
    # The progress line's rate, with or without the tqdm bar.
    created = 0
    now = 0.0

    def counters() -> Counters:
        return Counters(created, created, created, 0, 0)

    reporter = ProgressReporter(
        "s-3", counters, bar=bar, log_interval=1.0, bar_interval=0.001, clock=lambda: now
    )
    assert reporter.rate == 0.0
    task = asyncio.create_task(reporter.run())
    try:
        async with asyncio.timeout(10):
            while reporter.rate == 0.0:
                created += 30  # 30 readings per 0.1 s of the fake clock
                now += 0.1
                await asyncio.sleep(0.002)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert reporter.rate == pytest.approx(300.0, rel=0.15)
