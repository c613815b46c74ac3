"""Scenarios (a)-(e) of issue 4, (f) of issue 12 and the memory soak: run, measure, tear down.

Every run measures a window after a warm-up: CPU from ``/proc/<pid>/stat`` at both ends, the
durable count at both ends (rows in the controller's database, or readings acknowledged by
responses), peak RSS from ``VmHWM``. Everything runs on 127.0.0.1 for a bounded time, and
every process started is stopped on the way out whatever happens.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.children import Child, Children, RssSampler
from benchmarks.generators import Load, acked, start_generators, stop_generators
from benchmarks.history_pages import run_page_latency
from benchmarks.measure import Window, fresh_dir, measure
from benchmarks.nodes import node_saturation
from benchmarks.report import Measured, ScenarioResult, Target, ratio
from benchmarks.storage import storage_ceiling
from benchmarks.ticks import tick_cost

__all__ = ["Settings", "run_scenario"]

log = logging.getLogger(__name__)

SENSORS = 8
NOMINAL_RATE = 300.0
WARMUP_S = 4.0


@dataclass(frozen=True, slots=True)
class Settings:
    """How long each kind of run lasts, where files go, whether to profile."""

    work_dir: Path
    nominal_s: float = 60.0
    saturation_s: float = 60.0
    storage_s: float = 10.0
    soak_s: float = 300.0
    big: int = 1_000_000
    small: int = 1_000
    profile: bool = False
    warmup_s: float = WARMUP_S
    node_counts: tuple[int, ...] = (1, 2, 3)


def _db_rows(path: Path) -> Callable[[], int]:
    def count() -> int:
        # Rows are never deleted, so the largest rowid is the count, read in O(log n).
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            value = db.execute("SELECT max(rowid) FROM readings").fetchone()[0]
        return int(value or 0)

    return count


def _controller(kids: Children, run_dir: Path) -> tuple[Child, Path]:
    manipulator = kids.start(
        "manipulator",
        "manipulator",
        ["--listen", "127.0.0.1:0", "--journal", str(run_dir / "journal.jsonl")],
    )
    manipulator.wait_listening()
    database = run_dir / "controller.db"
    controller = kids.start(
        "controller",
        "controller",
        [
            "--listen",
            "127.0.0.1:0",
            "--manipulator",
            f"127.0.0.1:{manipulator.port}",
            "--database",
            f"sqlite+aiosqlite:///{database}",
        ],
    )
    controller.wait_listening()
    return controller, database


def _transport_server(kids: Children) -> Child:
    server = kids.start("transport", "benchmarks.transport_server", ["--listen", "127.0.0.1:0"])
    server.wait_listening()
    return server


# --- (a) nominal ---------------------------------------------------------------------------


def nominal(settings: Settings) -> ScenarioResult:
    """(a): 8 x 300/s against the bare server, the controller (real sensors), and HTTP."""
    result = ScenarioResult("a", "(a) nominal: 8 senders x 300 readings/s, one per message")
    seconds = settings.nominal_s
    paced = ["--rate", str(NOMINAL_RATE), "--stream-seconds", "1"]

    with fresh_dir(settings.work_dir / "a-bare") as run_dir, Children(run_dir) as kids:
        server = _transport_server(kids)
        senders = start_generators(kids, [server.port], processes=SENSORS, senders=1, extra=paced)
        time.sleep(settings.warmup_s)
        names = {"transport": server} | {f"sender-{i}": s for i, s in enumerate(senders)}
        bare = measure(names, acked(senders), seconds)
        stop_generators(senders)
    result.rows.append(
        bare.measured("bare", "transport", label="transport server", note="transport ceiling")
    )
    bare_sender_cpu = sum(bare.cpu(f"sender-{i}") for i in range(SENSORS)) / SENSORS
    result.rows.append(
        Measured(
            "bare",
            "paced sender (mean of 8)",
            cpu_percent=100 * bare_sender_cpu / bare.seconds,
            peak_rss_mib=max(bare.after[f"sender-{i}"].hwm_kib for i in range(SENSORS)) / 1024,
        )
    )

    with fresh_dir(settings.work_dir / "a-controller") as run_dir, Children(run_dir) as kids:
        controller, database = _controller(kids, run_dir)
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
        profiler = _start_profiler(controller, run_dir, seconds) if settings.profile else None
        try:
            real = measure(names, _db_rows(database), seconds)
        finally:
            profile = _finish_profiler(profiler)
        end_us = time.time_ns() // 1000
        for sensor in sensors:
            sensor.stop(timeout=20)
        per_sensor = _rates_by_sensor(database, start_us, end_us)
    result.rows.append(real.measured("controller", "controller"))
    sensor_cpu = sum(real.cpu(f"sensor-{i}") for i in range(SENSORS)) / SENSORS
    worst_rate = min(per_sensor.values(), default=0.0)
    result.rows.append(
        Measured(
            "controller",
            "sensor (mean of 8)",
            readings_per_s=sum(per_sensor.values()) / max(1, len(per_sensor)),
            cpu_percent=100 * sensor_cpu / real.seconds,
            peak_rss_mib=max(real.after[f"sensor-{i}"].hwm_kib for i in range(SENSORS)) / 1024,
            note=f"slowest sensor {worst_rate:.1f}/s",
        )
    )

    with fresh_dir(settings.work_dir / "a-http") as run_dir, Children(run_dir) as kids:
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
            seconds,
        )
        stop_generators(clients)
    result.rows.append(reference.measured("http+json", "http", label="FastAPI/uvicorn server"))
    result.rows.append(
        reference.measured("http+json", "client-0", label="aiohttp client (4 paced senders)")
    )

    controller_cpu = real.cpu("controller") / real.seconds
    bare_cpu = bare.cpu("transport") / bare.seconds
    cpu_ratio = ratio(controller_cpu, bare_cpu)
    result.targets.append(
        Target(
            "a",
            "controller CPU <= 1.25 x bare transport server",
            f"{100 * controller_cpu:.1f}% vs {100 * bare_cpu:.1f}% of a core",
            cpu_ratio,
            cpu_ratio <= 1.25,
        )
    )
    sensor_ratio = ratio(sensor_cpu, bare_sender_cpu)
    rate_ok = len(per_sensor) == SENSORS and worst_rate >= NOMINAL_RATE * 0.99
    result.targets.append(
        Target(
            "a",
            "each sensor CPU <= 1.25 x bare paced sender, rate within 1%",
            f"{100 * sensor_cpu / real.seconds:.1f}% vs "
            f"{100 * bare_sender_cpu / bare.seconds:.1f}%; slowest {worst_rate:.1f}/s",
            sensor_ratio,
            sensor_ratio <= 1.25 and rate_ok,
        )
    )
    ours = real.cpu("controller") / max(1, real.count)
    theirs = reference.cpu("http") / max(1, reference.count)
    http_ratio = ratio(ours, theirs)
    result.targets.append(
        Target(
            "a",
            "controller CPU/reading <= 0.5 x HTTP+JSON server's",
            f"{ours * 1e6:.1f} vs {theirs * 1e6:.1f} us/reading",
            http_ratio,
            http_ratio <= 0.5,
        )
    )
    result.values = {
        "per_sensor_rate": per_sensor,
        "window_s": real.seconds,
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


# --- (b), (c) saturation -------------------------------------------------------------------


# Two generator processes of four senders each: one process alone is bound by grpc.aio's
# per-message latency before either side runs out of CPU.
GENERATORS = 2


def _ceiling_run(settings: Settings, name: str, load: Load) -> Window:
    with fresh_dir(settings.work_dir / name) as run_dir, Children(run_dir) as kids:
        server = _transport_server(kids)
        generators = start_generators(
            kids,
            [server.port],
            processes=GENERATORS,
            senders=SENSORS // GENERATORS,
            extra=load.args(),
        )
        time.sleep(settings.warmup_s)
        window = measure({"transport": server}, acked(generators), settings.saturation_s)
        stop_generators(generators)
    return window


@dataclass(frozen=True, slots=True)
class _ControllerRun:
    window: Window
    rss: list[tuple[float, int]]
    profile: Path | None


def _controller_run(settings: Settings, name: str, load: Load, seconds: float) -> _ControllerRun:
    run_dir_path = settings.work_dir / name
    with fresh_dir(run_dir_path) as run_dir, Children(run_dir) as kids:
        controller, database = _controller(kids, run_dir)
        generators = start_generators(
            kids,
            [controller.port],
            processes=GENERATORS,
            senders=SENSORS // GENERATORS,
            extra=load.args(),
        )
        time.sleep(settings.warmup_s)
        sampler = RssSampler(controller.pid)
        sampler.start()
        profiler = _start_profiler(controller, run_dir, seconds) if settings.profile else None
        try:
            window = measure({"controller": controller}, _db_rows(database), seconds)
        finally:
            rss = sampler.stop()
            profile = _finish_profiler(profiler)
        stop_generators(generators)
    return _ControllerRun(window, rss, profile)


def _start_profiler(
    controller: Child, run_dir: Path, seconds: float
) -> tuple[subprocess.Popen[bytes], Path] | None:
    py_spy = str(Path(sys.executable).parent / "py-spy")
    output = run_dir / "profile.txt"
    try:
        process = subprocess.Popen(
            [
                py_spy,
                "record",
                "--pid",
                str(controller.pid),
                "--duration",
                str(int(seconds)),
                "--format",
                "raw",
                "--rate",
                "50",
                "--nonblocking",
                "--output",
                str(output),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except OSError as exc:
        log.warning("no profile: %s", exc)
        return None
    return process, output


def _finish_profiler(profiler: tuple[subprocess.Popen[bytes], Path] | None) -> Path | None:
    if profiler is None:
        return None
    process, output = profiler
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
    return output if output.exists() else None


def _rss_spread(samples: list[tuple[float, int]]) -> float:
    values = [rss for _, rss in samples if rss > 0]
    return (max(values) - min(values)) / min(values) if values else 0.0


def saturation(settings: Settings, key: str) -> ScenarioResult:
    """(b) one reading per message, or (c) 100 per message, as fast as the server takes them."""
    load = Load(1, 500) if key == "b" else Load(100, 20)
    title = (
        "(b) saturation, 1 reading/message"
        if key == "b"
        else "(c) saturation, 100 readings/message"
    )
    result = ScenarioResult(key, title)
    ceiling = _ceiling_run(settings, f"{key}-bare", load)
    result.rows.append(
        ceiling.measured(
            "bare",
            "transport",
            label="transport server",
            note="transport ceiling" if key == "b" else "informational",
        )
    )
    storage = None
    if key == "c":
        with fresh_dir(settings.work_dir / "c-storage") as run_dir:
            storage = storage_ceiling(run_dir / "storage.db", settings.storage_s)
        result.rows.append(
            Measured(
                "raw sqlite3",
                "executemany, 1000/txn, WAL",
                readings_per_s=storage.rows_per_second,
                note="storage ceiling",
            )
        )
    run = _controller_run(settings, f"{key}-controller", load, settings.saturation_s)
    spread = _rss_spread(run.rss)
    result.rows.append(
        run.window.measured("controller", "controller", note=f"RSS spread {100 * spread:.1f}%")
    )
    durable = run.window.count / run.window.seconds
    if key == "b":
        ceiling_rate = ceiling.count / ceiling.seconds
        r = ratio(durable, ceiling_rate)
        result.targets.append(
            Target(
                "b",
                "durable readings/s >= 0.8 x transport ceiling",
                f"{durable:,.0f} vs {ceiling_rate:,.0f}/s",
                r,
                r >= 0.8,
            )
        )
    else:
        assert storage is not None
        r = ratio(durable, storage.rows_per_second)
        result.targets.append(
            Target(
                "c",
                "durable readings/s >= 0.5 x storage ceiling",
                f"{durable:,.0f} vs {storage.rows_per_second:,.0f}/s",
                r,
                r >= 0.5,
            )
        )
    result.targets.append(
        Target(
            key,
            "memory: controller RSS flat (+-10%)",
            f"spread {100 * spread:.1f}% over {run.window.seconds:.0f}s",
            spread,
            spread <= 0.10,
        )
    )
    result.values = {
        "rss_kib": [rss for _, rss in run.rss],
        "profile": str(run.profile) if run.profile else None,
    }
    return result


def soak(settings: Settings) -> ScenarioResult:
    """(m) memory: the controller under (b)'s load for ``soak_s`` seconds, RSS every second."""
    result = ScenarioResult("m", f"(m) memory soak: saturation for {settings.soak_s:.0f} s")
    run = _controller_run(settings, "m-controller", Load(1, 500), settings.soak_s)
    spread = _rss_spread(run.rss)
    result.rows.append(run.window.measured("controller", "controller"))
    result.targets.append(
        Target(
            "m",
            "memory: controller RSS flat (+-10%) over a 5-minute saturation run",
            f"spread {100 * spread:.1f}% over {run.window.seconds:.0f}s",
            spread,
            spread <= 0.10,
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
    "c": lambda s: saturation(s, "c"),
    "d": decision_tick,
    "e": history_page,
    "f": lambda s: node_saturation(
        s.work_dir, node_counts=s.node_counts, seconds=s.saturation_s, warmup_s=s.warmup_s
    ),
    "m": soak,
}


def run_scenario(key: str, settings: Settings) -> ScenarioResult:
    """Run scenario ``key`` (one of a, b, c, d, e, f, m)."""
    return SCENARIOS[key](settings)
