"""What the scenarios share: their settings, and starting the cell's processes for one run.

A controller run needs a manipulator, a controller on a database (an SQLite file in the run's
folder, or a fresh database on a throwaway PostgreSQL server) and a way to count its durable
rows; a ceiling run needs the bare transport server. The profiler (py-spy) is started and
reaped here too.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.children import Child, Children
from benchmarks.generators import start_generators
from benchmarks.measure import Sampled, fresh_dir
from benchmarks.postgres_server import PostgresServer

__all__ = [
    "GENERATORS",
    "NOMINAL_RATE",
    "SENSORS",
    "WARMUP_S",
    "Database",
    "GeneratedRun",
    "Settings",
    "finish_profiler",
    "generated_run",
    "sqlite_rows",
    "start_controller",
    "start_profiler",
    "start_transport_server",
    "store",
]

log = logging.getLogger(__name__)

SENSORS = 8
NOMINAL_RATE = 300.0
WARMUP_S = 4.0
# Two generator processes of four senders each: one process alone is bound by grpc.aio's
# per-message latency before either side runs out of CPU.
GENERATORS = 2


@dataclass(frozen=True, slots=True)
class Settings:
    """How long each kind of run lasts, how often, where files go, whether to profile."""

    work_dir: Path
    nominal_s: float = 60.0
    saturation_s: float = 60.0
    storage_s: float = 10.0
    soak_s: float = 300.0
    latency_s: float = 30.0
    drain_s: float = 3.0
    """(l): how long the probe keeps looking for a window's readings after the window."""
    big: int = 1_000_000
    small: int = 1_000
    profile: bool = False
    warmup_s: float = WARMUP_S
    node_counts: tuple[int, ...] = (1, 2, 3)
    repeat: int = 3
    """Runs of each timed scenario (each side), interleaved; figures are their medians."""
    saturation_rate: float | None = None
    """(l): durable readings/s at saturation, one per message, measured earlier in the run
    by (b); None: (l) measures it itself."""


@dataclass(frozen=True, slots=True)
class Database:
    """Where a controller run stores: its URL, how to count its rows, what else to sample."""

    url: str
    count: Callable[[], int]
    sampled: dict[str, Sampled] = field(default_factory=dict)
    path: Path | None = None
    """The SQLite file (None on PostgreSQL)."""


def sqlite_rows(path: Path) -> Callable[[], int]:
    """The durable count of an SQLite controller database."""

    def count() -> int:
        # Rows are never deleted, so the largest rowid is the count, read in O(log n).
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            value = db.execute("SELECT max(rowid) FROM readings").fetchone()[0]
        return int(value or 0)

    return count


@contextlib.contextmanager
def store(run_dir: Path, server: PostgresServer | None) -> Iterator[Database]:
    """An SQLite file in ``run_dir``, or a fresh database on ``server`` (dropped after)."""
    if server is None:
        path = run_dir / "controller.db"
        yield Database(f"sqlite+aiosqlite:///{path}", sqlite_rows(path), path=path)
        return
    with server.database() as name:
        # count(*), not max(id): ids are taken from the sequence before commit.
        yield Database(
            server.url(name), lambda: server.count(name, "readings"), {"postgresql": server}
        )


def start_controller(kids: Children, run_dir: Path, database: Database) -> Child:
    """A manipulator and a controller storing in ``database``, both listening."""
    manipulator = kids.start(
        "manipulator",
        "manipulator",
        ["--listen", "127.0.0.1:0", "--journal", str(run_dir / "journal.jsonl")],
    )
    manipulator.wait_listening()
    controller = kids.start(
        "controller",
        "controller",
        [
            "--listen",
            "127.0.0.1:0",
            "--manipulator",
            f"127.0.0.1:{manipulator.port}",
            "--database",
            database.url,
        ],
    )
    controller.wait_listening()
    return controller


def start_transport_server(kids: Children) -> Child:
    """The bare transport server (the transport ceiling), listening."""
    server = kids.start("transport", "benchmarks.transport_server", ["--listen", "127.0.0.1:0"])
    server.wait_listening()
    return server


def start_profiler(
    controller: Child, run_dir: Path, seconds: float
) -> tuple[subprocess.Popen[bytes], Path] | None:
    """py-spy recording ``controller`` for ``seconds``; None if it cannot start."""
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


def finish_profiler(profiler: tuple[subprocess.Popen[bytes], Path] | None) -> Path | None:
    """Wait for the profiler; its output file, if it wrote one."""
    if profiler is None:
        return None
    process, output = profiler
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
    return output if output.exists() else None


@dataclass(frozen=True, slots=True)
class GeneratedRun:
    """A controller run under load generators: its folder, database and processes."""

    run_dir: Path
    database: Database
    controller: Child
    generators: list[Child]


@contextlib.contextmanager
def generated_run(
    run_dir: Path, generator_args: Sequence[str], server: PostgresServer | None = None
) -> Iterator[GeneratedRun]:
    """A controller (on SQLite in a fresh ``run_dir``, or on a fresh database of ``server``)
    with GENERATORS load generators of SENSORS // GENERATORS senders each sending to it."""
    with (
        fresh_dir(run_dir) as run_dir,
        Children(run_dir) as kids,
        store(run_dir, server) as database,
    ):
        controller = start_controller(kids, run_dir, database)
        generators = start_generators(
            kids,
            [controller.port],
            processes=GENERATORS,
            senders=SENSORS // GENERATORS,
            extra=generator_args,
        )
        yield GeneratedRun(run_dir, database, controller, generators)
