"""Every scenario by key, and (a), (d), (e) and the memory soak: run, measure, tear down.

(b), (c) and their PostgreSQL runs are in :mod:`benchmarks.saturation`, (l) in
:mod:`benchmarks.latency_runs`, (f) in :mod:`benchmarks.nodes`. Every run measures a window
after a warm-up: CPU from ``/proc/<pid>/stat`` at both ends, the durable count at both ends
(rows in the controller's database, or readings acknowledged by responses), peak RSS from
``VmHWM``. Everything runs on 127.0.0.1 for a bounded time, and every process started is
stopped on the way out whatever happens.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.cell import (
    NOMINAL_RATE,
    SENSORS,
    Settings,
    finish_profiler,
    start_controller,
    start_profiler,
    start_transport_server,
    store,
)
from benchmarks.children import Children
from benchmarks.generators import acked, start_generators, stop_generators
from benchmarks.history_pages import run_page_latency
from benchmarks.latency_runs import commit_latency
from benchmarks.measure import fresh_dir, measure
from benchmarks.nodes import node_saturation
from benchmarks.repeats import combine, interleave
from benchmarks.report import Measured, ScenarioResult, Target, ratio, spread
from benchmarks.saturation import ONE_PER_MESSAGE, controller_run, rss_spread, saturation
from benchmarks.ticks import tick_cost

__all__ = ["SCENARIOS", "Settings", "run_scenario"]

# Issue 15's targets for (a): ratios of medians measured in the same run.
CONTROLLER_VS_BARE = 1.25
SENSOR_VS_BARE = 1.15
CONTROLLER_VS_HTTP = 0.7

log = logging.getLogger(__name__)


# --- (a) nominal ---------------------------------------------------------------------------
# Every side runs ``settings.repeat`` times, interleaved: controller, bare server, HTTP.


@dataclass(frozen=True, slots=True)
class _Nominal:
    """One run of one side of (a): its rows and the figures its targets need."""

    rows: list[Measured]
    cpu_s: float
    """CPU seconds per second of the server (controller, bare server or HTTP server)."""
    sender_cpu_s: float = 0.0
    """CPU seconds per second of one sender (mean of 8), for the two sides that have them."""
    per_reading_s: float = 0.0
    """CPU seconds of the server per durable or acknowledged reading."""
    per_sensor: dict[str, float] | None = None
    profile: Path | None = None


def _nominal_bare(settings: Settings, repetition: int) -> _Nominal:
    paced = ["--rate", str(NOMINAL_RATE), "--stream-seconds", "1"]
    with (
        fresh_dir(settings.work_dir / f"a-bare-{repetition}") as run_dir,
        Children(run_dir) as kids,
    ):
        server = start_transport_server(kids)
        senders = start_generators(kids, [server.port], processes=SENSORS, senders=1, extra=paced)
        time.sleep(settings.warmup_s)
        names = {"transport": server} | {f"sender-{i}": s for i, s in enumerate(senders)}
        bare = measure(names, acked(senders), settings.nominal_s)
        stop_generators(senders)
    sender_cpu = sum(bare.cpu(f"sender-{i}") for i in range(SENSORS)) / SENSORS
    rows = [
        bare.measured("bare", "transport", label="transport server", note="transport ceiling"),
        Measured(
            "bare",
            "paced sender (mean of 8)",
            cpu_percent=100 * sender_cpu / bare.seconds,
            peak_rss_mib=max(bare.after[f"sender-{i}"].hwm_kib for i in range(SENSORS)) / 1024,
        ),
    ]
    return _Nominal(rows, bare.cpu("transport") / bare.seconds, sender_cpu / bare.seconds)


def _nominal_controller(settings: Settings, repetition: int) -> _Nominal:
    seconds = settings.nominal_s
    run_dir_path = settings.work_dir / f"a-controller-{repetition}"
    with (
        fresh_dir(run_dir_path) as run_dir,
        Children(run_dir) as kids,
        store(run_dir, None) as database,
    ):
        assert database.path is not None
        controller = start_controller(kids, run_dir, database)
        sensors = [
            kids.start(
                f"sensor-{i}",
                "sensor",
                [
                    "--controller",
                    f"127.0.0.1:{controller.port}",
                    "--sensor-id",
                    f"sensor-{i}",
                    "--rate",
                    str(NOMINAL_RATE),
                    "--no-progress",
                ],
            )
            for i in range(SENSORS)
        ]
        for sensor in sensors:
            sensor.wait_for_line("starting")
        time.sleep(settings.warmup_s)
        names = {"controller": controller} | {f"sensor-{i}": s for i, s in enumerate(sensors)}
        start_us = time.time_ns() // 1000
        # One profile is enough: the first repetition's.
        wanted = settings.profile and repetition == 0
        profiler = start_profiler(controller, run_dir, seconds) if wanted else None
        try:
            real = measure(names, database.count, seconds)
        finally:
            profile = finish_profiler(profiler)
        end_us = time.time_ns() // 1000
        for sensor in sensors:
            sensor.stop(timeout=20)
        per_sensor = _rates_by_sensor(database.path, start_us, end_us)
    sensor_cpu = sum(real.cpu(f"sensor-{i}") for i in range(SENSORS)) / SENSORS
    worst_rate = min(per_sensor.values(), default=0.0)
    rows = [
        real.measured("controller", "controller"),
        Measured(
            "controller",
            "sensor (mean of 8)",
            readings_per_s=sum(per_sensor.values()) / max(1, len(per_sensor)),
            cpu_percent=100 * sensor_cpu / real.seconds,
            peak_rss_mib=max(real.after[f"sensor-{i}"].hwm_kib for i in range(SENSORS)) / 1024,
            note=f"slowest sensor {worst_rate:.1f}/s",
        ),
    ]
    return _Nominal(
        rows,
        real.cpu("controller") / real.seconds,
        sender_cpu_s=sensor_cpu / real.seconds,
        per_reading_s=real.cpu("controller") / max(1, real.count),
        per_sensor=per_sensor,
        profile=profile,
    )


def _nominal_http(settings: Settings, repetition: int) -> _Nominal:
    with (
        fresh_dir(settings.work_dir / f"a-http-{repetition}") as run_dir,
        Children(run_dir) as kids,
    ):
        http = kids.start("http", "benchmarks.http_reference", ["serve"])
        http.wait_listening()
        # Two client processes: one aiohttp process cannot keep 2,400 POST/s on schedule.
        clients = [
            kids.start(
                f"http-load-{index}",
                "benchmarks.http_reference",
                [
                    "load",
                    "--target",
                    f"127.0.0.1:{http.port}",
                    "--senders",
                    str(SENSORS // 2),
                    "--rate",
                    str(NOMINAL_RATE),
                ],
                pipes=True,
            )
            for index in range(2)
        ]
        time.sleep(settings.warmup_s)
        reference = measure(
            {"http": http, "client-0": clients[0], "client-1": clients[1]},
            acked(clients),
            settings.nominal_s,
        )
        stop_generators(clients)
    rows = [
        reference.measured("http+json", "http", label="FastAPI/uvicorn server"),
        reference.measured("http+json", "client-0", label="aiohttp client (4 paced senders)"),
    ]
    return _Nominal(
        rows,
        reference.cpu("http") / reference.seconds,
        per_reading_s=reference.cpu("http") / max(1, reference.count),
    )


def _median(values: list[float]) -> float:
    return spread(values).median


def nominal(settings: Settings) -> ScenarioResult:
    """(a): 8 x 300/s against the controller (real sensors), the bare server, and HTTP.

    ``settings.repeat`` times each, interleaved; targets on the ratios of the medians.
    """
    result = ScenarioResult("a", "(a) nominal: 8 senders x 300 readings/s, one per message")
    reals, bares, references = interleave(
        settings.repeat,
        [
            lambda n: _nominal_controller(settings, n),
            lambda n: _nominal_bare(settings, n),
            lambda n: _nominal_http(settings, n),
        ],
    )
    result.rows.extend(
        combine(
            [
                bare.rows + real.rows + reference.rows
                for bare, real, reference in zip(bares, reals, references, strict=True)
            ]
        )
    )
    controller_cpu = _median([run.cpu_s for run in reals])
    bare_cpu = _median([run.cpu_s for run in bares])
    cpu_ratio = ratio(controller_cpu, bare_cpu)
    result.targets.append(
        Target(
            "a",
            f"controller CPU <= {CONTROLLER_VS_BARE} x bare transport server",
            f"{100 * controller_cpu:.1f}% vs {100 * bare_cpu:.1f}% of a core",
            cpu_ratio,
            cpu_ratio <= CONTROLLER_VS_BARE,
        )
    )
    sensor_cpu = _median([run.sender_cpu_s for run in reals])
    bare_sender_cpu = _median([run.sender_cpu_s for run in bares])
    sensor_ratio = ratio(sensor_cpu, bare_sender_cpu)
    # Every sensor of every run kept its rate: the worst run decides.
    rates = [run.per_sensor or {} for run in reals]
    worst_rate = min((min(r.values(), default=0.0) for r in rates), default=0.0)
    rate_ok = all(len(r) == SENSORS for r in rates) and worst_rate >= NOMINAL_RATE * 0.99
    result.targets.append(
        Target(
            "a",
            f"each sensor CPU <= {SENSOR_VS_BARE} x bare paced sender, rate within 1%",
            f"{100 * sensor_cpu:.1f}% vs {100 * bare_sender_cpu:.1f}%; slowest {worst_rate:.1f}/s",
            sensor_ratio,
            sensor_ratio <= SENSOR_VS_BARE and rate_ok,
        )
    )
    ours = _median([run.per_reading_s for run in reals])
    theirs = _median([run.per_reading_s for run in references])
    http_ratio = ratio(ours, theirs)
    result.targets.append(
        Target(
            "a",
            f"controller CPU/reading <= {CONTROLLER_VS_HTTP} x HTTP+JSON server's",
            f"{ours * 1e6:.1f} vs {theirs * 1e6:.1f} us/reading",
            http_ratio,
            http_ratio <= CONTROLLER_VS_HTTP,
        )
    )
    profile = reals[0].profile if reals else None
    result.values = {
        "per_sensor_rate": [run.per_sensor for run in reals],
        "profile": str(profile) if profile else None,
    }
    return result


def _rates_by_sensor(database: Path, start_us: int, end_us: int) -> dict[str, float]:
    """Durable readings/s of each sensor, by creation time within the window."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        rows = db.execute(
            "SELECT sensor_id, count(*) "
            "FROM readings JOIN sensor_runs ON sensor_runs.id = readings.run_id "
            "WHERE timestamp >= ? AND timestamp < ? "
            "GROUP BY sensor_id",
            (start_us, end_us),
        ).fetchall()
    seconds = (end_us - start_us) / 1e6
    return {sensor: count / seconds for sensor, count in rows}


