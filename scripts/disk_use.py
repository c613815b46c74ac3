"""Disk use of the SQLite database at the default load (issue 5, "Bounded disk").

Run with ``.venv/bin/python scripts/disk_use.py [--hours 1] [--json PATH] [--dir DIR]``.

It writes simulated readings of 8 sensors at 300 readings/s each into a fresh SQLite file in a
temporary folder (under ``--dir`` if given; removed at the end), through the controller's own code:
``controller.storage.database.Database.open`` (migrations, WAL, ``synchronous=FULL``) and
``controller.storage.writer.Writer`` (group commits), 5,000 readings per ``add_readings``
call, with the sensors' real id shapes (``sensor-`` and a 12-hex-digit container hostname; a
32-hex-digit ``boot_id``), payloads from the sensors' ``regime`` profile, timestamps 1/300 s
apart per sensor, and one command every 5 s (``Writer.record_command``). Then:

1. **One span** (``--hours``, default 1): the span is written, the writer and the engine are
   closed, the WAL is checkpointed (``PRAGMA wal_checkpoint(TRUNCATE)`` on a plain ``sqlite3``
   connection) and the file is measured: the ``.db`` and ``-wal`` sizes, bytes per reading, and
   MiB (GiB) per hour and per day, i.e. what ``--retain-readings 24h`` (the default) keeps on disk.
2. **Steady state under retention**: a second span is written while
   ``controller.storage.retention.Retention.sweep()`` runs after every 1/60 of the span (every
   simulated minute at ``--hours 1``) with its clock at the simulated time and ``keep`` = one
   span, so the first span is deleted while the second is written. SQLite reuses the freed
   pages, so the file should stay near the one-span size instead of doubling: both sizes and
   their ratio are printed, with the total and the largest sweep time. Sweeps run between
   writes with no pause between their batches (``pause=0``): the controller's 0.05 s pause
   only spreads a sweep out in wall time, it does not change what is deleted or how the file
   grows.

It prints the report to stdout (progress bars on stderr) and, with ``--json PATH``, writes the
same numbers as JSON. The documented numbers come from a full simulated hour (the default; about
5-10 minutes on 2 cores, and about 2 GB free in the temporary folder). ``--hours 0.05`` is a quick
look.

Results (``--hours 1``, SQLite 3.40.1, 4 KiB pages; the sizes are the same on every run): one hour
is 8,640,000 readings in a 609,783,808-byte file, 70.6 bytes per reading (table 292 MiB, timestamp
index 161 MiB, unique (run_id, seq) index 128 MiB), so 581.5 MiB (0.57 GiB) per hour and about
13.6 GiB per day of the default 24 h retention. Under retention the file stayed at 1.051 times
the one-hour size (the rest is about one sweep interval of free pages); the 60 sweeps of 144,000
readings each took 48.6 s in all, at most 0.85 s each. Commands add about 128 KiB per hour and
are kept for ever. Before schema revision 0002 (sensor and boot ids in every reading and in the
unique index) the same hour took 177.9 bytes per reading, 1,466 MiB.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from controller.decision.rule import Outcome, WindowSummary
from controller.records import CommandRecord, ReadingRow, StreamTally
from controller.storage.database import Database
from controller.storage.retention import Retention
from controller.storage.writer import Writer
from sensor.profiles import Profile, make_profile
from workcell.flags import FlagParser, positive_float
from workcell.timeconv import US_PER_SECOND, to_iso

# ---------------------------------------------------------------------------------------------
# Configuration

SENSORS = 8
RATE = 300  # readings per second per sensor
PERIOD_US = 5 * US_PER_SECOND  # one command per decision period
GRACE_US = 500_000
ROWS_PER_CALL = 5_000
SWEEPS_PER_SPAN = 60  # every simulated minute at one hour
# 2027-01-15T08:00:00Z, a multiple of the period: window k starts at START_US + k·PERIOD_US.
START_US = 1_800_000_000 * US_PER_SECOND
# From a reading's creation to the controller's receive stamp: a typical loopback figure.
LATENCY_US = 1_200
SEED = 5
MIB = 2**20
GIB = 2**30


@dataclass(frozen=True, slots=True)
class DiskUseConfig:
    """What one measurement was asked for."""

    hours: float = 1.0
    json_path: Path | None = None
    parent: Path | None = None

    @property
    def ticks(self) -> int:
        """Readings per sensor in one span (one tick = 1/RATE s)."""
        return round(self.hours * 3600 * RATE)

    @property
    def span_us(self) -> int:
        """The span's simulated length."""
        return tick_us(self.ticks)


