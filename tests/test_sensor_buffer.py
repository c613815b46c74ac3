"""The sensor's pending-readings buffer: pure bookkeeping, no sockets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


def test_a_full_buffer_evicts_the_oldest_even_in_flight() -> None:
    buffer = filled(4, range(1, 5))
    assert buffer.take(1, 2) == [1, 2]
    buffer.append(5)
    assert list(buffer) == [2, 3, 4, 5]
    assert (buffer.in_flight, buffer.unsent) == (1, 3)
    assert buffer.ack(1) == 2  # what is left of the stream, and the evicted item
    buffer = filled(4, range(1, 5))
    buffer.take(1, 2)
    buffer.append(5)
    # Item 1 is no longer held, but its stream may still be acknowledged.
    assert (buffer.dropped, buffer.evicted) == (0, 1)
    assert buffer.ack(1) == 2  # what is left of the stream, and the evicted item
    assert list(buffer) == [3, 4, 5]


def test_an_item_evicted_in_flight_is_acknowledged_with_its_stream() -> None:
    # --buffer 1: every new reading evicts the one in flight; all were stored.
    buffer = filled(1, range(1, 2))
    for item in range(1, 6):
        assert buffer.take(item, 1) == [item]
        buffer.append(item + 1)
    assert list(buffer) == [6]
    for stream in range(1, 6):
        buffer.ack(stream)
    assert (buffer.acked, buffer.dropped) == (5, 0)
    assert buffer.evicted == 0


def test_an_item_evicted_in_flight_is_dropped_when_its_stream_fails() -> None:
    buffer = filled(2, range(1, 3))
    assert buffer.take(1, 2) == [1, 2]
    buffer.append(3)
    buffer.append(4)
    assert (buffer.dropped, buffer.evicted) == (0, 2)
    assert buffer.fail(1) == 0  # nothing of it is left to resend
    assert (buffer.acked, buffer.dropped, buffer.evicted) == (0, 2, 0)
    assert list(buffer) == [3, 4]


def test_discard_removes_matching_unsent_items_only() -> None:
    buffer = filled(100, range(1, 11))
    assert buffer.take(1, 3) == [1, 2, 3]
    assert buffer.discard(lambda item: item % 2 == 0) == 4  # 4, 6, 8, 10; 2 is in flight
    assert list(buffer) == [1, 2, 3, 5, 7, 9]
    assert (buffer.unsent, buffer.in_flight) == (3, 3)
    assert buffer.take(2, 10) == [5, 7, 9]
    assert buffer.ack(1) + buffer.ack(2) == 6
    assert len(buffer) == 0


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


# One operation on a buffer: append, take (stream, limit), ack, fail, or discard the even items.
_operations = st.lists(
    st.one_of(
        st.just(("append", 0, 0)),
        st.tuples(st.just("take"), st.integers(1, 4), st.integers(0, 5)),
        st.tuples(st.just("ack"), st.integers(1, 4), st.just(0)),
        st.tuples(st.just("fail"), st.integers(1, 4), st.just(0)),
        st.just(("discard", 0, 0)),
    ),
    max_size=60,
)


@given(capacity=st.integers(1, 6), operations=_operations)
def test_every_item_appended_is_accounted_for_exactly_once(
    capacity: int, operations: list[tuple[str, int, int]]
) -> None:
    # appended = acknowledged + dropped + discarded + held + evicted awaiting their stream
    buffer: PendingBuffer[int] = PendingBuffer(capacity)
    appended = discarded = 0
    acked_streams: set[int] = set()
    for name, stream, limit in operations:
        if name == "append":
            appended += 1
            buffer.append(appended)
        elif name == "take" and stream not in acked_streams:
            buffer.take(stream, limit)
        elif name == "ack":
            buffer.ack(stream)
            acked_streams.add(stream)  # a stream id is never reused once answered
        elif name == "fail":
            buffer.fail(stream)
        elif name == "discard":
            discarded += buffer.discard(lambda item: item % 2 == 0)
        assert len(buffer) <= capacity
        assert buffer.unsent + buffer.in_flight == len(buffer)
        assert appended == (
            buffer.acked + buffer.dropped + discarded + len(buffer) + buffer.evicted
        ), (name, stream, list(buffer))
