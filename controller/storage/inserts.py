"""How a commit group's readings go into the writer's open transaction.

Three ways, from the common to the rare:

- :func:`insert_all`: every reading at once, the hot path. It only says how
  many were new.
- :func:`insert_new`: when some were resends, which ones: the stored
  readings are read back first, so a duplicate is never counted twice in a
  window.
- :func:`insert_longest_prefix`: when the database refused a value (a data
  error), how far it takes the readings, in savepoints, halving the attempt
  after each refusal; the reading it stopped at is the culprit.

The writer (:mod:`controller.storage.writer`) owns the transaction, the tallies and
the windows; these functions only run statements through a
:class:`~controller.storage.write_backend.WriteBackend`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from controller.records import BOOT_ID, SENSOR_ID, ReadingRow
from controller.storage.write_backend import RunKey, StoredReading, WriteBackend

__all__ = [
    "CONFLICT",
    "DUPLICATE",
    "NEW",
    "REFUSED",
    "Conflict",
    "Inserted",
    "insert_all",
    "insert_longest_prefix",
    "insert_new",
]

# What became of one reading of a group.
NEW = 0
"""Stored by this transaction."""
DUPLICATE = 1
"""Stored before (a resend), or earlier in the same group, with the same payload and time."""
CONFLICT = 2
"""A duplicate whose stored payload or timestamp differs: the first one stays."""
REFUSED = 3
"""Not stored: the database refused a value of it, or of an earlier reading of its stream."""


@dataclass(frozen=True, slots=True)
class Conflict:
    """A reading that clashed with the one stored under its (sensor_id, boot_id, seq)."""

    reading: ReadingRow
    stored_payload: int
    stored_timestamp_us: int


@dataclass(slots=True)
class Inserted:
    """What became of some readings, in their order, and the sensor runs registered for them."""

    states: list[int] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    new_runs: dict[RunKey, int] = field(default_factory=dict)

    def extend(self, other: Inserted) -> None:
        self.states += other.states
        self.conflicts += other.conflicts
        self.new_runs.update(other.new_runs)


async def insert_all(
    backend: WriteBackend,
    segments: Sequence[tuple[object, Sequence[ReadingRow]]],
    known: Mapping[RunKey, int],
) -> tuple[int, int, dict[RunKey, int]]:
    """Insert every reading of ``segments``, skipping those already stored.

    Returns how many readings there were, how many were inserted, and the
    runs registered. ``known`` maps the committed sensor runs to their ids.
    """
    try:
        # The hot path: one comprehension over the group, no copies.
        # Unpacked by name: as fast as indexing, and says which field is which.
        stored = [
            (known[sensor, boot], seq, payload, stamp, received)
            for _, rs in segments
            for sensor, boot, seq, payload, stamp, received in rs
        ]
        new_runs: dict[RunKey, int] = {}
    except KeyError:
        flat = [r for _, rs in segments for r in rs]
        stored, new_runs = await _with_run_ids(backend, flat, known)
    if not stored:
        return 0, 0, new_runs
    return len(stored), await backend.insert_readings(stored), new_runs


async def insert_new(
    backend: WriteBackend, rows: Sequence[ReadingRow], known: Mapping[RunKey, int]
) -> Inserted:
    """Insert the readings of ``rows`` not stored yet; say which ones they were,
    and which of the others clash with what is stored."""
    stored, new_runs = await _with_run_ids(backend, rows, known)
    # One index range per run rather than one lookup per reading.
    ranges: dict[int, tuple[int, int]] = {}
    for run_id, seq, *_ in stored:
        low, high = ranges.get(run_id, (seq, seq))
        ranges[run_id] = (min(low, seq), max(high, seq))
    # (run_id, seq) -> (payload, timestamp) of what is stored, or comes first in ``rows``.
    seen: dict[tuple[int, int], tuple[int, int]] = {}
    for run_id, (low, high) in ranges.items():
        for seq, payload, timestamp in await backend.stored_readings(run_id, low, high):
            seen[run_id, seq] = (payload, timestamp)
    done = Inserted(new_runs=new_runs)
    states = done.states
    new_rows: list[StoredReading] = []
    for reading, row in zip(rows, stored, strict=True):
        run_id, seq, payload, stamp, _ = row
        first = seen.get((run_id, seq))
        if first is None:
            seen[run_id, seq] = (payload, stamp)
            states.append(NEW)
            new_rows.append(row)
        elif first == (payload, stamp):
            states.append(DUPLICATE)
        else:
            states.append(CONFLICT)
            done.conflicts.append(Conflict(reading, *first))
    if new_rows:
        await backend.insert_readings(new_rows)
    return done


async def insert_longest_prefix(
    backend: WriteBackend, rows: Sequence[ReadingRow], known: Mapping[RunKey, int]
) -> tuple[Inserted, BaseException | None]:
    """Insert as many of ``rows``, from the first on, as the database takes.

    Each attempt runs in a savepoint, so a refused one leaves nothing behind
    and the transaction usable. Returns what became of the readings taken
    and, when it stopped short, the data error of the next one: the culprit.
    After a refusal the attempt is halved, so a culprit among n readings
    costs about 2·log2(n) attempts. Any other error (an outage) propagates.
    """
    done = Inserted()
    runs = dict(known)
    size = len(rows)
    while len(done.states) < len(rows):
        start = len(done.states)
        part = rows[start : start + size]
        try:
            async with backend.savepoint():
                inserted = await insert_new(backend, part, runs)
        except Exception as exc:
            if not backend.is_data_error(exc):
                raise
            if len(part) == 1:
                return done, exc
            size = (len(part) + 1) // 2
            continue
        done.extend(inserted)
        runs.update(inserted.new_runs)
    return done, None


async def _with_run_ids(
    backend: WriteBackend, rows: Sequence[ReadingRow], known: Mapping[RunKey, int]
) -> tuple[list[StoredReading], dict[RunKey, int]]:
    """``rows`` as rows of the readings table (run ids for names), and the
    runs this transaction registered for them."""
    try:
        return [(known[s, b], q, p, t, r) for s, b, q, p, t, r in rows], {}
    except KeyError:
        # A sensor run seen for the first time (a sensor started): once per run.
        # ``known`` holds every run this node stored: only the group's runs are looked up.
        keys = {(r[SENSOR_ID], r[BOOT_ID]) for r in rows}
        new = await backend.register_runs(sorted(keys - known.keys()))
        ids = {key: new[key] if key in new else known[key] for key in keys}
        return [(ids[s, b], q, p, t, r) for s, b, q, p, t, r in rows], new