def parse_config(argv: Sequence[str] | None = None) -> DiskUseConfig:
    """Flags to a :class:`DiskUseConfig` (bad values exit 2 with one line naming the flag)."""
    parser = FlagParser(prog="disk_use", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.flag(
        "--hours",
        env=None,
        default=1.0,
        type=positive_float,
        help="simulated hours per span (the documented numbers use 1; 0.05 is a quick look)",
    )
    parser.flag(
        "--json",
        env=None,
        default=None,
        type=Path,
        dest="json_path",
        help="also write the results as JSON to this file",
    )
    parser.flag(
        "--dir",
        env=None,
        default=None,
        type=Path,
        dest="parent",
        help="make the temporary database folder here (default: the system temp folder)",
    )
    args = parser.parse_args(argv)
    config = DiskUseConfig(hours=args.hours, json_path=args.json_path, parent=args.parent)
    if config.ticks < SWEEPS_PER_SPAN:
        parser.error(f"argument --hours: {args.hours} is too short to measure (at least 0.0001)")
    return config


# ---------------------------------------------------------------------------------------------
# Pure parts: simulated readings and commands, results to text


def tick_us(tick: int) -> int:
    """Simulated microseconds from the start to reading number ``tick`` of each sensor."""
    return tick * US_PER_SECOND // RATE


@dataclass(slots=True)
class SimSensor:
    """One simulated sensor: the ids a real one sends, its phase, its payload signal."""

    sensor_id: str
    boot_id: str
    offset_us: int
    profile: Profile


def make_sensors(count: int = SENSORS, seed: int = SEED) -> list[SimSensor]:
    """Sensors with the real id shapes: ``sensor-<container hostname>`` and a uuid4 hex boot id.

    Their phases are spread over one tick: real sensors are not in step.
    """
    rng = random.Random(seed)
    return [
        SimSensor(
            sensor_id=f"sensor-{rng.getrandbits(48):012x}",
            boot_id=uuid.UUID(int=rng.getrandbits(128), version=4).hex,
            offset_us=index * tick_us(1) // count,
            profile=make_profile("regime", seed=seed + index, step_at_us=0),
        )
        for index in range(count)
    ]


def reading_rows(sensors: Sequence[SimSensor], first: int, stop: int) -> list[ReadingRow]:
    """Every sensor's readings of ticks ``first`` .. ``stop - 1``, interleaved in time order.

    Sequence numbers start at 1, as a sensor's do.
    """
    rows: list[ReadingRow] = []
    append = rows.append
    for tick in range(first, stop):
        base = START_US + tick_us(tick)
        for sensor in sensors:
            created = base + sensor.offset_us
            append(
                (
                    sensor.sensor_id,
                    sensor.boot_id,
                    tick + 1,
                    sensor.profile(created),
                    created,
                    created + LATENCY_US,
                )
            )
    return rows


def command_for_window(window: int, rng: random.Random) -> CommandRecord:
    """The command of window ``window`` (counted from the start), already acknowledged.

    Acknowledged at insert rather than by a later UPDATE: the row ends up the same size.
    """
    start = START_US + window * PERIOD_US
    count = SENSORS * RATE * PERIOD_US // US_PER_SECOND
    issued = start + PERIOD_US + GRACE_US
    return CommandRecord(
        id=window + 1,
        status="up" if rng.random() < 0.5 else "down",
        window_start=start,
        window_end=start + PERIOD_US,
        issued_at=issued,
        acknowledged_at=issued + 2_000,
        outcome=str(Outcome.NOT_SIGNIFICANT),
        changed=False,
        p_value=rng.random(),
        alpha=0.05,
        window=WindowSummary(count, rng.gauss(130, 20), rng.gauss(10, 0.5)),
        previous=WindowSummary(count, rng.gauss(130, 20), rng.gauss(10, 0.5)),
    )


@dataclass(slots=True)
class FileStats:
    """The database file after a span, checkpointed."""

    db_bytes: int = 0
    wal_bytes_after_checkpoint: int = 0
    wal_bytes_max: int = 0  # the largest -wal file seen while writing
    page_size: int = 0
    pages: int = 0
    freelist_pages: int = 0
    readings_stored: int = 0
    commands_stored: int = 0
    objects: dict[str, int] = field(default_factory=dict)  # bytes per table/index (dbstat)
    unused_bytes: int = 0  # free space inside used pages (dbstat)


@dataclass(slots=True)
class SpanResult:
    """One written span: its file, its write time, and (with retention) its sweeps."""

    file: FileStats
    readings_written: int = 0
    commands_written: int = 0
    write_seconds: float = 0.0
    sweeps: int = 0
    readings_deleted: int = 0
    sweep_seconds_total: float = 0.0
    sweep_seconds_max: float = 0.0


@dataclass(slots=True)
class DiskUse:
    """Everything measured, and the per-hour and per-day figures derived from it."""

    hours: float
    one_span: SpanResult
    steady: SpanResult
    wall_seconds: float = 0.0

    @property
    def readings_per_hour(self) -> int:
        """At the default load: 8 sensors at 300/s."""
        return SENSORS * RATE * 3600

    @property
    def bytes_per_reading(self) -> float:
        """The whole checkpointed file over the readings in it (commands and schema included)."""
        return self.one_span.file.db_bytes / self.one_span.readings_written

    @property
    def readings_bytes_per_reading(self) -> float:
        """The readings table and its two indexes only, over the readings."""
        readings_bytes = sum(
            size for name, size in self.one_span.file.objects.items() if "readings" in name
        )
        return readings_bytes / self.one_span.readings_written

    @property
    def mib_per_hour(self) -> float:
        """File growth per hour of the default load, in MiB."""
        return self.bytes_per_reading * self.readings_per_hour / MIB

    @property
    def steady_ratio(self) -> float:
        """The steady-state file over the one-span file (1.0: retention keeps it flat)."""
        return self.steady.file.db_bytes / self.one_span.file.db_bytes

    def as_json(self) -> dict[str, Any]:
        """The results as plain JSON values."""
        return {
            "hours": self.hours,
            "sensors": SENSORS,
            "rate_per_sensor": RATE,
            "readings": self.one_span.readings_written,
            "commands": self.one_span.commands_written,
            "one_span": asdict(self.one_span),
            "bytes_per_reading": self.bytes_per_reading,
            "readings_bytes_per_reading": self.readings_bytes_per_reading,
            "mib_per_hour": self.mib_per_hour,
            "gib_per_hour": self.mib_per_hour * MIB / GIB,
            "mib_per_day": self.mib_per_hour * 24,
            "gib_per_day": self.mib_per_hour * 24 * MIB / GIB,
            "steady": asdict(self.steady),
            "steady_ratio": self.steady_ratio,
            "wall_seconds": self.wall_seconds,
        }


def format_report(result: DiskUse) -> str:
    """The human-readable report."""
    one, steady = result.one_span, result.steady
    span = f"{result.hours:g} h"

    def objects(stats: FileStats) -> str:
        return ", ".join(
            f"{name} {size / MIB:,.1f}"
            for name, size in sorted(stats.objects.items(), key=lambda item: -item[1])
        )

    def rate(span_result: SpanResult) -> str:
        seconds = span_result.write_seconds
        return f"{span_result.readings_written / seconds:,.0f}/s" if seconds else "-"

    lines = [
        f"disk use: SQLite at {SENSORS} sensors x {RATE}/s, {span} per span "
        f"({one.readings_written:,} readings, {one.commands_written:,} commands)",
        "",
        f"one span ({span}, no retention), after wal_checkpoint(TRUNCATE):",
        f"  .db   {one.file.db_bytes:>15,} bytes  ({one.file.db_bytes / MIB:,.1f} MiB; "
        f"{one.file.pages:,} pages of {one.file.page_size}, {one.file.freelist_pages:,} free)",
        f"  -wal  {one.file.wal_bytes_after_checkpoint:>15,} bytes  (largest while writing: "
        f"{one.file.wal_bytes_max / MIB:,.1f} MiB)",
        f"  objects, MiB: {objects(one.file)}",
        f"  unused space inside pages: {one.file.unused_bytes / MIB:,.1f} MiB "
        f"({one.file.unused_bytes / max(one.file.db_bytes, 1):.0%} of the file)",
        f"  bytes per reading: {result.bytes_per_reading:,.1f} (whole file), "
        f"{result.readings_bytes_per_reading:,.1f} (readings table and its indexes)",
        f"  per hour at the default load: {result.mib_per_hour:,.1f} MiB "
        f"({result.mib_per_hour / 1024:,.2f} GiB)",
        f"  per day (--retain-readings 24h keeps this much): {result.mib_per_hour * 24:,.0f} MiB "
        f"({result.mib_per_hour * 24 / 1024:,.1f} GiB)",
        f"  written in {one.write_seconds:,.1f} s ({rate(one)})",
        "",
        f"steady state: a second {span} written with retention keeping {span}:",
        f"  .db   {steady.file.db_bytes:>15,} bytes  ({steady.file.db_bytes / MIB:,.1f} MiB; "
        f"{steady.file.freelist_pages:,} free pages)",
        f"  -wal  {steady.file.wal_bytes_after_checkpoint:>15,} bytes  (largest while writing: "
        f"{steady.file.wal_bytes_max / MIB:,.1f} MiB)",
        f"  readings kept {steady.file.readings_stored:,}, deleted {steady.readings_deleted:,}",
        f"  steady / one span: {result.steady_ratio:.3f}",
        f"  sweeps: {steady.sweeps}, {steady.sweep_seconds_total:,.1f} s in all, "
        f"largest {steady.sweep_seconds_max:,.2f} s",
        f"  written in {steady.write_seconds:,.1f} s ({rate(steady)}), sweeps excluded",
        "",
        f"wall time: {result.wall_seconds:,.0f} s",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The run: the controller's own database code on a temporary file


class SimulatedClock:
    """Retention's clock: the simulated time the writing has reached."""

    def __init__(self) -> None:
        self.now_us = START_US

    def __call__(self) -> int:
        return self.now_us


def wal_bytes(path: Path) -> int:
    """The size of the database's -wal file (0 when there is none)."""
    try:
        return os.stat(f"{path}-wal").st_size
    except FileNotFoundError:
        return 0


class SpanWriter:
    """Writes simulated spans through one Database and Writer, keeping the simulated time."""

    def __init__(self, path: Path, config: DiskUseConfig) -> None:
        self.path = path
        self.config = config
        self.sensors = make_sensors()
        self.clock = SimulatedClock()
        self.next_tick = 0
        self.next_window = 0
        self._command_rng = random.Random(SEED)

    async def write_span(self, *, retention: bool, desc: str) -> SpanResult:
        """Write one span of readings and commands; with ``retention``, sweep as it goes.

        The file is measured after the writer and the engine are closed.
        """
        config = self.config
        first = self.next_tick
        stop = first + config.ticks
        # Sweep points at 1/60 of the span; chunks never straddle one.
        sweep_at = {
            first + round(j * config.ticks / SWEEPS_PER_SPAN) for j in range(1, SWEEPS_PER_SPAN + 1)
        }
        result = SpanResult(file=FileStats())
        database = await Database.open(f"sqlite+aiosqlite:///{self.path}")
        writer = Writer(database.engine, backend=database.write_backend)
        sweeper = Retention(writer, config.span_us / US_PER_SECOND, clock=self.clock, pause=0.0)
        await writer.start()
        wal_max = 0
        try:
            with tqdm(
                total=(stop - first) * SENSORS,
                desc=desc,
                unit=" readings",
                unit_scale=True,
                file=sys.stderr,
                mininterval=1.0 if sys.stderr.isatty() else 15.0,
            ) as bar:
                tick = first
                while tick < stop:
                    end = min(
                        tick + ROWS_PER_CALL // SENSORS,
                        stop,
                        min((s for s in sweep_at if s > tick), default=stop),
                    )
                    rows = reading_rows(self.sensors, tick, end)
                    self.clock.now_us = START_US + tick_us(end)
                    started = time.perf_counter()
                    await self._store(writer, rows, result)
                    result.write_seconds += time.perf_counter() - started
                    result.readings_written += len(rows)
                    bar.update(len(rows))
                    wal_max = max(wal_max, wal_bytes(self.path))
                    tick = end
                    if retention and tick in sweep_at:
                        started = time.perf_counter()
                        result.readings_deleted += await sweeper.sweep()
                        seconds = time.perf_counter() - started
                        result.sweeps += 1
                        result.sweep_seconds_total += seconds
                        result.sweep_seconds_max = max(result.sweep_seconds_max, seconds)
                        wal_max = max(wal_max, wal_bytes(self.path))
        finally:
            await writer.close()
            await database.close()
        self.next_tick = stop
        result.file = measure(self.path)
        result.file.wal_bytes_max = wal_max
        return result

    async def _store(self, writer: Writer, rows: list[ReadingRow], result: SpanResult) -> None:
        """Commit ``rows`` and the commands that fell due, in the same group commit."""
        commands: list[asyncio.Task[None]] = []
        while START_US + (self.next_window + 1) * PERIOD_US <= self.clock.now_us:
            record = command_for_window(self.next_window, self._command_rng)
            commands.append(asyncio.create_task(writer.record_command(record)))
            self.next_window += 1
        # Let the commands queue their operations before the readings' group is committed.
        await asyncio.sleep(0)
        tally = StreamTally()
        await (await writer.add_readings(tally, rows))
        await asyncio.gather(*commands)
        if tally.failure is not None:
            raise tally.failure
        if tally.stored != len(rows):
            raise RuntimeError(f"stored {tally.stored} of {len(rows)} readings")
        result.commands_written += len(commands)


def measure(path: Path) -> FileStats:
    """Checkpoint the WAL into the file (TRUNCATE) and measure the file, its pages and objects."""
    stats = FileStats()
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        stats.page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        stats.pages = conn.execute("PRAGMA page_count").fetchone()[0]
        stats.freelist_pages = conn.execute("PRAGMA freelist_count").fetchone()[0]
        stats.readings_stored = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        stats.commands_stored = conn.execute("SELECT count(*) FROM commands").fetchone()[0]
        for name, size, unused in conn.execute(
            "SELECT name, sum(pgsize), sum(unused) FROM dbstat GROUP BY name"
        ):
            stats.objects[name] = int(size)
            stats.unused_bytes += int(unused)
        stats.wal_bytes_after_checkpoint = wal_bytes(path)
    stats.db_bytes = path.stat().st_size
    return stats


async def run(config: DiskUseConfig, folder: Path) -> DiskUse:
    """Both spans on ``folder``/workcell.db."""
    started = time.monotonic()
    spans = SpanWriter(folder / "workcell.db", config)
    one_span = await spans.write_span(retention=False, desc="span 1")
    _say(f"disk_use: span 1 written ({one_span.file.db_bytes / MIB:,.1f} MiB); span 2 ...")
    steady = await spans.write_span(retention=True, desc="span 2 + retention")
    span_end = START_US + tick_us(spans.next_tick)
    _say(f"disk_use: simulated {to_iso(START_US)} .. {to_iso(span_end)}")
    return DiskUse(config.hours, one_span, steady, wall_seconds=time.monotonic() - started)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print the report (and write the JSON); 0 on success."""
    config = parse_config(argv)
    if config.parent is not None:
        config.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="workcell-disk-use-", dir=config.parent))
    try:
        result = asyncio.run(run(config, folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(format_report(result), flush=True)
    if config.json_path is not None:
        config.json_path.parent.mkdir(parents=True, exist_ok=True)
        config.json_path.write_text(json.dumps(result.as_json(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
