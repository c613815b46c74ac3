"""What the journal holds, kept in bounded memory to judge each command received (pure).

A command is identified by (origin, id), and each origin's ids strictly
increase. A command is new when its id is above its origin's last journaled
id; at or below it, it must be a resend of the very command journaled under
that (origin, id), or it is refused. Resends come from a controller that lost
an ack, so they are recent: the index keeps the last :data:`RECENT_RECORDS`
records whatever their origin, and for each origin its last id, the offset of
its first line (where a search of the file starts) and the lowest id from
which every journaled record of the origin is still in memory. An older id
(rare: a resend after a long outage) has to be looked up in the file, which
:class:`manipulator.journal.Journal` does.

Each origin also has an epoch: the highest leadership term of the nodes of
that database whose commands were accepted, journaled or acknowledged again
as resends. A command of a lower epoch is fenced (refused, whatever it says):
a newer leader has taken over from its sender. Epochs are compared within an
origin because each database counts its own (a fresh database starts at 1
again), and a deposed leader shares its successor's database, hence origin.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass

from manipulator.errors import RefusalReason
from manipulator.records import JournalRecord, describe, same_command, shown_origin

__all__ = ["RECENT_RECORDS", "JournalIndex", "Judgement", "Verdict", "judge_against"]

# Records kept for comparing resends: a controller resends what it sent and
# did not see acknowledged, a handful normally and a few hundred after a long
# outage. About 1.5 MB.
RECENT_RECORDS = 4096


class Verdict(enum.Enum):
    NEW = "new"
    """Above its origin's last id: to be journaled."""
    RESEND = "resend"
    """The same command as the one journaled under its (origin, id): acknowledge again."""
    REFUSED = "refused"
    """A different command under a journaled (origin, id), or an id skipped: never journaled."""
    LOOK_UP = "look up"
    """At or below its origin's last id, older than the records in memory: read the file."""
    FENCED = "fenced"
    """Its epoch is below its origin's: its sender was deposed. Never journaled."""


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Verdict
    reason: str = ""
    """For REFUSED and FENCED: what the ack's error and the log line say."""
    fence: int = 0
    """For FENCED: the origin's epoch, higher than the command's."""
    refusal: RefusalReason = RefusalReason.CONFLICT
    """For REFUSED: which kind of refusal (counted by reason in the metrics)."""


@dataclass(slots=True)
class _Origin:
    last_id: int
    first_offset: int
    # Every record of this origin with an id at or above this is in memory.
    complete_from: int
    # The highest epoch accepted: journaled, or (in memory only) of a resend.
    epoch: int = 0


def _going_back(origin: str, command_id: int, last_id: int) -> str:
    return (
        f"command {command_id} of origin {shown_origin(origin)} follows command {last_id} "
        "(ids only increase per origin)"
    )


def _fenced(record: JournalRecord, epoch: int) -> Judgement:
    return Judgement(
        Verdict.FENCED,
        f"command {record.command_id} of origin {shown_origin(record.origin)} refused: it "
        f"comes from epoch {record.epoch}, but epoch {epoch} of that origin has already sent "
        "commands here; its sender was deposed",
        fence=epoch,
    )


def judge_against(
    record: JournalRecord, journaled: JournalRecord | None, last_id: int
) -> Judgement:
    """The verdict on ``record``, whose id is at or below ``last_id``, its origin's last.

    ``journaled`` is the record under the same (origin, id), None when there is none.
    """
    origin = shown_origin(record.origin)
    if journaled is None:
        return Judgement(
            Verdict.REFUSED,
            f"command {record.command_id} of origin {origin} refused: it is not journaled, and "
            f"that origin's commands are journaled up to {last_id} (ids only increase, so it "
            f"cannot be new); it says {describe(record)}",
            refusal=RefusalReason.SKIPPED_ID,
        )
    if same_command(record, journaled):
        return Judgement(Verdict.RESEND)
    return Judgement(
        Verdict.REFUSED,
        f"command {record.command_id} of origin {origin} refused: the journal holds a "
        f"different command {record.command_id} of that origin ({describe(journaled)}, "
        f"received {journaled.received_at}); this one says {describe(record)}",
        refusal=RefusalReason.CONFLICT,
    )