def soak(settings: Settings) -> ScenarioResult:
    """(m) memory: the controller under (b)'s load for ``soak_s`` seconds, RSS every second."""
    result = ScenarioResult("m", f"(m) memory soak: saturation for {settings.soak_s:.0f} s")
    run = controller_run(settings, "m-controller", ONE_PER_MESSAGE, settings.soak_s)
    rss = rss_spread(run.rss)
    result.rows.append(run.window.measured("controller", "controller"))
    result.targets.append(
        Target(
            "m",
            "memory: controller RSS flat (+-10%) over a 5-minute saturation run",
            f"spread {100 * rss:.1f}% over {run.window.seconds:.0f}s",
            rss,
            rss <= 0.10,
        )
    )
    result.values = {"rss_kib": [rss for _, rss in run.rss]}
    return result


# --- (d), (e) in process -------------------------------------------------------------------


def decision_tick(settings: Settings) -> ScenarioResult:
    """(d): tick time with a small and a large window."""
    result = ScenarioResult("d", "(d) decision tick (partial sums merged + decide)")
    small = tick_cost(settings.small)
    big = tick_cost(settings.big)
    for cost in (small, big):
        result.rows.append(
            Measured(
                f"{cost.readings:,} readings",
                "tick (in process)",
                note=f"median {cost.median_s * 1e3:.3f} ms, max {cost.max_s * 1e3:.3f} ms, "
                f"ingest {cost.ingest_s_per_reading * 1e9:.0f} ns/reading",
            )
        )
    growth = ratio(big.median_s, small.median_s)
    result.targets.append(
        Target(
            "d",
            "tick < 1 ms at 10^6 readings, independent of size",
            f"{big.median_s * 1e3:.3f} ms vs {small.median_s * 1e3:.3f} ms at {small.readings:,}",
            growth,
            big.median_s < 1e-3 and growth <= 2.0,
        )
    )
    result.values = {"small": small.median_s, "big": big.median_s}
    return result


