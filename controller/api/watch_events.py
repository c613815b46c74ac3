"""The events of ``History/Watch`` and the cursor that makes a resume exact (pure).

A watcher's position is two ids (:class:`WatchCursor`): every command up to
``issued_through`` has had its issue told, every command up to
``acknowledged_through`` its acknowledgement too. Both only grow, and the
acknowledgements are told in id order, each only once every command before it
was: so the two numbers say exactly what a watcher has been told, and a
watcher that sends them back gets the next event and nothing it had.

Holding an acknowledgement back until the ones before it are in costs
nothing in practice: the link sends commands in id order and the manipulator
acknowledges them in that order, so the database sees them acknowledged in
order too (a refused command holds back every later one on the link anyway).

The functions here take commands as the database holds them *now* (in id
order, after the cursor) and return the events due, advancing the cursor; a
command that is not there yet, or not acknowledged yet, simply yields nothing,
to be read again at the next change. The caller reads; nothing here waits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from controller.records import CommandRecord

__all__ = [
    "EventKind",
    "WatchCursor",
    "WatchEvent",
    "cursor_problem",
    "take_acknowledged",
    "take_issued",
]


class EventKind(Enum):
    ISSUED = "issued"
    ACKNOWLEDGED = "acknowledged"


@dataclass(slots=True)
class WatchCursor:
    """What a watcher has been told: issues up to one id, acknowledgements up to another."""

    issued_through: int
    acknowledged_through: int

    def copy(self) -> WatchCursor:
        return WatchCursor(self.issued_through, self.acknowledged_through)

    def describe(self) -> str:
        """How a client resumes from here (the two request fields)."""
        return (
            f"after_command_id={self.issued_through} "
            f"acknowledged_through={self.acknowledged_through}"
        )


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One event and the cursor right after it."""

    kind: EventKind
    record: CommandRecord
    resume: WatchCursor


def cursor_problem(after: int | None, acknowledged: int | None) -> str | None:
    """Why a request's two ids make no cursor (None: they do)."""
    if after is None and acknowledged is not None:
        return "acknowledged_through needs after_command_id (resume with both from an event)"
    if after is not None and acknowledged is not None and acknowledged > after:
        return (
            f"acknowledged_through ({acknowledged}) exceeds after_command_id ({after}): "
            "no command can be acknowledged before it is issued"
        )
    return None


def take_acknowledged(cursor: WatchCursor, records: Iterable[CommandRecord]) -> list[WatchEvent]:
    """The acknowledgements now due among ``records`` (id order, ids after
    ``cursor.acknowledged_through``): in order, up to the first command that is
    not acknowledged yet, and only of commands whose issue was told."""
    events: list[WatchEvent] = []
    for record in records:
        if record.id <= cursor.acknowledged_through:
            continue
        if record.id > cursor.issued_through or record.acknowledged_at is None:
            break
        cursor.acknowledged_through = record.id
        events.append(WatchEvent(EventKind.ACKNOWLEDGED, record, cursor.copy()))
    return events


def take_issued(cursor: WatchCursor, records: Iterable[CommandRecord]) -> list[WatchEvent]:
    """The issues now due among ``records`` (id order, ids after
    ``cursor.issued_through``), each followed by its acknowledgement when it
    already has one and every command before it was told acknowledged."""
    events: list[WatchEvent] = []
    for record in records:
        if record.id <= cursor.issued_through:
            continue
        # An id the database never held (none is skipped today) is passed over.
        in_order = cursor.acknowledged_through == cursor.issued_through
        cursor.issued_through = record.id
        events.append(WatchEvent(EventKind.ISSUED, record, cursor.copy()))
        if in_order and record.acknowledged_at is not None:
            cursor.acknowledged_through = record.id
            events.append(WatchEvent(EventKind.ACKNOWLEDGED, record, cursor.copy()))
    return events
