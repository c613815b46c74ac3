"""A benchmark-only probe: when does each reading become visible (committed) in SQLite?

The commit time is not stored, so the probe polls the controller's database read-only every
``interval`` seconds for rows past the last one it saw (``rowid``, so a poll reads only the
new rows), and notes for each the start of the poll that first saw it. A row is visible only
once its transaction committed, and was not visible to the poll before, so its commit lies
between the two polls' starts: the probe's figure is an upper bound, late by at most one
poll period (``interval`` plus the time a poll takes). Creation (``timestamp``) and the
probe's clock are the same host's wall clock.

The probe is a thread of the harness with its own connection (WAL: readers never block the
controller's writer); its CPU is not counted in any measured process, but it runs on the same
cores (about 1 µs of Python per row read).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from array import array
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CommitProbe", "ProbedWindow"]

log = logging.getLogger(__name__)

_NEW_ROWS = "SELECT rowid, timestamp, received_at FROM readings WHERE rowid > ? ORDER BY rowid"
_CREATED_IN = "SELECT count(*) FROM readings WHERE timestamp >= ? AND timestamp < ?"


@dataclass(frozen=True, slots=True)
class ProbedWindow:
    """What the probe saw of the readings created in ``[start_us, end_us)``."""

    committed_us: list[int]
    """Per reading seen: first poll that saw it, minus its creation time."""
    received_us: list[int]
    """Per reading seen: ``received_at`` minus its creation time."""
    late: int
    """Readings created in the window that no poll saw before the probe stopped."""


class CommitProbe:
    """Polls an SQLite controller database for new rows between :meth:`start` and :meth:`stop`."""

    def __init__(self, path: Path, *, interval: float = 0.005) -> None:
        self._uri = f"file:{path}?mode=ro"
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="commit-probe", daemon=True)
        self._created = array("q")
        self._received = array("q")
        self._seen = array("q")
        self._last = 0
        self._failure: BaseException | None = None

    def start(self) -> int:
        """Start polling; the window's start (Unix µs).

        Only rows past the newest one committed now are looked at, so the start is taken
        after reading it: any reading created from then on commits later, past it.
        """
        with contextlib.closing(sqlite3.connect(self._uri, uri=True)) as db:
            self._last = int(db.execute("SELECT max(rowid) FROM readings").fetchone()[0] or 0)
        started = time.time_ns() // 1000
        self._thread.start()
        return started

    def stop(self) -> None:
        """Stop polling (after one last poll); raises what broke the thread, if anything did."""
        self._stop.set()
        self._thread.join(30)
        if self._failure is not None:
            raise RuntimeError(f"commit probe failed: {self._failure}") from self._failure

    def window(self, start_us: int, end_us: int) -> ProbedWindow:
        """The readings created in ``[start_us, end_us)``: those seen, and how many were not."""
        committed = []
        received = []
        for created, got, seen in zip(self._created, self._received, self._seen, strict=True):
            if start_us <= created < end_us:
                committed.append(seen - created)
                received.append(got - created)
        with contextlib.closing(sqlite3.connect(self._uri, uri=True)) as db:
            total = int(db.execute(_CREATED_IN, (start_us, end_us)).fetchone()[0])
        return ProbedWindow(committed, received, max(0, total - len(committed)))

    def _run(self) -> None:
        try:
            with contextlib.closing(sqlite3.connect(self._uri, uri=True)) as db:
                while True:
                    stopping = self._stop.is_set()
                    self._poll(db)
                    if stopping:
                        return
                    self._stop.wait(self._interval)
        except BaseException as exc:  # reported by stop(), in the harness's thread
            log.exception("commit probe failed")
            self._failure = exc

    def _poll(self, db: sqlite3.Connection) -> None:
        # A row this poll sees committed before its snapshot began (microseconds after
        # this) and after the previous poll's began: its commit time, to one poll period.
        polled = time.time_ns() // 1000
        rows = db.execute(_NEW_ROWS, (self._last,)).fetchall()
        if not rows:
            return
        for _, created, got in rows:
            self._created.append(created)
            self._received.append(got)
            self._seen.append(polled)
        self._last = rows[-1][0]
