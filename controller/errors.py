"""The controller's errors, translated to gRPC statuses at the servicer boundary.

ControllerError
├── InvalidReading   a reading fails validation, or the database refused one of
│                    its values (INVALID_ARGUMENT; names the field or the value)
├── StorageError     the database refused a write (UNAVAILABLE; the client resends)
│   ├── RejectedWrite the database refused a value of one operation (a data
│   │   │            error): that operation failed, the rest of its group committed
│   │   ├── CommandConflict the command's id holds another command already
│   │   └── NotLeader  a window close by a node that no longer leads (or whose
│   │                view is behind another leader's): nothing recorded
│   ├── CommitOutcomeUnknown the connection was lost during COMMIT: whether the
│   │                transaction committed is to be asked of the database
│   └── DatabaseFileMoved the SQLite file written is no longer the one at its
│                    path (deleted or replaced): nothing written is acknowledged
├── DatabaseOpenError the database cannot be opened or migrated at start (exit 1)
│   └── DatabaseInUse another controller runs on the same SQLite file
└── CommandRefused   the manipulator refused a command (its ack carries an error); it stays pending
    └── CommandFenced the refusal is for the command's epoch: a newer leader has sent commands,
                     this node was deposed and its link stops
"""

from __future__ import annotations

__all__ = [
    "CommandConflict",
    "CommandFenced",
    "CommandRefused",
    "CommitOutcomeUnknown",
    "ControllerError",
    "DatabaseFileMoved",
    "DatabaseInUse",
    "DatabaseOpenError",
    "InvalidReading",
    "NotLeader",
    "RejectedWrite",
    "StorageError",
]


class ControllerError(Exception):
    """Base of the controller's own errors."""


class InvalidReading(ControllerError, ValueError):
    """A reading that must not be stored; ``field`` names the offending field.

    ``seq`` is the refused reading's, when one reading is at fault (not for a
    bad sensor_id or boot_id, which every reading of the run shares);
    ``latest_us`` is the latest timestamp accepted when the reading was refused
    for being too far in the future. Both are told to the sender, so that it
    can drop what is refused and deliver the rest.
    """

    def __init__(
        self,
        message: str,
        *,
        field: str,
        sensor_id: str = "",
        seq: int | None = None,
        latest_us: int | None = None,
    ) -> None:
        super().__init__(message)
        self.field = field
        self.sensor_id = sensor_id
        self.seq = seq
        self.latest_us = latest_us


class StorageError(ControllerError):
    """A write to the database failed; nothing of the failed batch was committed."""


class RejectedWrite(StorageError):
    """The database refused a value of this write: retrying it as it is cannot succeed."""


class CommandConflict(RejectedWrite):
    """A command's id already holds a different command: it is not recorded.

    The same command again (a retry after a commit whose outcome was unknown)
    is not a conflict: it is read back and taken as recorded.
    """


class NotLeader(RejectedWrite):
    """A window close refused by the database: this node's term is over, or another
    leader decided meanwhile. Nothing of it is recorded; the node stops deciding."""


class CommitOutcomeUnknown(StorageError):
    """The connection was lost while the COMMIT was on its way: it may or may not have committed.

    ``mark`` is the writer's commit mark the transaction set (``commit_marks``), to
    read back on another connection; never retried blindly.
    """

    def __init__(self, mark: int, cause: BaseException) -> None:
        super().__init__(f"the connection was lost during COMMIT ({cause})")
        self.mark = mark


class DatabaseFileMoved(StorageError):
    """The SQLite file the writer writes is no longer the file at its path.

    Deleted (``rm -rf`` of its folder), moved or replaced: what is committed
    into it would be gone at the next start, so none of it is acknowledged.
    """


class DatabaseOpenError(ControllerError):
    """The database is unreachable, refuses us, or has a schema this version does not know."""


class DatabaseInUse(DatabaseOpenError):
    """Another controller process holds the SQLite file's lock (one controller per file)."""


class CommandRefused(ControllerError):
    """The manipulator answered a command with an error: it is not journaled.

    ``reason`` is the manipulator's own words (the ack's ``error``).
    """

    def __init__(self, command_id: int, reason: str) -> None:
        super().__init__(f"the manipulator refused command {command_id}: {reason}")
        self.command_id = command_id
        self.reason = reason


class CommandFenced(CommandRefused):
    """The manipulator refused a command because its epoch is below one it has already accepted.

    ``epoch`` is the link's (the command's), ``superseded_by`` the higher
    epoch the manipulator named (the ack's ``superseded_by_epoch``): the node
    of that epoch leads now, so this one must stop sending.
    """

    def __init__(self, command_id: int, reason: str, *, epoch: int, superseded_by: int) -> None:
        super().__init__(command_id, reason)
        self.epoch = epoch
        self.superseded_by = superseded_by
