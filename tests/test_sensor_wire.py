"""sensor.wire: requests built from encoded readings equal protobuf's own serialization."""

from __future__ import annotations

from sensor.wire import encode_reading, request_bytes
from workcell.timeconv import to_timestamp
from workcell.v1 import telemetry_pb2


def _reading(seq: int, *, sensor_id: str = "sensor-1", payload: int = 123) -> telemetry_pb2.Reading:
    return telemetry_pb2.Reading(
        sensor_id=sensor_id,
        boot_id="b" * 32,
        seq=seq,
        payload=payload,
        timestamp=to_timestamp(1_764_000_000_123_456 + seq),
    )


def test_request_equals_protobuf_serialization() -> None:
    readings = [_reading(seq, payload=seq * 7 - 50) for seq in range(1, 11)]
    expected = telemetry_pb2.StreamReadingsRequest(readings=readings).SerializeToString()
    assert request_bytes(encode_reading(r) for r in readings) == expected


def test_long_reading_uses_multibyte_length() -> None:
    # A 64-character sensor id and a large seq push the reading past 127 bytes.
    reading = _reading(2**60, sensor_id="s" * 64, payload=-(2**62))
    assert len(reading.SerializeToString()) >= 0x80
    request = request_bytes([encode_reading(reading), encode_reading(_reading(1))])
    parsed = telemetry_pb2.StreamReadingsRequest.FromString(request)
    assert list(parsed.readings) == [reading, _reading(1)]


def test_empty_request() -> None:
    assert request_bytes([]) == b""
