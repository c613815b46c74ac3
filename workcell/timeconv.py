"""Conversions between the time representations the cell uses.

Inside the services time is an ``int`` of microseconds since the Unix epoch
(UTC): exact, cheap to compare and to store. Timestamps appear on the wire as
``google.protobuf.Timestamp`` and for people as ISO 8601 UTC strings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

__all__ = [
    "MAX_TIMESTAMP_SECONDS",
    "MAX_TIMESTAMP_US",
    "MIN_TIMESTAMP_SECONDS",
    "MIN_TIMESTAMP_US",
    "NANOS_PER_SECOND",
    "US_PER_SECOND",
    "Clock",
    "from_datetime",
    "from_iso",
    "from_timestamp",
    "now_us",
    "timestamp_range_problem",
    "to_datetime",
    "to_iso",
    "to_timestamp",
]

US_PER_SECOND = 1_000_000
# The range google.protobuf.Timestamp defines: 0001-01-01T00:00:00Z to
# 9999-12-31T23:59:59.999999999Z. Every time in it is a 64-bit count of
# microseconds (the databases' BIGINT); the int64 seconds on the wire are not:
# below about -9.2e12 s the microseconds overflow.
MIN_TIMESTAMP_SECONDS = -62_135_596_800
MAX_TIMESTAMP_SECONDS = 253_402_300_799
NANOS_PER_SECOND = 1_000_000_000
MIN_TIMESTAMP_US = MIN_TIMESTAMP_SECONDS * US_PER_SECOND
MAX_TIMESTAMP_US = (MAX_TIMESTAMP_SECONDS + 1) * US_PER_SECOND - 1

# A clock returns the current time in microseconds since the epoch; services
# take one as an argument so tests can drive time by hand.
Clock = Callable[[], int]


def now_us() -> int:
    """The wall clock, in microseconds since the epoch."""
    return time.time_ns() // 1000


def timestamp_range_problem(ts: Timestamp) -> str | None:
    """Why ``ts`` is not a valid Timestamp (years 1-9999, nanos below a second), or None."""
    if not MIN_TIMESTAMP_SECONDS <= ts.seconds <= MAX_TIMESTAMP_SECONDS:
        return f"seconds {ts.seconds} is outside years 1-9999"
    if not 0 <= ts.nanos < NANOS_PER_SECOND:
        return f"nanos {ts.nanos} is outside 0-999999999"
    return None


def from_timestamp(ts: Timestamp) -> int:
    """Microseconds since the epoch of a protobuf Timestamp."""
    return ts.seconds * US_PER_SECOND + ts.nanos // 1000


def to_timestamp(us: int) -> Timestamp:
    """A protobuf Timestamp for microseconds since the epoch."""
    stamp = Timestamp()
    set_timestamp(stamp, us)
    return stamp


def set_timestamp(field: Timestamp, us: int) -> None:
    """Set a message's Timestamp field (``message.issued_at``) in place to ``us``: half the
    time of building one with :func:`to_timestamp` and copying it in."""
    seconds, micros = divmod(us, US_PER_SECOND)
    field.seconds, field.nanos = seconds, micros * 1000


def to_datetime(us: int) -> datetime:
    """An aware UTC datetime for microseconds since the epoch."""
    seconds, micros = divmod(us, US_PER_SECOND)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)


def from_datetime(dt: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is taken as UTC."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * US_PER_SECOND + delta.microseconds


def to_iso(us: int) -> str:
    """ISO 8601 UTC with microseconds and a ``Z`` suffix."""
    return to_datetime(us).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def from_iso(text: str) -> int:
    """Parse ISO 8601 (``Z`` or an offset; no offset means UTC)."""
    return from_datetime(datetime.fromisoformat(text.strip()))
