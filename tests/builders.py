"""Commands and History entries as the tests need them: one builder of each.

Each test file passes what its scenario is about and takes the rest of the
defaults here, so a field added to a record or a message is filled in one place.
"""

from __future__ import annotations

from controller.decision.rule import WindowSummary
from controller.records import CommandRecord
from workcell.timeconv import US_PER_SECOND, to_timestamp
from workcell.v1 import command_pb2, history_pb2

__all__ = ["command_record", "history_entry"]

EMPTY = WindowSummary(0, 0.0, 0.0)
# Issued and acknowledged this long after the window ends, as a controller would.
ISSUE_DELAY_US = 500_000


def command_record(
    command_id: int,
    *,
    window_start: int,
    period_us: int = 5 * US_PER_SECOND,
    status: str = "up",
    issued_at: int | None = None,
    acknowledged_at: int | None = None,
    outcome: str = "too_few_readings",
    changed: bool = False,
    p_value: float | None = None,
    window: WindowSummary = EMPTY,
    previous: WindowSummary = EMPTY,
) -> CommandRecord:
    """The command deciding the window [window_start, window_start + period_us)."""
    end = window_start + period_us
    return CommandRecord(
        id=command_id,
        status=status,
        window_start=window_start,
        window_end=end,
        issued_at=end + ISSUE_DELAY_US if issued_at is None else issued_at,
        acknowledged_at=acknowledged_at,
        outcome=outcome,
        changed=changed,
        p_value=p_value,
        alpha=0.05,
        window=window,
        previous=previous,
    )


def history_entry(
    command_id: int,
    *,
    window_start: int,
    period_us: int,
    status: int = command_pb2.STATUS_UP,
    count: int = 1,
    window: history_pb2.WindowSummary | None = None,
    previous: history_pb2.WindowSummary | None = None,
    p_value: float | None = None,
    changed: bool = False,
    acked: bool = True,
) -> history_pb2.HistoryEntry:
    """The entry of ``count`` commands from ``command_id`` on, the first deciding the window at
    ``window_start``; ``p_value`` None: no test; ``acked``: every command acknowledged."""
    end = window_start + period_us * count
    entry = history_pb2.HistoryEntry(
        from_datetime=to_timestamp(window_start),
        to_datetime=to_timestamp(end),
        status=status,  # type: ignore[arg-type]
        command_id=command_id,
        last_command_id=command_id + count - 1,
        command_count=count,
        issued_at=to_timestamp(window_start + period_us + ISSUE_DELAY_US),
        window=window,
        previous_window=previous,
        changed=changed,
    )
    if p_value is not None:
        entry.p_value = p_value
    if acked:
        entry.acknowledged_at.CopyFrom(to_timestamp(end + ISSUE_DELAY_US + 10_000))
    return entry
