"""(l): creation-to-commit latency at the nominal load and at 50 % and 80 % of saturation.

The saturation is measured here, with the same generators offering far more than the
controller takes (:data:`FLOOD_PER_SENDER` a sender): (b)'s saturation comes from fewer,
unpaced connections streaming 500 messages each, a load these paced one-stream-a-second
senders do not reach (at 80 % of (b)'s median they fell behind: p99 10 s). Each load is
offered by paced generators (:data:`GENERATORS` processes x 4 senders, one
reading a message, one stream a second each, as sensors send) stamping each reading with the
microsecond it is sent (``--exact-time``), to the controller on SQLite. The
:class:`~benchmarks.commit_probe.CommitProbe` sees each row committed; the window's readings
not seen within ``Settings.drain_s`` (3 s) after it count as late (slower than any seen).

What the figure includes: the generator's gRPC send, transport, the controller's parsing and
checks, the wait for the writer's next group, the group's write and commit. What it excludes:
the response to the sensor (it comes only at the stream's end). It overstates by at most one
probe period (5 ms plus a poll). The decision's grace is measured against the same span: a
reading counts in its window only if it is committed before the window is decided.

Each run also reads back its decisions (the controller's default 5 s period, so about
``latency_s / 5`` of them): the delay from each window's end to its command's issue. With the
watermarks (controller.decision.watermarks) a window is decided once every live sender's
committed readings passed its end: the target is 100 ms at the nominal load.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.cell import NOMINAL_RATE, SENSORS, Settings, generated_run
from benchmarks.commit_probe import CommitProbe
from benchmarks.generators import stop_generators
from benchmarks.latency import LatencySummary, summarize
from benchmarks.measure import measure
from benchmarks.repeats import interleave
from benchmarks.report import ScenarioResult, Spread, Target, spread
from controller.config import ControllerConfig

__all__ = [
    "DECISION_DELAY_TARGET_S",
    "DEFAULT_GRACE_S",
    "LATENCY_HEADERS",
    "commit_latency",
    "decision_delays",
]

FLOOD_PER_SENDER = 25_000.0
"""Readings a second each sender is asked for in the saturation run: more than any controller
here takes (8 senders, 200,000/s), so the durable rate is the controller's saturation."""
DEFAULT_GRACE_S = ControllerConfig().grace
"""The controller's default ``--grace``: p99 must stay below it up to 80 % of saturation."""
DECISION_DELAY_TARGET_S = 0.1
"""A decision in normal operation comes this soon after its window's end (issue 14)."""
LATENCY_HEADERS = (
    "load",
    "offered/s",
    "durable/s",
    "controller CPU %",
    "p50 ms",
    "p99 ms",
    "max ms",
    "received p99 ms",
    "late",
    "decision delay max ms",
)


@dataclass(frozen=True, slots=True)
class _LatencyRun:
    offered_per_s: float
    durable_per_s: float
    controller_cpu_percent: float
    summary: LatencySummary
    decision_delays_s: list[float]
    """From each window's end to its command's issue, for the windows ending in the run."""


def _latency_run(settings: Settings, name: str, rate: float, repetition: int) -> _LatencyRun:
    per_sender = rate / SENSORS
    paced = ["--rate", f"{per_sender:.3f}", "--stream-seconds", "1", "--exact-time"]
    with generated_run(settings.work_dir / f"l-{name}-{repetition}", paced) as run:
        controller, database = run.controller, run.database
        assert database.path is not None
        time.sleep(settings.warmup_s)
        probe = CommitProbe(database.path)
        start_us = probe.start()
        try:
            window = measure({"controller": controller}, database.count, settings.latency_s)
            end_us = time.time_ns() // 1000
            # The window's slowest readings commit after it: keep looking for them.
            time.sleep(settings.drain_s)
        finally:
            probe.stop()
        probed = probe.window(start_us, end_us)
        stop_generators(run.generators)
        delays = decision_delays(database.path, start_us, end_us)
    return _LatencyRun(
        offered_per_s=rate,
        durable_per_s=window.count / window.seconds,
        controller_cpu_percent=100 * window.cpu("controller") / window.seconds,
        summary=summarize(probed.committed_us, probed.received_us, probed.late),
        decision_delays_s=delays,
    )


