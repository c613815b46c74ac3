"""Validation of incoming readings (pure: the clock value is passed in).

Split in two because a stream nearly always carries one sensor run: ingest
checks a (sensor_id, boot_id) pair once per stream, and only the per-reading
fields for every reading.

The rules are what both databases can store, checked here so that SQLite and
PostgreSQL accept exactly the same readings: a value one of them refuses
would otherwise fail a whole commit group (see :mod:`controller.storage.writer`).
"""

from __future__ import annotations

import re

from controller.errors import InvalidReading
from workcell.timeconv import US_PER_SECOND, timestamp_range_problem
from workcell.v1 import telemetry_pb2

__all__ = [
    "MAX_SEQ",
    "SENSOR_ID_PATTERN",
    "check_identity",
    "reading_timestamp",
]

SENSOR_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Characters, as PostgreSQL's varchar(64) counts them (not UTF-8 bytes).
MAX_BOOT_ID_LENGTH = 64
# seq is a uint64 on the wire but SQL integers are signed 64-bit.
MAX_SEQ = 2**63 - 1


def check_identity(sensor_id: str, boot_id: str) -> None:
    """Raise InvalidReading unless ``sensor_id`` and ``boot_id`` are acceptable.

    The message names the field and the sensor, so the sensor's operator can
    tell what to fix from the gRPC status alone.
    """
    if not SENSOR_ID_PATTERN.fullmatch(sensor_id):
        raise InvalidReading(
            f"sensor_id {sensor_id[:80]!r} is invalid: it must be 1-64 characters "
            "from [A-Za-z0-9._-]",
            field="sensor_id",
            sensor_id=sensor_id,
        )
    if not boot_id or len(boot_id) > MAX_BOOT_ID_LENGTH:
        raise InvalidReading(
            f"boot_id of sensor {sensor_id!r} must be 1-{MAX_BOOT_ID_LENGTH} characters",
            field="boot_id",
            sensor_id=sensor_id,
        )
    # PostgreSQL text cannot hold NUL (SQLite can): refused on both. A string
    # that came off the wire is valid UTF-8 (protobuf checks), so NUL is the
    # only character PostgreSQL would refuse.
    if "\x00" in boot_id:
        raise InvalidReading(
            f"boot_id of sensor {sensor_id!r} contains a NUL character",
            field="boot_id",
            sensor_id=sensor_id,
        )


def reading_timestamp(reading: telemetry_pb2.Reading, *, now_us: int, max_skew_us: int) -> int:
    """The reading's timestamp in microseconds; InvalidReading for a bad seq or timestamp."""
    if reading.seq > MAX_SEQ:
        raise InvalidReading(
            f"seq {reading.seq} of sensor {reading.sensor_id!r} exceeds {MAX_SEQ}",
            field="seq",
            sensor_id=reading.sensor_id,
            seq=reading.seq,
        )
    if not reading.HasField("timestamp"):
        raise InvalidReading(
            f"timestamp of sensor {reading.sensor_id!r} (seq {reading.seq}) is not set",
            field="timestamp",
            sensor_id=reading.sensor_id,
            seq=reading.seq,
        )
    timestamp = reading.timestamp
    if (problem := timestamp_range_problem(timestamp)) is not None:
        raise InvalidReading(
            f"timestamp of sensor {reading.sensor_id!r} (seq {reading.seq}) is out of range: "
            f"{problem}",
            field="timestamp",
            sensor_id=reading.sensor_id,
            seq=reading.seq,
        )
    timestamp_us = timestamp.seconds * US_PER_SECOND + timestamp.nanos // 1000
    if timestamp_us > now_us + max_skew_us:
        raise InvalidReading(
            f"timestamp of sensor {reading.sensor_id!r} (seq {reading.seq}) is "
            f"{(timestamp_us - now_us) / 1e6:.3f} s in the future "
            f"(at most {max_skew_us / 1e6:g} s allowed)",
            field="timestamp",
            sensor_id=reading.sensor_id,
            seq=reading.seq,
            latest_us=now_us + max_skew_us,
        )
    return timestamp_us
