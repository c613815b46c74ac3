"""The controller's errors, translated to gRPC statuses at the servicer boundary.

ControllerError
├── InvalidReading   a reading fails validation (INVALID_ARGUMENT; names the field)
├── StorageError     the database refused a write (UNAVAILABLE; the client resends)
├── DatabaseOpenError the database cannot be opened or migrated at start (exit 1)
└── CommandRefused   the manipulator refused a command (its ack carries an error); it stays pending
"""

from __future__ import annotations

__all__ = [
    "CommandRefused",
    "ControllerError",
    "DatabaseOpenError",
    "InvalidReading",
    "StorageError",
]


class ControllerError(Exception):
    """Base of the controller's own errors."""


class InvalidReading(ControllerError, ValueError):
    """A reading that must not be stored; ``field`` names the offending field."""

    def __init__(self, message: str, *, field: str, sensor_id: str = "") -> None:
        super().__init__(message)
        self.field = field
        self.sensor_id = sensor_id


class StorageError(ControllerError):
    """A write to the database failed; nothing of the failed batch was committed."""


class DatabaseOpenError(ControllerError):
    """The database is unreachable, refuses us, or has a schema this version does not know."""


class CommandRefused(ControllerError):
    """The manipulator answered a command with an error: it is not journaled.

    ``reason`` is the manipulator's own words (the ack's ``error``).
    """

    def __init__(self, command_id: int, reason: str) -> None:
        super().__init__(f"the manipulator refused command {command_id}: {reason}")
        self.command_id = command_id
        self.reason = reason
