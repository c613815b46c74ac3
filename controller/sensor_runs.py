"""What one node knows of each sensor run it stores readings of, in memory (pure).

A run is one sensor process: a (sensor_id, boot_id). The writer adds each
commit group's outcome here as it settles the group (:meth:`SensorRuns.add_stored`
and friends): counts per run, the newest reading's times, and the readings
stored per window for the last few windows. Sensors/ListRuns reads a
snapshot. Nothing here is durable or shared between nodes: each node knows the
readings it stored itself since it started.

Bounded: a run silent for ``forget_after_us`` is forgotten (looked for at
most once a minute), and past ``max_runs`` the longest silent ones go first.
Per run a handful of integers and at most :data:`WINDOWS_KEPT` window counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from controller.records import ReadingRow

__all__ = ["FORGET_AFTER_US", "LIVE_PERIODS", "RunStatus", "SensorRuns"]

RunKey = tuple[str, str]

FORGET_AFTER_US = 3600 * 1_000_000
MAX_RUNS = 100_000
SWEEP_EVERY_US = 60 * 1_000_000
WINDOWS_KEPT = 3
LIVE_PERIODS = 2
"""A run is live when a reading of it was stored within this many periods."""


@dataclass(slots=True)
class _Tally:
    first_received_at: int
    last_received_at: int = 0
    last_timestamp: int = 0
    stored: int = 0
    stale: int = 0
    duplicates: int = 0
    windows: dict[int, int] = field(default_factory=dict)
    """Readings stored per window index (timestamp // period), the newest few."""


class RunStatus(NamedTuple):
    """One run as a snapshot tells it (a tuple: a snapshot makes one per run)."""

    sensor_id: str
    boot_id: str
    first_received_at: int
    last_received_at: int
    last_reading_at: int
    current_window: int
    last_window: int
    stored: int
    stale: int
    duplicates: int
    live: bool


class SensorRuns:
    """Per-run tallies of one node, fed by its writer."""

    def __init__(
        self,
        period_us: int,
        *,
        forget_after_us: int = FORGET_AFTER_US,
        max_runs: int = MAX_RUNS,
    ) -> None:
        self.period_us = period_us
        self._forget_after_us = forget_after_us
        self._max_runs = max_runs
        self._runs: dict[RunKey, _Tally] = {}
        self._next_sweep = 0

    def __len__(self) -> int:
        return len(self._runs)

    def add_stored(self, rows: Sequence[ReadingRow]) -> None:
        """Count readings newly stored (one commit group's, of one stream or many)."""
        if not rows:
            return
        period = self.period_us
        runs = self._runs
        sensor = boot = ""
        tally: _Tally | None = None
        touched: list[_Tally] = []
        # Rows come stream by stream, and a stream usually carries one run: the
        # run is looked up once per change of run, not per reading.
        for sensor_id, boot_id, _seq, _payload, timestamp, received in rows:
            if tally is None or sensor_id != sensor or boot_id != boot:
                sensor, boot = sensor_id, boot_id
                tally = runs.get((sensor, boot))
                if tally is None:
                    tally = runs[(sensor, boot)] = _Tally(first_received_at=received)
                touched.append(tally)
            tally.stored += 1
            if received >= tally.last_received_at:
                tally.last_received_at = received
                tally.last_timestamp = timestamp
            windows = tally.windows
            window = timestamp // period
            windows[window] = windows.get(window, 0) + 1
        for tally in touched:
            windows = tally.windows
            if len(windows) > WINDOWS_KEPT:
                for old in sorted(windows)[:-WINDOWS_KEPT]:
                    del windows[old]
        now = rows[-1][5]
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_EVERY_US
            self.forget_silent(now)

    def add_stale(self, rows: Iterable[ReadingRow]) -> None:
        """Count stored readings that came too late for their window (already in stored)."""
        for row in rows:
            tally = self._runs.get((row[0], row[1]))
            if tally is not None:
                tally.stale += 1

    def add_duplicates(self, rows: Iterable[ReadingRow]) -> None:
        """Count resends of readings already stored (not stored again)."""
        for row in rows:
            key = (row[0], row[1])
            tally = self._runs.get(key)
            if tally is None:
                # Stored by another node, or before this one started.
                tally = self._runs[key] = _Tally(first_received_at=row[5])
                tally.last_received_at = row[5]
                tally.last_timestamp = row[4]
            tally.duplicates += 1

    def forget_silent(self, now_us: int) -> None:
        """Drop runs silent for ``forget_after_us``, and the most silent beyond ``max_runs``."""
        limit = now_us - self._forget_after_us
        runs = self._runs
        for key in [k for k, t in runs.items() if t.last_received_at < limit]:
            del runs[key]
        if len(runs) > self._max_runs:
            by_silence = sorted(runs, key=lambda k: runs[k].last_received_at)
            for key in by_silence[: len(runs) - self._max_runs]:
                del runs[key]

    def current_window_start(self, now_us: int) -> int:
        """Where the window ``now_us`` falls in starts."""
        return now_us // self.period_us * self.period_us

    def snapshot(self, now_us: int) -> list[RunStatus]:
        """Every run still remembered, sorted by sensor id and boot id."""
        self.forget_silent(now_us)
        current = now_us // self.period_us
        live_since = now_us - LIVE_PERIODS * self.period_us
        return [
            RunStatus(
                sensor_id,
                boot_id,
                t.first_received_at,
                t.last_received_at,
                t.last_timestamp,
                t.windows.get(current, 0),
                t.windows.get(current - 1, 0),
                t.stored,
                t.stale,
                t.duplicates,
                t.last_received_at >= live_since,
            )
            for (sensor_id, boot_id), t in sorted(self._runs.items())
        ]
