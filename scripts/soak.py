"""Soak: run the whole cell as real processes for a while, then audit it (issue 3, "Soak").

Run with ``.venv/bin/python scripts/soak.py [--duration 10m] [--sensors 8] [--rate 300]
[--period 5] [--grace 0.5] [--data DIR] [--json PATH]`` (or ``make soak ARGS=...``).

It starts a manipulator, a controller and N sensors on loopback, samples every process's RSS
from ``/proc`` at the start, after the first minute and at the end, then stops the sensors
(SIGTERM: they deliver what they hold and log their final counters), waits until the last
windows are decided and acknowledged, stops the controller and the manipulator, and audits the
database and the journal independently of the services' code. The report ends with the targets
of the issue, each PASS or FAIL; the exit status is 0 only when every one passes.

The file has three parts: configuration, pure evaluation (results to targets and text, no I/O),
and the run itself (processes, SQLite, the journal).
"""

from __future__ import annotations

import itertools
import json
import math
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.children import Child, Children
from benchmarks.procstat import read_usage
from workcell.flags import (
    FlagParser,
    duration_seconds,
    non_negative_float,
    positive_float,
    positive_int,
)

# ---------------------------------------------------------------------------------------------
# Configuration

PROGRESS_SECONDS = 10.0
BASELINE_SECONDS = 60.0  # the controller's RSS growth is measured from here to the end
START_TIMEOUT = 60.0
SENSOR_STOP_TIMEOUT = 30.0
SERVER_STOP_TIMEOUT = 30.0
CADENCE_P99_LIMIT_MS = 50.0
RSS_GROWTH_LIMIT_PERCENT = 10.0


@dataclass(frozen=True, slots=True)
class SoakConfig:
    """What one soak run was asked for."""

    duration: float = 600.0
    sensors: int = 8
    rate: float = 300.0
    period: float = 5.0
    grace: float = 0.5
    data: Path | None = None
    json_path: Path | None = None

    @property
    def baseline(self) -> float:
        """When the growth baseline is sampled: after the first minute, or half of a shorter run."""
        return min(BASELINE_SECONDS, self.duration / 2)


