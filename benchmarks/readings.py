"""Pre-serialized ``StreamReadingsRequest`` messages, so a load generator costs little CPU.

A template message is serialized once with a placeholder boot id and creation second; each
stream gets fresh copies by byte replacement (C speed) with its own boot id, so the key
(sensor_id, boot_id, seq) stays unique, and the current second as the readings' timestamp.
Pure: no I/O.
"""

from __future__ import annotations

import random

from google.protobuf.timestamp_pb2 import Timestamp

from workcell.v1 import telemetry_pb2

__all__ = ["ExactReadings", "MessageTemplate"]

_BOOT_PLACEHOLDER = "B" * 32  # the length of uuid4().hex, so sizes never change
# Far enough from now that its varint has the same 5 bytes as any current second.
_SECOND_PLACEHOLDER = 2_000_000_000


def _timestamp_field(seconds: int) -> bytes:
    # Reading.timestamp is field 5: tag, length, then the Timestamp's own bytes.
    inner = Timestamp(seconds=seconds).SerializeToString()
    if len(inner) != 6:
        # Byte replacement keeps every length prefix valid only for 5-byte varints.
        raise ValueError(f"second {seconds} is outside the 5-byte varint range of the template")
    return bytes([0x2A, len(inner)]) + inner


class MessageTemplate:
    """``count`` messages of ``batch`` readings each, seq 1.. across them, per stream."""

    def __init__(self, sensor_id: str, *, batch: int, count: int, seed: int = 1) -> None:
        rng = random.Random(seed)
        messages = []
        seq = 0
        for _ in range(count):
            request = telemetry_pb2.StreamReadingsRequest()
            for _ in range(batch):
                seq += 1
                request.readings.add(
                    sensor_id=sensor_id,
                    boot_id=_BOOT_PLACEHOLDER,
                    seq=seq,
                    payload=rng.randrange(0, 1000),
                    timestamp=Timestamp(seconds=_SECOND_PLACEHOLDER),
                )
            messages.append(request.SerializeToString())
        self.batch = batch
        self._messages = messages
        self._boot = _BOOT_PLACEHOLDER.encode()
        self._second = _timestamp_field(_SECOND_PLACEHOLDER)

    def __len__(self) -> int:
        return len(self._messages)

    def message(self, index: int, boot_id: str, second: int) -> bytes:
        """Message ``index`` with the given boot id (32 characters) and creation second."""
        return (
            self._messages[index]
            .replace(self._boot, boot_id.encode())
            .replace(self._second, _timestamp_field(second))
        )

    def stream(self, boot_id: str, second: int) -> list[bytes]:
        """Every message, for one stream."""
        boot = boot_id.encode()
        stamp = _timestamp_field(second)
        return [m.replace(self._boot, boot).replace(self._second, stamp) for m in self._messages]


class ExactReadings:
    """One reading per message, stamped with the time it is sent, to the microsecond.

    For latency runs: a template's creation second is too coarse to time a commit, and a
    timestamp's varint length changes with its nanoseconds, so each message is serialized
    afresh (one reused message object: a few microseconds each).
    """

    def __init__(self, sensor_id: str, *, seed: int = 1) -> None:
        self._rng = random.Random(seed)
        self._request = telemetry_pb2.StreamReadingsRequest()
        self._reading = self._request.readings.add(sensor_id=sensor_id)

    def message(self, boot_id: str, seq: int, now_ns: int) -> bytes:
        """Reading ``seq`` of run ``boot_id``, created at ``now_ns`` (Unix ns)."""
        reading = self._reading
        reading.boot_id = boot_id
        reading.seq = seq
        reading.payload = self._rng.randrange(0, 1000)
        # Whole microseconds, as the controller stores them.
        reading.timestamp.FromMicroseconds(now_ns // 1000)
        return self._request.SerializeToString()