def decision_delays(path: Path, start_us: int, end_us: int) -> list[float]:
    """Seconds from each window's end to its command's issue, for windows ending in the span."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute(
            "SELECT issued_at - window_end FROM commands WHERE window_end BETWEEN ? AND ?",
            (start_us, end_us),
        ).fetchall()
    return [int(delay) / 1e6 for (delay,) in rows]


def _ms(values: list[float | None]) -> Spread | None:
    # A percentile among the late readings is unknown: longer than the drain, shown as inf.
    present = [math.inf if value is None else value * 1e3 for value in values]
    return spread(present) if present else None


def commit_latency(settings: Settings) -> ScenarioResult:
    """(l): the latency table and the grace target, ``settings.repeat`` runs of each load."""
    result = ScenarioResult("l", "(l) creation-to-commit latency, 1 reading/message, SQLite")
    flood = _latency_run(settings, "saturation", SENSORS * FLOOD_PER_SENDER, 0)
    saturation = flood.durable_per_s
    source = "these generators flooding, measured here"
    if settings.saturation_rate is not None:
        source += f" ((b)'s median: {settings.saturation_rate:,.0f}/s)"
    loads = {
        "nominal 8 x 300/s": SENSORS * NOMINAL_RATE,
        "50% of saturation": 0.5 * saturation,
        "80% of saturation": 0.8 * saturation,
    }
    names = {"nominal 8 x 300/s": "nominal", "50% of saturation": "50", "80% of saturation": "80"}

    def step(label: str, rate: float) -> Callable[[int], _LatencyRun]:
        return lambda n: _latency_run(settings, names[label], rate, n)

    runs = interleave(settings.repeat, [step(label, rate) for label, rate in loads.items()])
    rows: list[tuple[object, ...]] = []
    for (label, rate), load_runs in zip(loads.items(), runs, strict=True):
        summaries = [run.summary for run in load_runs]
        rows.append(
            (
                label,
                rate,
                spread([run.durable_per_s for run in load_runs]),
                spread([run.controller_cpu_percent for run in load_runs]),
                _ms([s.p50_s for s in summaries]),
                _ms([s.p99_s for s in summaries]),
                _ms([s.max_s for s in summaries]),
                _ms([s.receive_p99_s for s in summaries]),
                sum(s.late for s in summaries),
                _ms([max(run.decision_delays_s, default=None) for run in load_runs]),
            )
        )
    result.extra = (LATENCY_HEADERS, rows)
    # "Up to 80 %": every load measured, the nominal one and 50 % included.
    medians = {}
    for label, load_runs in zip(loads, runs, strict=True):
        p99 = _ms([run.summary.p99_s for run in load_runs])
        medians[label] = math.inf if p99 is None else p99.median / 1e3
    worst = max(medians.values())
    result.targets.append(
        Target(
            "l",
            f"p99 creation-to-commit < default grace {DEFAULT_GRACE_S} s up to 80% of saturation",
            "p99 "
            + ", ".join(
                f"{medians[label] * 1e3:,.0f} ms at {rate:,.0f}/s" for label, rate in loads.items()
            )
            + f"; saturation {saturation:,.0f}/s: {source}",
            worst / DEFAULT_GRACE_S,
            worst < DEFAULT_GRACE_S,
        )
    )
    # Runs shorter than a period (--quick) may see no decision: then no figure.
    delays = [max(run.decision_delays_s) for run in runs[0] if run.decision_delays_s]
    if delays:
        delay = spread(delays).median
        result.targets.append(
            Target(
                "l",
                f"decision within {DECISION_DELAY_TARGET_S * 1e3:.0f} ms of its window's end "
                f"({next(iter(loads))})",
                f"the latest of each run's decisions: {delay * 1e3:,.0f} ms (median of runs)",
                delay / DECISION_DELAY_TARGET_S,
                delay <= DECISION_DELAY_TARGET_S,
            )
        )
    result.values = {
        "saturation_per_s": saturation,
        "saturation_source": source,
        "runs": {
            label: [
                {
                    "offered_per_s": run.offered_per_s,
                    "durable_per_s": run.durable_per_s,
                    "controller_cpu_percent": run.controller_cpu_percent,
                    "readings": run.summary.readings,
                    "late": run.summary.late,
                    "p50_s": run.summary.p50_s,
                    "p99_s": run.summary.p99_s,
                    "max_s": run.summary.max_s,
                    "receive_p99_s": run.summary.receive_p99_s,
                    "decision_delays_s": run.decision_delays_s,
                }
                for run in load_runs
            ]
            for label, load_runs in zip(loads, runs, strict=True)
        },
    }
    return result