def parse_config(argv: Sequence[str] | None = None) -> SoakConfig:
    """Flags to a :class:`SoakConfig` (bad values exit 2 with one line naming the flag)."""
    parser = FlagParser(prog="soak", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.flag(
        "--duration",
        env=None,
        default="10m",
        type=duration_seconds,
        help="how long the sensors generate (5, 500ms, 10m)",
    )
    parser.flag("--sensors", env=None, default=8, type=positive_int, help="number of sensors")
    parser.flag("--rate", env=None, default=300.0, type=positive_float, help="readings/s each")
    parser.flag("--period", env=None, default=5.0, type=positive_float, help="decision period, s")
    parser.flag(
        "--grace",
        env=None,
        default=0.5,
        type=non_negative_float,
        help="the controller's --grace, s",
    )
    parser.flag(
        "--data",
        env=None,
        default=None,
        type=Path,
        help="folder for the database, journal and logs (default: a temp folder, "
        "removed after a run where every target passed)",
    )
    parser.flag(
        "--json",
        env=None,
        default=None,
        type=Path,
        dest="json_path",
        help="also write the results as JSON to this file",
    )
    args = parser.parse_args(argv)
    if args.data is not None and (args.data / "workcell.db").exists():
        # The audit assumes one run per database: an old run's readings would count as lost.
        parser.error(f"argument --data: {args.data} already holds workcell.db; use a new folder")
    return SoakConfig(
        duration=args.duration,
        sensors=args.sensors,
        rate=args.rate,
        period=args.period,
        grace=args.grace,
        data=args.data,
        json_path=args.json_path,
    )


# ---------------------------------------------------------------------------------------------
# Pure evaluation: results in, targets and text out

_FINAL = re.compile(
    r"sensor (\S+): stopped: created=(\d+) sent=(\d+) acked=(\d+) dropped=(\d+) undelivered=(\d+)"
)


@dataclass(frozen=True, slots=True)
class FinalCounters:
    """A sensor's own account, from its last log line."""

    created: int
    sent: int
    acked: int
    dropped: int
    undelivered: int


def parse_final_line(log_text: str) -> FinalCounters | None:
    """The counters of the last ``sensor <id>: stopped: …`` line, None if there is none."""
    matches = _FINAL.findall(log_text)
    if not matches:
        return None
    return FinalCounters(*(int(value) for value in matches[-1][1:]))


@dataclass(frozen=True, slots=True)
class SensorResult:
    """One sensor: what it says it generated against what the database holds."""

    sensor_id: str
    final: FinalCounters | None
    boot_ids: int
    stored: int
    distinct_seq: int
    min_seq: int | None
    max_seq: int | None
    first_us: int | None
    last_us: int | None
    stale: int
    target_rate: float

    @property
    def generated(self) -> int | None:
        """Readings created, by the sensor's final line."""
        return None if self.final is None else self.final.created

    @property
    def duplicates(self) -> int:
        """Rows beyond one per sequence number."""
        return self.stored - self.distinct_seq

    @property
    def lost(self) -> int | None:
        """Generated but not stored (None without a final line)."""
        return None if self.generated is None else self.generated - self.distinct_seq

    @property
    def rate(self) -> float | None:
        """Readings per second between its first and last reading's own timestamps."""
        if self.first_us is None or self.last_us is None or self.last_us <= self.first_us:
            return None
        return (self.distinct_seq - 1) / ((self.last_us - self.first_us) / 1e6)

    @property
    def rate_deviation_percent(self) -> float | None:
        """Actual rate against the target, in %."""
        rate = self.rate
        return None if rate is None else (rate / self.target_rate - 1) * 100

    def problems(self) -> list[str]:
        """Why this sensor breaks "nothing lost, nothing doubled" (empty when it does not)."""
        final = self.final
        if final is None:
            return [f"{self.sensor_id}: no final 'stopped:' line"]
        found: list[str] = []
        if final.dropped or final.undelivered or final.acked != final.created:
            found.append(
                f"{self.sensor_id}: acked {final.acked} of {final.created}, "
                f"dropped {final.dropped}, undelivered {final.undelivered}"
            )
        if self.boot_ids != 1:
            found.append(f"{self.sensor_id}: {self.boot_ids} boot ids stored")
        if self.duplicates:
            found.append(f"{self.sensor_id}: {self.duplicates} duplicates")
        whole = (self.min_seq, self.max_seq, self.distinct_seq) == (1, final.created, final.created)
        if final.created and not whole:
            found.append(
                f"{self.sensor_id}: stored seq {self.min_seq}..{self.max_seq} "
                f"({self.distinct_seq} distinct), generated 1..{final.created}"
            )
        return found


@dataclass(frozen=True, slots=True)
class CommandRow:
    """One row of the ``commands`` table (times in µs)."""

    id: int
    window_start: int
    window_end: int
    issued_at: int
    acknowledged_at: int | None


@dataclass(frozen=True, slots=True)
class RssRow:
    """One process's RSS in KiB at the three sample points (None: not running)."""

    process: str
    start: int | None
    baseline: int | None
    end: int | None


@dataclass(frozen=True, slots=True)
class Check:
    """One target: pass or fail, and what was measured."""

    name: str
    passed: bool
    measured: str


@dataclass(slots=True)
class SoakResult:
    """Everything one run measured."""

    config: SoakConfig
    data_dir: str
    started_at_us: int
    controller_span_us: tuple[int, int]
    sensors: list[SensorResult] = field(default_factory=list)
    commands: list[CommandRow] = field(default_factory=list)
    journal_ids: list[int] = field(default_factory=list)
    rss: list[RssRow] = field(default_factory=list)
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def cadence_ms(commands: Sequence[CommandRow], grace_s: float) -> list[float]:
    """Per command: issued_at minus its schedule (window_end + grace), in ms."""
    grace_us = round(grace_s * 1e6)
    return [(c.issued_at - (c.window_end + grace_us)) / 1000 for c in commands]


def expected_commands(span_us: tuple[int, int], period_s: float, grace_s: float) -> int:
    """Decision moments (k·P + grace) that fell while the controller ran."""
    period_us, grace_us = round(period_s * 1e6), round(grace_s * 1e6)
    start, end = span_us
    first = math.ceil((start - grace_us) / period_us)
    last = math.floor((end - grace_us) / period_us)
    return max(0, last - first + 1)


def skipped_windows(commands: Sequence[CommandRow]) -> int:
    """Windows between consecutive commands that got no command."""
    skipped = 0
    for before, after in itertools.pairwise(commands):
        period = before.window_end - before.window_start
        skipped += max(0, (after.window_start - before.window_end) // max(period, 1))
    return skipped


def growth_percent(row: RssRow | None) -> float | None:
    """RSS growth from the baseline sample to the end, in %."""
    if row is None or not row.baseline or row.end is None:
        return None
    return (row.end - row.baseline) / row.baseline * 100


def evaluate(result: SoakResult) -> list[Check]:
    """The issue's targets (and clean exits), each passed or failed."""
    problems = [problem for sensor in result.sensors for problem in sensor.problems()]
    generated = sum(sensor.generated or 0 for sensor in result.sensors)
    stored = sum(sensor.stored for sensor in result.sensors)
    lost_text = f"generated {generated:,}, stored {stored:,}"
    if problems:
        lost_text += "; " + "; ".join(problems[:4]) + (" …" if len(problems) > 4 else "")

    ids = [c.id for c in result.commands]
    acked = sum(c.acknowledged_at is not None for c in result.commands)
    journal_ok = result.journal_ids == ids
    ack_text = f"{acked}/{len(ids)} acknowledged, journal " + (
        "matches (same ids, in order)"
        if journal_ok
        else f"differs ({len(result.journal_ids)} lines)"
    )

    deviations = cadence_ms(result.commands, result.config.grace)
    p99 = percentile(deviations, 99) if deviations else None
    controller = next((row for row in result.rss if row.process == "controller"), None)
    growth = growth_percent(controller)
    bad_exits = {name: code for name, code in result.exit_codes.items() if code != 0}
    return [
        Check("nothing lost, nothing doubled", not problems and bool(result.sensors), lost_text),
        Check(
            "every command acknowledged", bool(ids) and acked == len(ids) and journal_ok, ack_text
        ),
        Check(
            f"cadence p99 < {CADENCE_P99_LIMIT_MS:g} ms",
            p99 is not None and p99 < CADENCE_P99_LIMIT_MS,
            "no commands" if p99 is None else f"p99 {p99:.1f} ms",
        ),
        Check(
            f"controller RSS growth < {RSS_GROWTH_LIMIT_PERCENT:g}% after the first minute",
            growth is not None and growth < RSS_GROWTH_LIMIT_PERCENT,
            "not measured"
            if growth is None
            else f"{growth:+.1f}% (after {result.config.baseline:g} s)",
        ),
        Check(
            "every process exited 0",
            not bad_exits,
            "yes" if not bad_exits else ", ".join(f"{n}={c}" for n, c in bad_exits.items()),
        ),
    ]


def _mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


def _optional(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_report(result: SoakResult, checks: Sequence[Check]) -> str:
    """The printed report."""
    config = result.config
    lines = [
        f"soak: {config.sensors} sensors x {config.rate:g}/s, period {config.period:g} s, "
        f"grace {config.grace:g} s, duration {config.duration:g} s; data in {result.data_dir}",
        "",
        "readings (rate: first to last reading's own timestamp)",
        f"  {'sensor':<12}{'generated':>11}{'stored':>11}{'distinct':>11}{'seq':>17}"
        f"{'lost':>6}{'dup':>5}{'stale':>7}{'dropped':>9}{'rate/s':>9}{'vs target':>11}",
    ]
    for s in result.sensors:
        seq = f"{_optional(s.min_seq, 'd')}..{_optional(s.max_seq, 'd')}"
        lines.append(
            f"  {s.sensor_id:<12}{_optional(s.generated, ',d'):>11}{s.stored:>11,}"
            f"{s.distinct_seq:>11,}{seq:>17}{_optional(s.lost, 'd'):>6}{s.duplicates:>5}"
            f"{s.stale:>7}{_optional(s.final.dropped if s.final else None, 'd'):>9}"
            f"{_optional(s.rate, '.1f'):>9}{_optional(s.rate_deviation_percent, '+.2f'):>10}%"
        )
    total_generated = sum(s.generated or 0 for s in result.sensors)
    lines.append(
        f"  {'total':<12}{total_generated:>11,}{sum(s.stored for s in result.sensors):>11,}"
        f"{sum(s.distinct_seq for s in result.sensors):>11,}{'':>17}"
        f"{sum(s.lost or 0 for s in result.sensors):>6}"
        f"{sum(s.duplicates for s in result.sensors):>5}{sum(s.stale for s in result.sensors):>7}"
    )

    commands = result.commands
    deviations = cadence_ms(commands, config.grace)
    expected = expected_commands(result.controller_span_us, config.period, config.grace)
    acked = sum(c.acknowledged_at is not None for c in commands)
    lines += [
        "",
        "commands",
        f"  issued {len(commands)}, expected {expected} (decision times while the controller ran;"
        f" duration/period = {config.duration / config.period:g}), windows skipped "
        f"{skipped_windows(commands)}",
    ]
    if deviations:
        lines.append(
            "  cadence (issued_at - (window_end + grace)):"
            f" p50 {percentile(deviations, 50):.1f} ms,"
            f" p99 {percentile(deviations, 99):.1f} ms, max {max(deviations):.1f} ms,"
            f" min {min(deviations):.1f} ms"
        )
    journal_ok = result.journal_ids == [c.id for c in commands]
    lines += [
        f"  acknowledged {acked}/{len(commands)}; journal {len(result.journal_ids)} lines, "
        + ("same ids in the same order" if journal_ok else "ids DIFFER from the commands table"),
        "",
        f"memory (RSS MiB; baseline after {config.baseline:g} s)",
        f"  {'process':<12}{'start':>9}{'baseline':>10}{'end':>9}{'growth':>9}",
    ]
    for row in result.rss:
        growth = growth_percent(row)
        lines.append(
            f"  {row.process:<12}{_mib(row.start):>9}{_mib(row.baseline):>10}{_mib(row.end):>9}"
            f"{_optional(growth, '+.1f'):>8}%"
        )
    lines += ["", "exit codes: " + ", ".join(f"{n}={c}" for n, c in result.exit_codes.items())]
    lines += [f"note: {note}" for note in result.notes]
    lines += ["", "targets"]
    lines += [f"  {'PASS' if c.passed else 'FAIL'}  {c.name}: {c.measured}" for c in checks]
    passed = all(c.passed for c in checks)
    lines.append(f"result: {'PASS' if passed else 'FAIL'}")
    return "\n".join(lines)


def result_json(result: SoakResult, checks: Sequence[Check]) -> dict[str, Any]:
    """The results as plain JSON values, with the derived figures spelled out."""
    deviations = cadence_ms(result.commands, result.config.grace)
    document = asdict(result)
    document["config"] = {
        k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result.config).items()
    }
    document["sensors"] = [
        {
            **asdict(s),
            "generated": s.generated,
            "lost": s.lost,
            "duplicates": s.duplicates,
            "rate": s.rate,
            "rate_deviation_percent": s.rate_deviation_percent,
        }
        for s in result.sensors
    ]
    document["summary"] = {
        "generated": sum(s.generated or 0 for s in result.sensors),
        "stored": sum(s.stored for s in result.sensors),
        "distinct": sum(s.distinct_seq for s in result.sensors),
        "duplicates": sum(s.duplicates for s in result.sensors),
        "stale": sum(s.stale for s in result.sensors),
        "commands": len(result.commands),
        "commands_expected": expected_commands(
            result.controller_span_us, result.config.period, result.config.grace
        ),
        "acknowledged": sum(c.acknowledged_at is not None for c in result.commands),
        "journal_matches": result.journal_ids == [c.id for c in result.commands],
        "cadence_ms": {
            "p50": percentile(deviations, 50) if deviations else None,
            "p99": percentile(deviations, 99) if deviations else None,
            "max": max(deviations) if deviations else None,
        },
        "controller_rss_growth_percent": growth_percent(
            next((row for row in result.rss if row.process == "controller"), None)
        ),
    }
    document["checks"] = [asdict(c) for c in checks]
    document["passed"] = all(c.passed for c in checks)
    return document


# ---------------------------------------------------------------------------------------------
# The run: processes, the database, the journal


def _now_us() -> int:
    return time.time_ns() // 1000


def _connect(database: Path) -> sqlite3.Connection:
    # Read-only and short-lived, so the soak never holds a snapshot the writer waits on.
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
    connection.execute("PRAGMA query_only = 1")
    return connection


def _query(database: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    if not database.exists():
        return []
    try:
        with closing(_connect(database)) as db:
            return db.execute(sql, params).fetchall()
    except sqlite3.OperationalError:
        return []  # tables not created yet


def read_commands(database: Path) -> list[CommandRow]:
    """Every command, in id order."""
    rows = _query(
        database,
        "SELECT id, window_start, window_end, issued_at, acknowledged_at FROM commands ORDER BY id",
    )
    return [CommandRow(*row) for row in rows]


def read_sensors(
    database: Path, logs: dict[str, str], commands: Sequence[CommandRow], target_rate: float
) -> list[SensorResult]:
    """Per sensor: the final line's counters and the readings table's account."""
    stored = {
        row[0]: row[1:]
        for row in _query(
            database,
            "SELECT sensor_id, COUNT(DISTINCT boot_id), COUNT(*), COUNT(DISTINCT seq), MIN(seq),"
            " MAX(seq), MIN(timestamp), MAX(timestamp)"
            " FROM readings JOIN sensor_runs ON sensor_runs.id = readings.run_id"
            " GROUP BY sensor_id",
        )
    }
    stale = count_stale(database, commands)
    results = []
    for sensor_id in sorted({*logs, *stored}, key=_natural):
        boot_ids, count, distinct, min_seq, max_seq, first, last = stored.get(
            sensor_id, (0, 0, 0, None, None, None, None)
        )
        results.append(
            SensorResult(
                sensor_id=sensor_id,
                final=parse_final_line(logs.get(sensor_id, "")),
                boot_ids=boot_ids,
                stored=count,
                distinct_seq=distinct,
                min_seq=min_seq,
                max_seq=max_seq,
                first_us=first,
                last_us=last,
                stale=stale.get(sensor_id, 0),
                target_rate=target_rate,
            )
        )
    return results


def count_stale(database: Path, commands: Sequence[CommandRow]) -> dict[str, int]:
    """Readings received once a window at or after their own had been decided, per sensor.

    A reading of timestamp t is judged by the first command whose window ends after t; it is
    stale when it arrived at or after that command was issued. One indexed range per command.
    """
    stale: dict[str, int] = {}
    lower = -(2**63)
    for command in commands:
        for sensor_id, count in _query(
            database,
            "SELECT sensor_id, COUNT(*)"
            " FROM readings JOIN sensor_runs ON sensor_runs.id = readings.run_id"
            " WHERE timestamp >= ? AND timestamp < ?"
            " AND received_at >= ? GROUP BY sensor_id",
            lower,
            command.window_end,
            command.issued_at,
        ):
            stale[sensor_id] = stale.get(sensor_id, 0) + count
        lower = command.window_end
    return stale


def read_journal_ids(path: Path) -> list[int]:
    """Command ids of the journal's complete lines, in file order (parsed here, independently)."""
    if not path.exists():
        return []
    ids = []
    for line in path.read_text().splitlines():
        if line.strip():
            ids.append(int(json.loads(line)["command_id"]))
    return ids


def _natural(name: str) -> tuple[str, int]:
    prefix, _, number = name.rpartition("-")
    return (prefix, int(number)) if number.isdigit() else (name, 0)


def _rss(child: Child) -> int | None:
    """The child's RSS in KiB, None once it has exited."""
    if child.process.poll() is not None:
        return None
    try:
        return read_usage(child.pid).rss_kib
    except OSError:
        return None


def _sample(children: Sequence[Child]) -> dict[str, int | None]:
    return {child.name: _rss(child) for child in children}


def _say(text: str) -> None:
    print(text, flush=True)


def _wait_exit(children: Sequence[Child], timeout: float) -> None:
    """Wait for already-signalled children; SIGKILL whoever outlives ``timeout``."""
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()


def _stop(children: Sequence[Child], timeout: float) -> None:
    # One SIGTERM each, all at once: a second one could land after the handler is gone.
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    _wait_exit(children, timeout)


def _wait_until(condition: Callable[[], bool], timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


def _ticks(start: float, every: float, end: float) -> Iterator[float]:
    tick = start + every
    while tick < end:
        yield tick
        tick += every


@dataclass(frozen=True, slots=True)
class Cell:
    """The running processes of one soak."""

    manipulator: Child
    controller: Child
    sensors: list[Child]
    controller_started_us: int

    @property
    def everyone(self) -> list[Child]:
        """Every process, servers first."""
        return [self.manipulator, self.controller, *self.sensors]


def start_cell(children: Children, config: SoakConfig, data: Path) -> Cell:
    """Manipulator, then controller, then sensors, each tier pointed at the real port."""
    manipulator = children.start(
        "manipulator",
        "manipulator",
        ["--listen", "127.0.0.1:0", "--journal", str(data / "journal.jsonl")],
    )
    manipulator.wait_listening(START_TIMEOUT)
    controller = children.start(
        "controller",
        "controller",
        [
            *("--listen", "127.0.0.1:0"),
            *("--manipulator", f"127.0.0.1:{manipulator.port}"),
            *("--database", f"sqlite+aiosqlite:///{data / 'workcell.db'}"),
            *("--period", str(config.period)),
            *("--grace", str(config.grace)),
        ],
    )
    controller.wait_listening(START_TIMEOUT)
    controller_started = _now_us()
    sensors = [
        children.start(
            f"sensor-{i}",
            "sensor",
            [
                *("--controller", f"127.0.0.1:{controller.port}"),
                *("--sensor-id", f"sensor-{i}"),
                *("--rate", str(config.rate)),
                *("--seed", str(i)),
                "--no-progress",
            ],
        )
        for i in range(1, config.sensors + 1)
    ]
    for sensor in sensors:
        sensor.wait_for_line(r"sensor \S+ starting", START_TIMEOUT)
    return Cell(manipulator, controller, sensors, controller_started)


def soak_for(cell: Cell, config: SoakConfig, database: Path, notes: list[str]) -> list[RssRow]:
    """Let the cell run for the duration with a progress line every 10 s; RSS at three points.

    Ends early (with a note) when a process exits on its own.
    """
    everyone = cell.everyone
    start = time.monotonic()
    end = start + config.duration
    rss_start = _sample(everyone)
    rss_baseline: dict[str, int | None] = {}
    events = sorted(
        [(t, "progress") for t in _ticks(start, PROGRESS_SECONDS, end)]
        + [(start + config.baseline, "baseline")]
    )
    for at, what in events:
        time.sleep(max(0.0, at - time.monotonic()))
        if what == "baseline":
            rss_baseline = _sample(everyone)
            continue
        # MAX(id) rather than COUNT(*): instant, and equal to it while nothing is deleted.
        ((stored,),) = _query(database, "SELECT COALESCE(MAX(id), 0) FROM readings") or [(0,)]
        ((issued, acked),) = _query(
            database, "SELECT COUNT(*), COUNT(acknowledged_at) FROM commands"
        ) or [(0, 0)]
        _say(
            f"[{time.monotonic() - start:6.0f} s] stored {stored:,}"
            f"  commands {issued} (acknowledged {acked})"
            f"  controller RSS {_mib(_rss(cell.controller))} MiB"
        )
        dead = [child.name for child in everyone if child.process.poll() is not None]
        if dead:
            notes.append(f"exited early: {', '.join(dead)}; run cut short")
            _say(f"soak: {', '.join(dead)} exited early, stopping")
            break
    else:
        time.sleep(max(0.0, end - time.monotonic()))
    rss_end = _sample(everyone)
    return [
        RssRow(child.name, rss_start[child.name], rss_baseline.get(child.name), rss_end[child.name])
        for child in everyone
    ]


def settle(database: Path, config: SoakConfig) -> bool:
    """After the sensors stopped: wait until the window of the last reading is decided and
    every command is acknowledged (bounded); whether that happened."""
    ((last_ts,),) = _query(database, "SELECT MAX(timestamp) FROM readings") or [(None,)]
    if last_ts is None:
        return True
    period_us, grace_us = round(config.period * 1e6), round(config.grace * 1e6)
    last_end = (last_ts // period_us + 1) * period_us

    def settled() -> bool:
        rows = _query(
            database,
            "SELECT COALESCE(MAX(window_end), 0), COUNT(*) - COUNT(acknowledged_at) FROM commands",
        )
        return bool(rows) and rows[0][0] >= last_end and rows[0][1] == 0

    wait = (last_end + grace_us - _now_us()) / 1e6 + max(10.0, 2 * config.period)
    return _wait_until(settled, max(wait, 1.0))


def run_soak(config: SoakConfig, data: Path) -> SoakResult:
    """Run the cell, stop it in order (sensors, controller, manipulator), collect the results."""
    database = data / "workcell.db"
    result = SoakResult(config, str(data), _now_us(), (0, 0))
    with Children(data / "logs") as children:
        cell = start_cell(children, config, data)
        result.started_at_us = _now_us()
        _say(f"soak: cell up ({config.sensors} sensors), running for {config.duration:g} s")
        result.rss = soak_for(cell, config, database, result.notes)

        _say("soak: stopping the sensors")
        _stop(cell.sensors, SENSOR_STOP_TIMEOUT)
        if not settle(database, config):
            result.notes.append("the last window was not decided and acknowledged in time")
        _say("soak: stopping the controller, then the manipulator")
        result.controller_span_us = (cell.controller_started_us, _now_us())
        _stop([cell.controller], SERVER_STOP_TIMEOUT)
        _stop([cell.manipulator], SERVER_STOP_TIMEOUT)
        result.exit_codes = {child.name: child.process.poll() for child in cell.everyone}
        logs = {sensor.name: sensor.log_text() for sensor in cell.sensors}
    result.commands = read_commands(database)
    result.sensors = read_sensors(database, logs, result.commands, config.rate)
    result.journal_ids = read_journal_ids(data / "journal.jsonl")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak, print the report; 0 when every target passes, 1 otherwise."""
    config = parse_config(argv)
    data = config.data or Path(tempfile.mkdtemp(prefix="workcell-soak-"))
    data = data.resolve()
    data.mkdir(parents=True, exist_ok=True)
    passed = False
    try:
        result = run_soak(config, data)
        checks = evaluate(result)
        passed = all(check.passed for check in checks)
        _say("\n" + format_report(result, checks))
        if config.json_path is not None:
            config.json_path.parent.mkdir(parents=True, exist_ok=True)
            config.json_path.write_text(json.dumps(result_json(result, checks), indent=2) + "\n")
    finally:
        if config.data is None:
            if passed:
                shutil.rmtree(data, ignore_errors=True)
            else:
                _say(f"soak: files kept in {data}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
