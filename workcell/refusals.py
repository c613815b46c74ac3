"""Which reading the controller refused: trailing metadata of an ``INVALID_ARGUMENT`` stream.

The controller stops reading a stream at its first invalid reading (those
before it are stored) and fails it with ``INVALID_ARGUMENT``. The message is
for people; the trailing metadata is for the sender, so that it can drop the
refused reading and deliver the rest instead of resending it for ever:

- ``workcell-invalid-seq``: the refused reading's ``seq`` (absent when the
  fault is the sensor_id or boot_id, which all readings of a run share);
- ``workcell-latest-timestamp-us``: with a reading refused for being too far
  in the future, the latest timestamp (µs since the Unix epoch) the
  controller accepted at that moment. Readings stamped later would be refused
  too; the sender need not send them to learn that.

Pure: both sides use it, neither depends on the other.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["INVALID_SEQ_KEY", "LATEST_TIMESTAMP_KEY", "Refusal", "parse_refusal"]

INVALID_SEQ_KEY = "workcell-invalid-seq"
LATEST_TIMESTAMP_KEY = "workcell-latest-timestamp-us"


@dataclass(frozen=True, slots=True)
class Refusal:
    """One refused reading, and the controller's limit when it was refused for its timestamp."""

    seq: int
    latest_us: int | None = None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """As trailing metadata."""
        pairs = [(INVALID_SEQ_KEY, str(self.seq))]
        if self.latest_us is not None:
            pairs.append((LATEST_TIMESTAMP_KEY, str(self.latest_us)))
        return tuple(pairs)


def parse_refusal(metadata: Iterable[Any] | None) -> Refusal | None:
    """The :class:`Refusal` in trailing ``metadata``, or None when it names no reading.

    ``metadata``: (key, value) pairs, as grpc gives them (typed loosely: the
    stubs describe them as objects, grpc.aio yields tuples).
    """
    values: dict[str, str] = {}
    for key, value in metadata or ():
        if key in (INVALID_SEQ_KEY, LATEST_TIMESTAMP_KEY) and isinstance(value, str):
            values[key] = value
    try:
        seq = int(values[INVALID_SEQ_KEY])
        latest = values.get(LATEST_TIMESTAMP_KEY)
        return Refusal(seq, int(latest) if latest is not None else None)
    except (KeyError, ValueError):
        return None
