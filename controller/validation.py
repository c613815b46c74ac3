"""Validation of incoming readings (pure: the clock value is passed in)."""

from __future__ import annotations

import re

from controller.errors import InvalidReading
from workcell.timeconv import from_timestamp
from workcell.v1 import telemetry_pb2

__all__ = ["MAX_SEQ", "SENSOR_ID_PATTERN", "check_reading"]

SENSOR_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
MAX_BOOT_ID_LENGTH = 64
# seq is a uint64 on the wire but SQL integers are signed 64-bit.
MAX_SEQ = 2**63 - 1


def check_reading(reading: telemetry_pb2.Reading, *, now_us: int, max_skew_us: int) -> int:
    """Return the reading's timestamp in microseconds, or raise InvalidReading.

    The message names the field and the sensor, so the sensor's operator can
    tell what to fix from the gRPC status alone.
    """
    sensor_id = reading.sensor_id
    if not SENSOR_ID_PATTERN.fullmatch(sensor_id):
        raise InvalidReading(
            f"sensor_id {sensor_id[:80]!r} is invalid: it must be 1-64 characters "
            "from [A-Za-z0-9._-]",
            field="sensor_id",
            sensor_id=sensor_id,
        )
    if not reading.boot_id or len(reading.boot_id) > MAX_BOOT_ID_LENGTH:
        raise InvalidReading(
            f"boot_id of sensor {sensor_id!r} must be 1-{MAX_BOOT_ID_LENGTH} characters",
            field="boot_id",
            sensor_id=sensor_id,
        )
    if reading.seq > MAX_SEQ:
        raise InvalidReading(
            f"seq {reading.seq} of sensor {sensor_id!r} exceeds {MAX_SEQ}",
            field="seq",
            sensor_id=sensor_id,
        )
    if not reading.HasField("timestamp"):
        raise InvalidReading(
            f"timestamp of sensor {sensor_id!r} (seq {reading.seq}) is not set",
            field="timestamp",
            sensor_id=sensor_id,
        )
    timestamp_us = from_timestamp(reading.timestamp)
    if timestamp_us > now_us + max_skew_us:
        raise InvalidReading(
            f"timestamp of sensor {sensor_id!r} (seq {reading.seq}) is "
            f"{(timestamp_us - now_us) / 1e6:.3f} s in the future "
            f"(at most {max_skew_us / 1e6:g} s allowed)",
            field="timestamp",
            sensor_id=sensor_id,
        )
    return timestamp_us
