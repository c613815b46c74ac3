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

from collections.abc import Mapping

from controller.decision.rule import WindowStats
from controller.errors import NotLeader
from controller.records import ClosedWindows, CloseWindows
from controller.storage.write_backend import InsertCommand, PartialRow, WriteBackend

__all__ = ["close_windows", "partial_rows"]


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
