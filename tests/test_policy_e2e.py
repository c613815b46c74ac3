"""End to end with the guards on: every decision recomputed independently from the readings.

A manipulator, a controller with ``--min-effect`` and ``--confirm`` and three sensors run as
real processes on loopback (SQLite). The sensors send small noise around 100 with a step to
200 in the middle of one window. ``--alpha 0.5`` makes the noise "significant" in about half
of the windows, so the rule alone would flap all run long; the guards hold most of it back
(``below_min_effect``), the noise now and then gets past the minimum effect against the status
(``unconfirmed``), and the step, which shows in two windows in a row, moves the status.

The audit never uses the controller's code: per command it SELECTs the readings of its window
and of the window decided before it, runs scipy's Welch test and numpy on the raw payloads,
and applies the policy as a plain loop written here. Status, outcome, change, difference,
interval and Hedges' g must all agree (the floats within 1e-9), and so must the exact sums,
the policy and the streak recorded, and what History serves.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from scipy import special
from scipy import stats as scipy_stats

from tests.databases import TestDatabase, sqlite_database
from tests.processes import Service, running, start_controller, start_manipulator, start_sensor
from workcell.timeconv import US_PER_SECOND, now_us
from workcell.v1 import command_pb2, history_pb2, history_pb2_grpc

PERIOD = 1.0
ALPHA = 0.5
MIN_EFFECT = 0.5  # about 1.9 standard errors of the difference at 300 readings a window
CONFIRM = 2
SENSORS = 3
RATE = 100
COUNT = 2000  # 20 s per sensor: about 20 windows of about 300 readings
REL = 1e-9


@dataclass
class Expected:
    """What the plain reimplementation says one command must hold."""

    status: str
    changed: bool
    outcome: str
    difference: float | None
    ci: tuple[float, float] | None
    g: float | None
    p: float | None
    streak: tuple[str | None, int]


def welch(current: list[int], previous: list[int]) -> tuple[float | None, ...]:
    """(p, difference, ci_low, ci_high, g) from the raw payloads; None where undefined."""
    if not current or not previous:
        return None, None, None, None, None
    a, b = np.asarray(current, dtype=np.float64), np.asarray(previous, dtype=np.float64)
    difference = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return None, difference, None, None, None
    if a.var() == 0 and b.var() == 0:
        return None, difference, None, None, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # one constant window: exact anyway
        result = scipy_stats.ttest_ind(a, b, equal_var=False)
        interval = result.confidence_interval(1 - ALPHA)
    m = a.size + b.size - 2
    pooled = math.sqrt(((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / m)
    j = special.poch((m - 1) / 2, 0.5) / math.sqrt(m / 2)
    return (
        float(result.pvalue),
        difference,
        float(interval.low),
        float(interval.high),
        (difference / pooled * j),
    )


def replay(
    windows: list[list[int]],
    *,
    min_effect: float = MIN_EFFECT,
    confirm: int = CONFIRM,
    status: str = "down",
    streak: tuple[str | None, int] = (None, 0),
    previous: list[int] | None = None,
) -> list[Expected]:
    """The policy, as a plain loop: from ``status`` and ``streak`` after the window of
    ``previous`` ("down", none, none: the start), each window against the one before."""
    run_direction, run_length = streak
    expected = []
    previous = [] if previous is None else previous
    for current in windows:
        p, difference, low, high, g = welch(current, previous)
        changed = False
        if p is None:
            outcome = "too_few_readings" if min(len(current), len(previous)) < 2 else "no_variance"
            run_direction, run_length = None, 0
        elif p >= ALPHA:
            outcome = "not_significant"
            run_direction, run_length = None, 0
        elif abs(difference) < min_effect:  # type: ignore[arg-type]
            outcome = "below_min_effect"
            run_direction, run_length = None, 0
        else:
            direction = "up" if difference > 0 else "down"  # type: ignore[operator]
            run_length = run_length + 1 if direction == run_direction else 1
            run_direction = direction
            if direction == status:
                outcome = "significant"
            elif run_length >= confirm:
                outcome, status, changed = "significant", direction, True
            else:
                outcome = "unconfirmed"
        ci = None if low is None or high is None else (low, high)
        expected.append(
            Expected(status, changed, outcome, difference, ci, g, p, (run_direction, run_length))
        )
        previous = current
    return expected


def close(got: float | None, want: float | None, scale: float | None = None) -> bool:
    if got is None or want is None:
        return got is None and want is None
    return math.isclose(got, want, rel_tol=REL, abs_tol=REL * (scale or 0.0))


def test_decisions_under_guards_recomputed_from_the_stored_readings_agree(tmp_path: Path) -> None:
    database = sqlite_database(tmp_path)
    manipulator = start_manipulator(tmp_path / "journal.jsonl")
    assert manipulator.port is not None
    controller = start_controller(
        database.url,
        "--period", str(PERIOD), "--grace", "1.0", "--alpha", str(ALPHA),
        "--min-effect", str(MIN_EFFECT), "--confirm", str(CONFIRM),
        manipulator_port=manipulator.port,
    )  # fmt: skip
    assert controller.port is not None
    # The step in the middle of a window about 8 s from now: that window and the next both
    # differ upwards from the one before them.
    period_us = round(PERIOD * US_PER_SECOND)
    step_us = (now_us() // period_us + 8) * period_us + period_us // 2
    sensors = [start_step_sensor(i, controller.port, step_us) for i in range(SENSORS)]
    with running(manipulator, controller, *sensors):
        for sensor in sensors:
            assert sensor.wait(90) == 0, sensor.output()
        wait_decided(database, last_window_end(database, period_us))
        served = history(controller.port)
        assert controller.stop() == 0, controller.output()
        assert manipulator.stop() == 0, manipulator.output()

    commands = database.fetch(
        "SELECT id, window_start, window_end, status, changed, outcome, p_value, difference, "
        "ci_low, ci_high, effect_size, alpha, min_effect, confirm, streak_direction, "
        "streak_length, window_count, window_total, window_total_sq FROM commands ORDER BY id"
    )
    readings = database.fetch("SELECT timestamp, payload FROM readings ORDER BY id")
    all_windows = [
        [int(p) for t, p in readings if start <= t < end] for (_, start, end, *_) in commands
    ]
    # A sensor the controller has not heard from yet cannot hold a window back: until the
    # last one's first reading arrived (its connection can take a while under load), a
    # window may be decided without it. Audited: from the first window that began after it,
    # whose counted readings are all stored ones, onwards.
    ((heard_all,),) = database.fetch(
        "SELECT MAX(first) FROM (SELECT MIN(received_at) AS first FROM readings GROUP BY run_id)"
    )
    first = next(i for i, c in enumerate(commands) if c[1] >= int(heard_all))
    (_, start, _, status, *_, streak_direction, streak_length, count, _, _) = commands[first]
    assert count == len(all_windows[first]), f"window {start}: {commands[first]}"
    commands, windows = commands[first + 1 :], all_windows[first + 1 :]
    expected = replay(
        windows,
        status=status,
        streak=(streak_direction, streak_length),
        previous=all_windows[first],
    )

    seen = set()
    for row, want, payloads in zip(commands, expected, windows, strict=True):
        (command_id, start, _, status, changed, outcome, p, difference, low, high, g,
         alpha, min_effect, confirm, streak_direction, streak_length, count, total,
         total_sq) = row  # fmt: skip
        where = f"command {command_id} (window {start}): {row} vs {want}"
        # Counted, not stale: every stored reading of the window is in its statistics.
        assert count == len(payloads), where
        assert (int(total), int(total_sq)) == (sum(payloads), sum(v * v for v in payloads)), where
        assert (status, bool(changed), outcome) == (want.status, want.changed, want.outcome), where
        assert (alpha, min_effect, confirm) == (ALPHA, MIN_EFFECT, CONFIRM), where
        assert (streak_direction, streak_length) == want.streak, where
        assert close(difference, want.difference), where
        if want.ci is None:
            assert (low, high) == (None, None), where
        else:
            scale = max(map(abs, want.ci))
            assert close(low, want.ci[0], scale), where
            assert close(high, want.ci[1], scale), where
        assert close(g, want.g), where
        assert (p is None) == (want.p is None), where
        if p is not None:
            assert p == pytest.approx(want.p, rel=1e-6, abs=1e-300), where
        seen.add(outcome)
        assert_served(served.get(command_id), row)

    rule = replay(all_windows, min_effect=0.0, confirm=1)
    print(
        f"GUARDED: {len(commands)} commands, outcomes "
        f"{ {o: sum(w.outcome == o for w in expected) for o in sorted(seen)} }, "
        f"{sum(w.changed for w in expected)} status changes; the plain rule on all the "
        f"windows: {sum(w.changed for w in rule)}"
    )
    # The run exercised the guards: held back by each, and moved by the step.
    assert {"below_min_effect", "unconfirmed", "significant"} <= seen, seen
    assert any(want.changed and want.status == "up" for want in expected), "the step was missed"


def start_step_sensor(number: int, controller_port: int, step_us: int) -> Service:
    flags = ["--count", str(COUNT), "--rate", str(RATE), "--seed", str(100 + number)]
    flags += ["--profile", "step", "--step-at", f"{step_us / US_PER_SECOND:.6f}"]
    return start_sensor(
        controller_port, *flags, sensor_id=f"guarded-{number}", name=f"sensor-{number}"
    )


def last_window_end(database: TestDatabase, period_us: int) -> int:
    ((latest,),) = database.fetch("SELECT MAX(timestamp) FROM readings")
    return (int(latest) // period_us + 1) * period_us


def wait_decided(database: TestDatabase, window_end_us: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ((decided,),) = database.fetch("SELECT MAX(window_end) FROM commands")
        if decided is not None and int(decided) >= window_end_us:
            return
        time.sleep(0.2)
    raise AssertionError(f"the window ending at {window_end_us} µs was not decided in time")


def history(port: int) -> dict[int, history_pb2.HistoryEntry]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = history_pb2_grpc.HistoryStub(channel).Query(
            history_pb2.QueryRequest(page_size=1000), timeout=10
        )
    return {entry.command_id: entry for entry in reply.entries}


def assert_served(entry: history_pb2.HistoryEntry | None, row: tuple[object, ...]) -> None:
    """History serves the stored values as they are (or had not the command yet)."""
    if entry is None:
        return  # decided after History was read
    (_, _, _, _, _, outcome, _, difference, low, high, g, alpha, min_effect, confirm,
     streak_direction, streak_length, _, total, total_sq) = row  # fmt: skip

    def field(name: str) -> object:
        return getattr(entry, name) if entry.HasField(name) else None

    assert (field("difference"), field("difference_ci_low")) == (difference, low)
    assert (field("difference_ci_high"), field("effect_size")) == (high, g)
    assert history_pb2.DecisionOutcome.Name(entry.outcome) == f"DECISION_OUTCOME_{outcome}".upper()
    assert (entry.policy.alpha, entry.policy.min_effect, entry.policy.confirm) == (
        alpha, min_effect, confirm,
    )  # fmt: skip
    direction = {None: command_pb2.STATUS_UNSPECIFIED, "up": command_pb2.STATUS_UP,
                 "down": command_pb2.STATUS_DOWN}[streak_direction]  # type: ignore[index]  # fmt: skip
    assert (entry.streak_status, entry.streak_length) == (direction, streak_length)
    assert (entry.window.total, entry.window.total_sq) == (total, total_sq)
