"""Readings a sensor holds until the controller acknowledges them: pure bookkeeping.

Every reading is kept from creation until a ``StreamReadingsResponse`` covers
it. Readings are written on one stream at a time; each stream's response
acknowledges exactly the readings written on it. So the buffer keeps its items
oldest first in *segments*, each either unsent or in flight on one stream:

    [stream 7: r1 r2 r3] [stream 8: r4 r5] [unsent: r6 r7 ...]

``take`` moves the oldest unsent items onto the stream being written, ``ack``
forgets a stream's items, and ``fail`` turns them back into unsent items *in
place*, so a resend goes out oldest first, before newer readings.

The buffer is bounded: appending to a full buffer evicts the oldest item,
whatever its state. An unsent item evicted is **dropped** at once. An item in
flight is only *evicted*: it is no longer held (it cannot be resent), but the
stream carrying it may still be acknowledged, so its fate is its stream's:
acknowledged when the stream is, dropped when the stream fails. Every item
appended is thus, at any time, exactly one of: acknowledged, dropped,
discarded (:meth:`discard`), held, or evicted awaiting its stream.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
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
        # stream -> how many of its items were evicted while it was in flight
        self._evicted: dict[int, int] = {}
        self.dropped = 0
        """Items given up because the buffer was full: unsent when evicted, or
        evicted in flight on a stream that then failed."""
        self.acked = 0
        """Items of acknowledged streams (:meth:`ack`), evicted ones included."""

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
        """Items held that were written on a stream whose response has not arrived."""
        return self._size - self._unsent

    @property
    def evicted(self) -> int:
        """Items evicted while in flight whose stream has not been answered yet."""
        return sum(self._evicted.values())

    def append(self, item: T) -> int:
        """Add a new (unsent) item, evicting the oldest one when the buffer is full.

        Returns how many items were dropped for it (0 or 1): an unsent item
        evicted; one in flight is not dropped (yet).
        """
        last = self._segments[-1] if self._segments else None
        if last is not None and last.stream is None:
            last.items.append(item)
        else:
            self._segments.append(_Segment(None, deque((item,))))
        self._size += 1
        self._unsent += 1
        dropped = self.dropped
        while self._size > self.capacity:
            self._evict_oldest()
        return self.dropped - dropped

    def _evict_oldest(self) -> None:
        while not self._segments[0].items:
            self._segments.popleft()
        segment = self._segments[0]
        segment.items.popleft()
        self._size -= 1
        if segment.stream is None:
            self._unsent -= 1
            self.dropped += 1
        else:
            # Its stream may yet be acknowledged: counted when it is answered.
            self._evicted[segment.stream] = self._evicted.get(segment.stream, 0) + 1
        if not segment.items:
            self._segments.popleft()

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
        """Forget the items of ``stream`` (stored by the controller); returns how many.

        The count includes the stream's items evicted while it was in flight.
        """
        kept: deque[_Segment[T]] = deque()
        removed = 0
        for segment in self._segments:
            if segment.stream == stream:
                removed += len(segment.items)
            else:
                kept.append(segment)
        self._segments = kept
        self._size -= removed
        acknowledged = removed + self._evicted.pop(stream, 0)
        self.acked += acknowledged
        return acknowledged

    def fail(self, stream: int) -> int:
        """Make the items of a failed ``stream`` unsent again, keeping their age order.

        Returns how many are unsent again; its items evicted in flight cannot
        be resent, and are dropped.
        """
        returned = 0
        for segment in self._segments:
            if segment.stream == stream:
                segment.stream = None
                returned += len(segment.items)
        self._unsent += returned
        self.dropped += self._evicted.pop(stream, 0)
        return returned

    def discard(self, predicate: Callable[[T], bool]) -> int:
        """Remove the unsent items ``predicate`` picks; returns how many.

        Items in flight are left to their stream's outcome.
        """
        removed = 0
        for segment in self._segments:
            if segment.stream is not None:
                continue
            kept = deque(item for item in segment.items if not predicate(item))
            removed += len(segment.items) - len(kept)
            segment.items = kept
        if removed:
            self._segments = deque(s for s in self._segments if s.items)
            self._size -= removed
            self._unsent -= removed
        return removed
