"""The controller's errors, translated to gRPC statuses at the servicer boundary.

ControllerError
├── InvalidReading   a reading fails validation (INVALID_ARGUMENT; names the field)
├── StorageError     the database refused a write (UNAVAILABLE; the client resends)
└── DatabaseOpenError the database cannot be opened or migrated at start (exit 1)
"""

from __future__ import annotations

__all__ = ["ControllerError", "DatabaseOpenError", "InvalidReading", "StorageError"]


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
