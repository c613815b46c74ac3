"""Readings a sensor holds until the controller acknowledges them: pure bookkeeping.

Every reading is kept from creation until a ``StreamReadingsResponse`` covers
it. Readings are written on one stream at a time; each stream's response
acknowledges exactly the readings written on it. So the buffer keeps its items
oldest first in *segments*, each either unsent or in flight on one stream:

    [stream 7: r1 r2 r3] [stream 8: r4 r5] [unsent: r6 r7 ...]

``take`` moves the oldest unsent items onto the stream being written, ``ack``
forgets a stream's items, and ``fail`` turns them back into unsent items *in
place*, so a resend goes out oldest first, before newer readings. The buffer
is bounded: appending to a full buffer drops the oldest item, whatever its
state, and counts it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["PendingBuffer"]

T = TypeVar("T")


class _Segment(Generic[T]):
    """Consecutive items that share a state: unsent (``stream is None``) or in flight."""

    __slots__ = ("items", "stream")

    def __init__(self, stream: int | None, items: deque[T]) -> None:
        self.stream = stream
        self.items = items


class PendingBuffer(Generic[T]):
    """Unacknowledged items, oldest first, at most ``capacity`` of them."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._segments: deque[_Segment[T]] = deque()
        self._size = 0
        self._unsent = 0
        self.dropped = 0
        """Items dropped so far because the buffer was full."""
        self.acked = 0
        """Items removed so far by :meth:`ack`."""

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[T]:
        """Every held item, oldest first (for inspection and tests)."""
        for segment in self._segments:
            yield from segment.items

    @property
    def unsent(self) -> int:
        """Items not written on any open stream (new, or back from a failed stream)."""
        return self._unsent

    @property
    def in_flight(self) -> int:
        """Items written on a stream whose response has not arrived."""
        return self._size - self._unsent

    def append(self, item: T) -> int:
        """Add a new (unsent) item; returns how many old items were dropped for it (0 or 1)."""
        last = self._segments[-1] if self._segments else None
        if last is not None and last.stream is None:
            last.items.append(item)
        else:
            self._segments.append(_Segment(None, deque((item,))))
        self._size += 1
        self._unsent += 1
        dropped = 0
        while self._size > self.capacity:
            self._drop_oldest()
            dropped += 1
        return dropped

    def _drop_oldest(self) -> None:
        while not self._segments[0].items:
            self._segments.popleft()
        segment = self._segments[0]
        segment.items.popleft()
        self._size -= 1
        if segment.stream is None:
            self._unsent -= 1
        if not segment.items:
            self._segments.popleft()
        self.dropped += 1

    def take(self, stream: int, limit: int) -> list[T]:
        """Up to ``limit`` of the oldest unsent items, now in flight on ``stream``."""
        taken: list[T] = []
        segments = self._segments
        index = 0
        while len(taken) < limit and index < len(segments):
            source = segments[index]
            if source.stream is not None or not source.items:
                index += 1
                continue
            count = min(limit - len(taken), len(source.items))
            chunk = [source.items.popleft() for _ in range(count)]
            taken.extend(chunk)
            # Keep the taken items where they were in age order, next to the
            # same stream's earlier items when they are adjacent.
            previous = segments[index - 1] if index > 0 else None
            if previous is not None and previous.stream == stream:
                previous.items.extend(chunk)
            else:
                segments.insert(index, _Segment(stream, deque(chunk)))
                index += 1
            if not source.items:
                del segments[index]
        self._unsent -= len(taken)
        return taken

    def ack(self, stream: int) -> int:
        """Forget the items in flight on ``stream`` (stored by the controller); returns how many."""
        kept: deque[_Segment[T]] = deque()
        removed = 0
        for segment in self._segments:
            if segment.stream == stream:
                removed += len(segment.items)
            else:
                kept.append(segment)
        self._segments = kept
        self._size -= removed
        self.acked += removed
        return removed

    def fail(self, stream: int) -> int:
        """Make the items of a failed ``stream`` unsent again, keeping their age order."""
        returned = 0
        for segment in self._segments:
            if segment.stream == stream:
                segment.stream = None
                returned += len(segment.items)
        self._unsent += returned
        return returned
