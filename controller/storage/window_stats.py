"""Window statistics in the database: where ingest and the leader's decisions meet.

Every node stores readings through its own writer; each commit group also
adds what it stored to its node's row of ``window_partials`` per open window,
in the same transaction. The leader closes a window in one transaction of its
own writer: it takes the ``decision_state`` row FOR UPDATE, checks that its
term still holds, sums the window's rows of every node, inserts the command
and moves ``decided_until`` past the window. An ingest transaction reads
``decided_until`` FOR SHARE before it counts anything, so it runs wholly
before a close (its rows are in the sum) or wholly after it (its readings of
the closed window are stale): a reading is counted or stale, never both, never
neither, whichever node stored it. On SQLite one writer serialises the same
statements. See docs/design.md, "Several nodes".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from controller.decision.rule import WindowStats
from controller.errors import NotLeader
from controller.records import (
    BOOT_ID,
    RECEIVED_AT,
    SENSOR_ID,
    TIMESTAMP,
    ClosedWindows,
    CloseWindows,
    ReadingRow,
)
from controller.storage.inserts import REFUSED
from controller.storage.write_backend import (
    InsertCommand,
    MarkRow,
    PartialRow,
    RunKey,
    WriteBackend,
)

__all__ = ["HEARTBEAT_US", "Reach", "close_windows", "group_reach", "mark_rows", "partial_rows"]

# A run's reach is written as soon as it passes a window's end (what the leader waits
# for: controller.decision.watermarks), and otherwise at most this often (what tells a
# live run from a silent one): a few rows a second, however many readings.
HEARTBEAT_US = 250_000
# (reached_us, heard_us): how far a run's committed readings reach, and when the newest
# of them was received.
Reach = tuple[int, int]


async def close_windows(backend: WriteBackend, close: CloseWindows) -> ClosedWindows:
    """Run ``close`` in the backend's open transaction, which holds ``decision_state``
    exclusively (:meth:`WriteBackend.lock_decisions`)."""
    decided_until = await backend.lock_decisions(exclusive=True)
    if not await backend.leads(close.epoch):
        raise NotLeader(
            f"epoch {close.epoch} no longer leads: its lease expired or a newer term began"
        )
    if close.decide is None:
        if close.until_us > decided_until:
            await backend.close_until(close.until_us)
        return ClosedWindows(None, WindowStats())
    if close.until_us <= decided_until:
        raise NotLeader(
            f"the window ending at {close.until_us} µs is already decided (up to "
            f"{decided_until} µs): another leader decided meanwhile"
        )
    last_id = await backend.last_command_id()
    if last_id != close.next_id - 1:
        raise NotLeader(
            f"command {last_id} was issued meanwhile by another leader; this one would issue "
            f"{close.next_id}"
        )
    stats = WindowStats()
    for count, total, total_sq in await backend.window_partials(close.window_start):
        stats.merge(WindowStats(count, int(total), int(total_sq)))
    record = close.decide(stats)
    await backend.apply(InsertCommand(record))
    await backend.close_until(close.until_us)
    return ClosedWindows(record, stats)


def partial_rows(
    node: str, committed: Mapping[int, WindowStats], fresh: Mapping[int, WindowStats]
) -> tuple[list[PartialRow], dict[int, WindowStats]]:
    """The node's rows for the windows ``fresh`` adds to, and its statistics once they commit.

    A node's rows are written by its own writer alone, so it knows their committed values
    (``committed``) and writes the new totals: sums beyond 64 bits never need adding in SQL.
    """
    rows: list[PartialRow] = []
    totals: dict[int, WindowStats] = {}
    for start, stats in fresh.items():
        total = committed[start].copy() if start in committed else WindowStats()
        total.merge(stats)
        totals[start] = total
        rows.append((start, node, total.count, str(total.total), str(total.total_sq)))
    return rows, totals


def group_reach(
    segments: Sequence[tuple[object, Sequence[ReadingRow]]], states: Sequence[int] | None
) -> dict[RunKey, Reach]:
    """How far each run's readings in one commit group reach.

    Per message, its last reading: sensors send in order, so it is the newest, and one
    look per message keeps this off the per-reading path. A message whose last reading
    the database refused (``states``, see :mod:`controller.storage.inserts`) says nothing.
    A message that mixes runs or is out of order can only make a reach too low: a window
    then waits longer (bounded), never decides without committed readings.
    """
    reach: dict[RunKey, Reach] = {}
    position = 0
    for _, rows in segments:
        position += len(rows)
        if not rows or (states is not None and states[position - 1] == REFUSED):
            continue
        last = rows[-1]
        key = (last[SENSOR_ID], last[BOOT_ID])
        seen = reach.get(key)
        if seen is None:
            reach[key] = (last[TIMESTAMP], last[RECEIVED_AT])
        else:
            reach[key] = (max(seen[0], last[TIMESTAMP]), max(seen[1], last[RECEIVED_AT]))
    return reach


def mark_rows(
    node: str,
    run_ids: Mapping[RunKey, int],
    written: Mapping[RunKey, Reach],
    group: Mapping[RunKey, Reach],
    period_us: int,
) -> tuple[list[MarkRow], dict[RunKey, Reach]]:
    """The node's run_marks rows the group writes, and what they hold once committed.

    A run's row is written when the group takes its reach into a later window than the
    one written (``written``), or its last written receipt is HEARTBEAT_US old.
    """
    rows: list[MarkRow] = []
    marks: dict[RunKey, Reach] = {}
    for key, (reached, heard) in group.items():
        before = written.get(key)
        if before is not None:
            reached, heard = max(reached, before[0]), max(heard, before[1])
            if reached // period_us == before[0] // period_us and heard - before[1] < HEARTBEAT_US:
                continue
        marks[key] = (reached, heard)
        rows.append((run_ids[key], node, reached, heard))
    return rows, marks
