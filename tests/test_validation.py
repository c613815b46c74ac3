"""The reading rules at their boundaries, without a server (controller/api/validation.py).

What the databases can store is the rule: SQLite and PostgreSQL must accept
exactly the same readings, so a value one of them would refuse never reaches
a commit group (tests/test_controller.py checks the same over gRPC).
"""

from __future__ import annotations

import pytest

from controller.api.telemetry import _StreamReader
from controller.api.validation import check_identity, reading_timestamp
from controller.errors import InvalidReading
from workcell.timeconv import MAX_TIMESTAMP_US, MIN_TIMESTAMP_US, US_PER_SECOND
from workcell.v1 import telemetry_pb2

FIRST_SECOND = -62_135_596_800  # 0001-01-01T00:00:00Z
LAST_SECOND = 253_402_300_799  # 9999-12-31T23:59:59Z
# A clock late enough, and a skew large enough, that only the range limits apply.
FAR_FUTURE_US = MAX_TIMESTAMP_US
SKEW_US = 10**18


def reading(seconds: int, nanos: int = 0, *, boot_id: str = "b1") -> telemetry_pb2.Reading:
    made = telemetry_pb2.Reading(sensor_id="s1", boot_id=boot_id, seq=1, payload=1)
    made.timestamp.seconds = seconds
    made.timestamp.nanos = nanos
    return made


@pytest.mark.parametrize(
    ("seconds", "nanos", "expected_us"),
    [
        (FIRST_SECOND, 0, MIN_TIMESTAMP_US),
        (LAST_SECOND, 999_999_999, MAX_TIMESTAMP_US),
        (0, 999_999_999, 999_999),
    ],
)
def test_the_ends_of_the_timestamp_range_are_accepted(
    seconds: int, nanos: int, expected_us: int
) -> None:
    got = reading_timestamp(reading(seconds, nanos), now_us=FAR_FUTURE_US, max_skew_us=SKEW_US)
    assert got == expected_us
    assert -(2**63) <= got < 2**63


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [
        (FIRST_SECOND - 1, 999_999_999),
        (LAST_SECOND + 1, 0),
        (-(10**13), 0),  # microseconds below -2^63: what the issue found
        (-(2**63), 0),
        (2**63 - 1, 0),
        (0, -1),
        (0, 1_000_000_000),
        (0, -(2**31)),
    ],
)
def test_timestamps_the_databases_cannot_hold_are_invalid(seconds: int, nanos: int) -> None:
    with pytest.raises(InvalidReading) as caught:
        reading_timestamp(reading(seconds, nanos), now_us=FAR_FUTURE_US, max_skew_us=SKEW_US)
    assert caught.value.field == "timestamp"
    assert "'s1'" in str(caught.value)


@pytest.mark.parametrize(
    "boot_id",
    ["b\x00", "\x00", "x" * 63 + "\x00", "\u00e9" * 65, ""],
)
def test_boot_ids_a_database_refuses_are_invalid(boot_id: str) -> None:
    with pytest.raises(InvalidReading) as caught:
        check_identity("s1", boot_id)
    assert caught.value.field == "boot_id"
    assert caught.value.sensor_id == "s1"


def test_a_boot_id_is_measured_in_characters_not_bytes() -> None:
    check_identity("s1", "\u00e9" * 64)  # 128 bytes of UTF-8, 64 characters: fits varchar(64)


@pytest.mark.parametrize(
    "bad",
    [
        reading(-(10**13)),
        reading(FIRST_SECOND - 1),
        reading(0, -1),
        reading(1, 1_000_000_000),
        reading(1, boot_id="b1\x00"),
    ],
)
def test_ingest_takes_the_readings_before_a_bad_one_and_stops_there(
    bad: telemetry_pb2.Reading,
) -> None:
    # The stream reader's inline checks must send every such reading to the
    # rules above, also after the identity was checked once.
    now = 1_700_000_000 * US_PER_SECOND
    good = [reading(1_700_000_000, boot_id=bad.boot_id.replace("\x00", "")) for _ in range(3)]
    request = telemetry_pb2.StreamReadingsRequest(readings=[*good, bad, *good])
    rows, problem = _StreamReader(lambda: now, 5 * US_PER_SECOND).rows(request)
    assert len(rows) == 3
    assert problem is not None
    assert problem.field in ("timestamp", "boot_id")


def test_a_reading_too_far_ahead_is_named_with_the_latest_timestamp_accepted() -> None:
    now = 1_700_000_000 * US_PER_SECOND
    ahead = reading(1_700_000_060)
    ahead.seq = 42
    with pytest.raises(InvalidReading) as caught:
        reading_timestamp(ahead, now_us=now, max_skew_us=5 * US_PER_SECOND)
    # What the sender needs to drop it, and what it would refuse likewise.
    assert (caught.value.seq, caught.value.latest_us) == (42, now + 5 * US_PER_SECOND)
    with pytest.raises(InvalidReading) as unset:
        reading_timestamp(
            telemetry_pb2.Reading(sensor_id="s1", boot_id="b", seq=7), now_us=now, max_skew_us=0
        )
    assert (unset.value.seq, unset.value.latest_us) == (7, None)
    with pytest.raises(InvalidReading) as identity:
        check_identity("bad id", "b")
    assert identity.value.seq is None  # every reading of the run shares it
