"""(b) and (c): saturation against their ceilings, on SQLite and on PostgreSQL; the soak's run.

Each repetition runs the controller, then its ceilings, in turn, so whatever else the
machine does falls on both; a target is judged on the ratio of the medians.

- (b) one reading per message: ceiling, the bare transport server under the same generators.
- (c) 100 readings per message: ceiling, raw inserts into the same schema (the faster of
  ``sqlite3`` executemany and multi-row INSERTs; on PostgreSQL the fastest of asyncpg's means,
  :mod:`benchmarks.postgres_storage`); the transport server is shown for information (SQLite).
- ``b-pg``, ``c-pg``: the same against a throwaway PostgreSQL server (a fresh database per
  run), PostgreSQL's CPU (its whole process tree) shown beside the controller's.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.cell import (
    GENERATORS,
    SENSORS,
    Settings,
    finish_profiler,
    generated_run,
    start_profiler,
    start_transport_server,
)
from benchmarks.children import Children, RssSampler
from benchmarks.generators import Load, acked, start_generators, stop_generators
from benchmarks.measure import Window, fresh_dir, measure
from benchmarks.postgres_server import PostgresServer, postgres
from benchmarks.postgres_storage import postgres_storage_ceiling
from benchmarks.repeats import combine
from benchmarks.report import Measured, ScenarioResult, Target, ratio, spread
from benchmarks.storage import MEANS, StorageCeiling, storage_ceiling

__all__ = ["ControllerRun", "controller_run", "saturation"]

# Issue 15's targets: (b) against the transport ceiling, (c) against the storage ceiling.
VS_TRANSPORT = 0.85
VS_STORAGE = 0.6

ONE_PER_MESSAGE = Load(1, 500)
HUNDRED_PER_MESSAGE = Load(100, 20)


@dataclass(frozen=True, slots=True)
class ControllerRun:
    """One controller run under flooding generators: its window, RSS samples, profile."""

    window: Window
    rss: list[tuple[float, int]]
    profile: Path | None

    @property
    def durable_per_s(self) -> float:
        """Durable readings per second over the window."""
        return self.window.count / self.window.seconds


def _ceiling_run(settings: Settings, name: str, load: Load) -> Window:
    with fresh_dir(settings.work_dir / name) as run_dir, Children(run_dir) as kids:
        server = start_transport_server(kids)
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


def controller_run(
    settings: Settings,
    name: str,
    load: Load,
    seconds: float,
    *,
    server: PostgresServer | None = None,
    profile: bool = False,
) -> ControllerRun:
    """The controller (on SQLite, or on a fresh database of ``server``) flooded by ``load``."""
    with generated_run(settings.work_dir / name, load.args(), server) as run:
        controller, database = run.controller, run.database
        time.sleep(settings.warmup_s)
        sampler = RssSampler(controller.pid)
        sampler.start()
        profiler = start_profiler(controller, run.run_dir, seconds) if profile else None
        try:
            window = measure({"controller": controller} | database.sampled, database.count, seconds)
        finally:
            rss = sampler.stop()
            recorded = finish_profiler(profiler)
        stop_generators(run.generators)
    return ControllerRun(window, rss, recorded)


def rss_spread(samples: list[tuple[float, int]]) -> float:
    """(max - min) / min of the RSS samples; 0 with none."""
    values = [rss for _, rss in samples if rss > 0]
    return (max(values) - min(values)) / min(values) if values else 0.0


@contextlib.contextmanager
def _server(postgresql: bool, log_dir: Path) -> Iterator[PostgresServer | None]:
    if not postgresql:
        yield None
        return
    with fresh_dir(log_dir) as logs, postgres(logs) as server:
        yield server


_TITLES = {
    "b": "(b) saturation, 1 reading/message",
    "c": "(c) saturation, 100 readings/message",
    "b-pg": "(b) on PostgreSQL: saturation, 1 reading/message",
    "c-pg": "(c) on PostgreSQL: saturation, 100 readings/message",
}


@dataclass(frozen=True, slots=True)
class _Repetition:
    """One repetition of a saturation scenario: the controller's run, then its ceilings'."""

    controller: ControllerRun
    bare: Window | None
    storage: dict[str, StorageCeiling] | None

    def rows(self, postgresql: bool) -> list[Measured]:
        rows = []
        if self.storage is not None:
            rows.extend(_storage_rows(self.storage, postgresql))
        if self.bare is not None:
            note = "informational" if self.storage is not None else "transport ceiling"
            rows.append(
                self.bare.measured("bare", "transport", label="transport server", note=note)
            )
        window = self.controller.window
        note = f"RSS spread {100 * rss_spread(self.controller.rss):.1f}%"
        rows.append(window.measured("controller", "controller", note=note))
        if postgresql:
            rows.append(_postgres_row(window))
        return rows


def saturation(settings: Settings, key: str) -> ScenarioResult:
    """(b), (c), ``b-pg`` or ``c-pg``: ``settings.repeat`` interleaved runs of each side."""
    postgresql = key.endswith("-pg")
    many = key.startswith("c")
    load = HUNDRED_PER_MESSAGE if many else ONE_PER_MESSAGE
    result = ScenarioResult(key, _TITLES[key])
    backend = "PostgreSQL" if postgresql else "SQLite"
    repetitions = []
    with _server(postgresql, settings.work_dir / f"{key}-postgres") as server:
        for n in range(settings.repeat):
            # The project first, then its ceilings: interleaved, run after run.
            controller = controller_run(
                settings,
                f"{key}-controller-{n}",
                load,
                settings.saturation_s,
                server=server,
                profile=settings.profile and n == 0,
            )
            # The transport ceiling of (b); shown beside (c) on SQLite for information.
            bare = None if many and postgresql else _ceiling_run(settings, f"{key}-bare-{n}", load)
            storage = _storage_ceilings(settings, key, n, server) if many else None
            repetitions.append(_Repetition(controller, bare, storage))
    result.rows.extend(combine([rep.rows(postgresql) for rep in repetitions]))
    controllers = [rep.controller for rep in repetitions]
    durable = spread([run.durable_per_s for run in controllers]).median
    if many:
        storages = [rep.storage for rep in repetitions if rep.storage is not None]
        means = {
            name: spread([storage[name].rows_per_second for storage in storages]).median
            for name in storages[0]
        }
        fastest = max(means, key=lambda name: means[name])
        ceiling = means[fastest]
        what = f"asyncpg {fastest}" if postgresql else f"sqlite3 {fastest}, 1000/txn"
        r = ratio(durable, ceiling)
        result.targets.append(
            Target(
                key,
                f"durable readings/s >= {VS_STORAGE} x storage ceiling ({backend})",
                f"{durable:,.0f} vs {ceiling:,.0f}/s (raw {what})",
                r,
                r >= VS_STORAGE,
            )
        )
    else:
        bares = [rep.bare for rep in repetitions if rep.bare is not None]
        ceiling = spread([w.count / w.seconds for w in bares]).median
        r = ratio(durable, ceiling)
        result.targets.append(
            Target(
                key,
                f"durable readings/s >= {VS_TRANSPORT} x transport ceiling ({backend})",
                f"{durable:,.0f} vs {ceiling:,.0f}/s",
                r,
                r >= VS_TRANSPORT,
            )
        )
    # A leak shows in any run: the worst one is judged, not the median.
    worst = max(rss_spread(run.rss) for run in controllers)
    result.targets.append(
        Target(
            key,
            "memory: controller RSS flat (+-10%), worst run",
            f"spread {100 * worst:.1f}% over {controllers[0].window.seconds:.0f}s",
            worst,
            worst <= 0.10,
        )
    )
    first_profile = controllers[0].profile
    result.values = {
        "durable_per_s": [run.durable_per_s for run in controllers],
        "durable_median": durable,
        "ceiling_median": ceiling,
        "rss_kib": [[rss for _, rss in run.rss] for run in controllers],
        "profile": str(first_profile) if first_profile else None,
    }
    return result


def _storage_ceilings(
    settings: Settings, key: str, n: int, server: PostgresServer | None
) -> dict[str, StorageCeiling]:
    if server is not None:
        return postgres_storage_ceiling(server, settings.storage_s)
    ceilings: dict[str, StorageCeiling] = {}
    for means in MEANS:
        with fresh_dir(settings.work_dir / f"{key}-storage-{means}-{n}") as run_dir:
            ceilings[means] = storage_ceiling(
                run_dir / "storage.db", settings.storage_s, means=means
            )
    return ceilings


def _storage_rows(ceilings: dict[str, StorageCeiling], postgresql: bool) -> list[Measured]:
    if not postgresql:
        return [
            Measured(
                "raw sqlite3",
                f"{name}, 1000/txn, WAL",
                readings_per_s=ceiling.rows_per_second,
                note="storage ceiling: the faster",
            )
            for name, ceiling in ceilings.items()
        ]
    return [
        Measured(
            "raw asyncpg",
            name,
            readings_per_s=ceiling.rows_per_second,
            note="COPY: no ON CONFLICT" if name.startswith("copy") else "ON CONFLICT DO NOTHING",
        )
        for name, ceiling in ceilings.items()
    ]


def _postgres_row(window: Window) -> Measured:
    cpu = window.cpu("postgresql")
    return Measured(
        "controller",
        "PostgreSQL (all processes)",
        cpu_percent=100 * cpu / window.seconds,
        cpu_s_per_million=cpu / window.count * 1e6 if window.count else None,
    )
