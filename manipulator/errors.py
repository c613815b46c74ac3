"""The manipulator's errors.

ManipulatorError
 ├── BadCommand       a frame whose payload is not a valid Command (the connection is closed)
 ├── CommandRefused   a valid Command the journal must not take (the ack says so; connection kept)
 └── JournalError     the journal file cannot be used
      └── JournalCorrupt   a complete line of the journal is not a journal record
"""

from __future__ import annotations

__all__ = ["BadCommand", "CommandRefused", "JournalCorrupt", "JournalError", "ManipulatorError"]


class ManipulatorError(Exception):
    """Base of every error the manipulator raises on purpose."""


class BadCommand(ManipulatorError, ValueError):
    """A payload that does not decode to a valid ``Command``; the message names the problem."""


class CommandRefused(ManipulatorError):
    """A command whose (origin, id) the journal holds for a different command, or skipped.

    Nothing is journaled; the message (sent back as the ack's ``error``)
    names the command and the version the journal holds.
    """

    def __init__(self, message: str, *, command_id: int) -> None:
        super().__init__(message)
        self.command_id = command_id


class JournalError(ManipulatorError):
    """The journal cannot be opened, read or appended to."""


class JournalCorrupt(JournalError):
    """A complete (newline-terminated) journal line is not a valid record.

    A crash mid-write only ever leaves an unterminated tail, which is
    repaired at open; a bad complete line means the file was damaged some
    other way, so the manipulator refuses to guess.
    """