def history_page(settings: Settings) -> ScenarioResult:
    """(e): page-of-100 latency with a small and a large commands table."""
    result = ScenarioResult("e", "(e) History/Query page of 100")
    latencies = []
    with fresh_dir(settings.work_dir / "e-history") as run_dir:
        for count in (settings.small, settings.big):
            latency = run_page_latency(run_dir / f"commands-{count}.db", count)
            latencies.append(latency)
            result.rows.append(
                Measured(
                    f"{count:,} commands",
                    "History servicer",
                    note=f"server median {latency.server_median_s * 1e3:.2f} ms "
                    f"p95 {latency.server_p95_s * 1e3:.2f} ms; gRPC round trip median "
                    f"{latency.roundtrip_median_s * 1e3:.2f} ms",
                )
            )
    small, big = latencies
    growth = ratio(big.server_median_s, small.server_median_s)
    result.targets.append(
        Target(
            "e",
            "page < 5 ms server-side at 10^6 commands, no growth",
            f"{big.server_median_s * 1e3:.2f} ms vs {small.server_median_s * 1e3:.2f} ms "
            f"at {small.commands:,}",
            growth,
            big.server_median_s < 5e-3 and growth <= 1.5,
        )
    )
    return result


SCENARIOS: dict[str, Callable[[Settings], ScenarioResult]] = {
    "a": nominal,
    "b": lambda s: saturation(s, "b"),
    "l": commit_latency,
    "c": lambda s: saturation(s, "c"),
    "b-pg": lambda s: saturation(s, "b-pg"),
    "c-pg": lambda s: saturation(s, "c-pg"),
    "d": decision_tick,
    "e": history_page,
    "f": lambda s: node_saturation(
        s.work_dir, node_counts=s.node_counts, seconds=s.saturation_s, warmup_s=s.warmup_s
    ),
    "m": soak,
}


def run_scenario(key: str, settings: Settings) -> ScenarioResult:
    """Run scenario ``key`` (a key of :data:`SCENARIOS`)."""
    return SCENARIOS[key](settings)
