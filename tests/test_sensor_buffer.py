"""The sensor's pending-readings buffer: pure bookkeeping, no sockets."""

from __future__ import annotations

import pytest

from sensor.buffer import PendingBuffer


def filled(capacity: int, items: range) -> PendingBuffer[int]:
    buffer: PendingBuffer[int] = PendingBuffer(capacity)
    for item in items:
        buffer.append(item)
    return buffer


def test_full_buffer_drops_the_oldest_and_counts() -> None:
    buffer = filled(5, range(1, 6))
    assert buffer.append(6) == 1
    assert buffer.append(7) == 1
    assert list(buffer) == [3, 4, 5, 6, 7]
    assert buffer.dropped == 2
    assert len(buffer) == 5


def test_drop_oldest_also_drops_in_flight_items() -> None:
    buffer = filled(4, range(1, 5))
    assert buffer.take(1, 2) == [1, 2]
    buffer.append(5)
    assert list(buffer) == [2, 3, 4, 5]
    assert (buffer.in_flight, buffer.unsent) == (1, 3)
    assert buffer.ack(1) == 1  # only what is left of the stream
    assert list(buffer) == [3, 4, 5]


def test_ack_removes_the_streams_items_only() -> None:
    buffer = filled(100, range(1, 11))
    assert buffer.take(1, 3) == [1, 2, 3]
    assert buffer.take(2, 4) == [4, 5, 6, 7]
    assert buffer.ack(2) == 4  # a later stream may be answered first
    assert list(buffer) == [1, 2, 3, 8, 9, 10]
    assert buffer.ack(1) == 3
    assert list(buffer) == [8, 9, 10]
    assert buffer.acked == 7
    assert (buffer.unsent, buffer.in_flight) == (3, 0)
    assert buffer.ack(1) == 0  # acknowledging twice is harmless


def test_failed_stream_is_resent_first_oldest_first() -> None:
    buffer = filled(100, range(1, 7))
    assert buffer.take(1, 4) == [1, 2, 3, 4]
    buffer.append(7)
    assert buffer.fail(1) == 4
    assert (buffer.unsent, buffer.in_flight) == (7, 0)
    assert buffer.take(2, 5) == [1, 2, 3, 4, 5]
    assert buffer.take(2, 5) == [6, 7]
    assert buffer.ack(2) == 7
    assert len(buffer) == 0


def test_failed_older_stream_goes_before_a_newer_one_in_flight() -> None:
    buffer = filled(100, range(1, 10))
    buffer.take(1, 3)  # 1 2 3
    buffer.take(2, 3)  # 4 5 6, still in flight
    buffer.fail(1)
    assert buffer.take(3, 10) == [1, 2, 3, 7, 8, 9]
    assert buffer.ack(2) == 3
    assert buffer.ack(3) == 6
    assert len(buffer) == 0


def test_take_single_items_across_streams() -> None:
    buffer: PendingBuffer[int] = PendingBuffer(100)
    stream = 1
    for item in range(1, 31):
        buffer.append(item)
        assert buffer.take(stream, 1) == [item]
        if item % 10 == 0:
            stream += 1
    assert buffer.in_flight == 30
    buffer.fail(2)
    buffer.ack(1)
    assert list(buffer) == list(range(11, 31))
    assert buffer.take(4, 100) == list(range(11, 21))
    assert buffer.ack(3) == 10
    assert buffer.ack(4) == 10
    assert len(buffer) == 0


def test_take_respects_the_limit_and_an_empty_buffer() -> None:
    buffer: PendingBuffer[int] = PendingBuffer(3)
    assert buffer.take(1, 5) == []
    buffer.append(1)
    assert buffer.take(1, 0) == []
    assert buffer.take(1, 5) == [1]


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        PendingBuffer[int](0)
