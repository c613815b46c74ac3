"""``StreamReadingsRequest`` bytes built from readings encoded once: pure, no I/O.

A repeated message field on the wire is just each element as a length-delimited
field, one after another. So a reading is encoded once, when it is added to the
buffer, and a request of any batch is the concatenation of its readings'
fields: no request object is built and nothing is copied or re-serialized when
a reading is (re)sent. The bytes are exactly what
``StreamReadingsRequest(readings=[...]).SerializeToString()`` gives.
"""

from __future__ import annotations

from collections.abc import Iterable

from workcell.v1 import telemetry_pb2

__all__ = ["encode_reading", "request_bytes"]

# Field 1 (``readings``), wire type 2 (length-delimited).
_READINGS_TAG = b"\x0a"


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_reading(reading: telemetry_pb2.Reading) -> bytes:
    """``reading`` as one element of ``StreamReadingsRequest.readings``, ready to concatenate."""
    body = reading.SerializeToString()
    size = len(body)
    if size < 0x80:  # the usual case: a one-byte length
        return _READINGS_TAG + bytes((size,)) + body
    return _READINGS_TAG + _varint(size) + body


def request_bytes(fields: Iterable[bytes]) -> bytes:
    """A serialized ``StreamReadingsRequest`` of readings encoded by :func:`encode_reading`."""
    return b"".join(fields)