class JournalIndex:
    """Per origin, the last id; and the most recent records, to recognise resends."""

    def __init__(self, recent: int = RECENT_RECORDS) -> None:
        if recent < 1:
            raise ValueError("recent must be at least 1")
        self._limit = recent
        self._recent: OrderedDict[tuple[str, int], JournalRecord] = OrderedDict()
        self._origins: dict[str, _Origin] = {}
        self.last: tuple[str, int] | None = None
        """(origin, id) of the last line; None for an empty journal."""

    @property
    def origins(self) -> dict[str, int]:
        """Every origin journaled and its last id."""
        return {origin: state.last_id for origin, state in self._origins.items()}

    def last_id_of(self, origin: str) -> int:
        """The last id journaled for ``origin``; 0 when it has none."""
        state = self._origins.get(origin)
        return 0 if state is None else state.last_id

    def epoch_of(self, origin: str) -> int:
        """The highest epoch accepted from ``origin`` (0 when it has none)."""
        state = self._origins.get(origin)
        return 0 if state is None else state.epoch

    def first_offset_of(self, origin: str) -> int:
        """Where the first line of ``origin`` starts in the file (0 when it has none)."""
        state = self._origins.get(origin)
        return 0 if state is None else state.first_offset

    def note(self, origin: str, command_id: int, offset: int, epoch: int = 0) -> None:
        """A line at ``offset`` whose record is not kept in memory (read at open).

        Raises ValueError when ``command_id`` does not increase for ``origin``.
        An epoch below the origin's does not lower it (lines a manipulator
        without fencing appended, after a downgrade).
        """
        state = self._origins.get(origin)
        if state is None:
            self._origins[origin] = _Origin(command_id, offset, command_id + 1, epoch)
        else:
            if command_id <= state.last_id:
                raise ValueError(_going_back(origin, command_id, state.last_id))
            state.last_id = command_id
            state.complete_from = command_id + 1
            state.epoch = max(state.epoch, epoch)
        self.last = (origin, command_id)

    def note_known(self, lines: list[tuple[bytes, bytes, bytes]]) -> bool:
        """Note many lines, each ``(id, origin, epoch)`` as digits and ASCII, in file order.

        The fast path at open; ``epoch`` is b"" for a line without one. Only
        for origins already known (a new one has to be noted with its
        offset); False, and nothing noted, when a line is of a new origin or
        goes back within its origin: then the caller notes them one by one.
        """
        states: dict[bytes, _Origin] = {}
        for origin in {origin for _, origin, _ in lines}:
            state = self._origins.get(origin.decode())
            if state is None:
                return False
            states[origin] = state
        last_ids = {origin: state.last_id for origin, state in states.items()}
        for command_id, origin, _ in lines:
            number = int(command_id)
            if number <= last_ids[origin]:
                return False
            last_ids[origin] = number
        # A block holds a handful of distinct epochs: convert those, not every line's.
        epochs: dict[bytes, set[bytes]] = {origin: set() for origin in states}
        for _, origin, epoch in lines:
            epochs[origin].add(epoch)
        for origin, state in states.items():
            state.last_id = last_ids[origin]
            state.complete_from = state.last_id + 1
            state.epoch = max(state.epoch, *(int(epoch or 0) for epoch in epochs[origin]))
        if lines:
            command_id, origin, _ = lines[-1]
            self.last = (origin.decode(), int(command_id))
        return True

    def remember(self, record: JournalRecord, offset: int) -> None:
        """Keep ``record``, already noted at ``offset``, among the recent ones.

        Records are remembered in file order, so the ones kept of an origin
        are always its last ones.
        """
        state = self._origins[record.origin]
        if offset == state.first_offset:
            state.complete_from = 0  # nothing of this origin before it
        else:
            state.complete_from = min(state.complete_from, record.command_id)
        self._recent[(record.origin, record.command_id)] = record
        while len(self._recent) > self._limit:
            (old_origin, old_id), _ = self._recent.popitem(last=False)
            evicted = self._origins[old_origin]
            evicted.complete_from = max(evicted.complete_from, old_id + 1)

    def add(self, record: JournalRecord, offset: int) -> None:
        """A record just journaled at ``offset``: noted and kept in memory."""
        state = self._origins.get(record.origin)
        complete_from = None if state is None else state.complete_from
        self.note(record.origin, record.command_id, offset, record.epoch)
        if complete_from is not None:
            self._origins[record.origin].complete_from = complete_from
        self.remember(record, offset)

    def resent(self, record: JournalRecord) -> None:
        """``record`` was acknowledged again as a resend: its epoch, if higher, is the origin's.

        Only in memory (a resend writes no line): after a restart the origin's
        epoch is again the highest journaled, until the new epoch's first command.
        """
        state = self._origins[record.origin]
        state.epoch = max(state.epoch, record.epoch)

    def judge(self, record: JournalRecord) -> Judgement:
        """NEW, RESEND, REFUSED or FENCED from memory; LOOK_UP when only the file can tell.

        The epoch first: a deposed sender is refused even a resend, so that
        it learns it was deposed.
        """
        state = self._origins.get(record.origin)
        if state is not None and record.epoch < state.epoch:
            return _fenced(record, state.epoch)
        if state is None or record.command_id > state.last_id:
            return Judgement(Verdict.NEW)
        journaled = self._recent.get((record.origin, record.command_id))
        if journaled is None and record.command_id < state.complete_from:
            return Judgement(Verdict.LOOK_UP)
        return judge_against(record, journaled, state.last_id)
