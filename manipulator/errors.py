"""The manipulator's errors.

ManipulatorError
 ├── BadCommand       a frame whose payload is not a valid Command (the connection is closed)
 ├── CommandRefused   a valid Command the journal must not take (the ack says so; connection kept);
 │    │               ``reason`` (a RefusalReason) says which kind, for the metrics
 │    └── CommandFenced  its epoch is below one its origin already reached: its sender was deposed
 └── JournalError     the journal file cannot be used
      ├── JournalCorrupt     a complete line of the journal is not a journal record
      ├── JournalDisplaced   the journal's path no longer names the file open (deleted, moved,
      │                      replaced): nothing is acknowledged until it does again
      └── JournalMissing     at start: no journal at the path, but its lock file shows one was there
"""

from __future__ import annotations

import enum

__all__ = [
    "BadCommand",
    "CommandFenced",
    "CommandRefused",
    "JournalCorrupt",
    "JournalDisplaced",
    "JournalError",
    "JournalMissing",
    "ManipulatorError",
    "RefusalReason",
]


class RefusalReason(enum.StrEnum):
    """Why a valid command was refused (the ``reason`` label of the refusal counter)."""

    CONFLICT = "conflict"
    """The journal holds a different command under its (origin, id)."""
    SKIPPED_ID = "skipped_id"
    """Its id is at or below its origin's last, and no command is journaled under it."""
    FENCED = "fenced"
    """Its epoch is below its origin's: its sender was deposed (:class:`CommandFenced`)."""
    BEHIND_REFUSED = "behind_refused"
    """An earlier command of its origin was refused on the same connection, and commands
    are journaled in order (refused by the server, never shown to the journal)."""


class ManipulatorError(Exception):
    """Base of every error the manipulator raises on purpose."""


class BadCommand(ManipulatorError, ValueError):
    """A payload that does not decode to a valid ``Command``; the message names the problem."""


class CommandRefused(ManipulatorError):
    """A command whose (origin, id) the journal holds for a different command, or skipped.

    Nothing is journaled; the message (sent back as the ack's ``error``)
    names the command and the version the journal holds.
    """

    def __init__(
        self, message: str, *, command_id: int, reason: RefusalReason = RefusalReason.CONFLICT
    ) -> None:
        super().__init__(message)
        self.command_id = command_id
        self.reason = reason


class CommandFenced(CommandRefused):
    """A command whose epoch is lower than the highest its origin has reached here.

    A node of a higher epoch (a newer leader of the same database) has
    already sent commands, so this one's sender was deposed: nothing is
    journaled, and resending cannot help. ``epoch`` is the command's,
    ``highest_epoch`` the one that fences it (sent back in the ack's
    ``superseded_by_epoch``).
    """

    def __init__(
        self, message: str, *, command_id: int, origin: str, epoch: int, highest_epoch: int
    ) -> None:
        super().__init__(message, command_id=command_id, reason=RefusalReason.FENCED)
        self.origin = origin
        self.epoch = epoch
        self.highest_epoch = highest_epoch


class JournalError(ManipulatorError):
    """The journal cannot be opened, read or appended to."""


class JournalCorrupt(JournalError):
    """A complete (newline-terminated) journal line is not a valid record.

    A crash mid-write only ever leaves an unterminated tail, which is
    repaired at open; a bad complete line means the file was damaged some
    other way, so the manipulator refuses to guess.
    """


class JournalDisplaced(JournalError):
    """The journal's path no longer names the file the manipulator has open.

    Deleted (the lines would go into an unlinked file, lost at the next
    start), moved (into a file nobody looks at) or replaced by another file.
    Nothing is journaled or acknowledged until the path names the open file
    again; ``problem`` says which of the three it is, for logging an episode once.
    """

    def __init__(self, message: str, *, problem: str) -> None:
        super().__init__(message)
        self.problem = problem


class JournalMissing(JournalError):
    """At start: no journal at the path, but the lock file beside it shows there was one.

    Starting an empty journal there would journal again every resend of a
    command the lost journal held, so it is only done when asked for (the
    lock file removed).
    """
