"""The frame codec, driven without sockets: round trips, every split, limits."""

from __future__ import annotations

import struct

import pytest

from workcell.framing import HEADER_BYTES, MAX_FRAME_BYTES, FrameDecoder, FrameError, encode_frame
from workcell.timeconv import to_timestamp
from workcell.v1 import command_pb2

PAYLOADS = [b"a", b"hello", bytes(range(256)), b"\x00" * 3, b"z" * 1000]


def _stream(payloads: list[bytes]) -> bytes:
    return b"".join(encode_frame(p) for p in payloads)


def test_round_trip_of_a_command() -> None:
    command = command_pb2.Command(
        id=7,
        status=command_pb2.STATUS_UP,
        window_start=to_timestamp(1_700_000_000_000_000),
        window_end=to_timestamp(1_700_000_005_000_000),
        issued_at=to_timestamp(1_700_000_005_250_000),
    )
    frame = encode_frame(command)
    assert struct.unpack(">I", frame[:HEADER_BYTES])[0] == len(frame) - HEADER_BYTES
    (payload,) = FrameDecoder().feed(frame)
    assert command_pb2.Command.FromString(payload) == command


def test_encode_accepts_bytes() -> None:
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"


def test_whole_stream_in_one_feed() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(_stream(PAYLOADS)) == PAYLOADS
    assert decoder.buffered == 0


def test_split_at_every_byte_offset() -> None:
    data = _stream(PAYLOADS)
    for cut in range(len(data) + 1):
        decoder = FrameDecoder()
        got = decoder.feed(data[:cut]) + decoder.feed(data[cut:])
        assert got == PAYLOADS, f"split at {cut}"
        assert decoder.buffered == 0


def test_split_at_every_pair_of_offsets() -> None:
    # Three pieces, over a shorter stream so the quadratic loop stays cheap.
    payloads = [b"ab", b"c", b"defg"]
    data = _stream(payloads)
    for first in range(len(data) + 1):
        for second in range(first, len(data) + 1):
            decoder = FrameDecoder()
            got = (
                decoder.feed(data[:first])
                + decoder.feed(data[first:second])
                + decoder.feed(data[second:])
            )
            assert got == payloads, f"split at {first}, {second}"


def test_byte_by_byte() -> None:
    data = _stream(PAYLOADS)
    decoder = FrameDecoder()
    got: list[bytes] = []
    for i in range(len(data)):
        got += decoder.feed(data[i : i + 1])
    assert got == PAYLOADS


def test_partial_frame_is_buffered_not_returned() -> None:
    decoder = FrameDecoder()
    frame = encode_frame(b"hello")
    assert decoder.feed(frame[:-1]) == []
    assert decoder.buffered == len(frame) - 1
    assert decoder.feed(frame[-1:]) == [b"hello"]


def test_frame_of_exactly_the_limit_is_accepted() -> None:
    decoder = FrameDecoder(max_bytes=10)
    assert decoder.feed(encode_frame(b"x" * 10, max_bytes=10)) == [b"x" * 10]


def test_zero_length_is_an_error() -> None:
    with pytest.raises(FrameError) as caught:
        FrameDecoder().feed(b"\x00\x00\x00\x00")
    assert caught.value.length == 0
    assert caught.value.payloads == []


def test_oversize_is_an_error() -> None:
    decoder = FrameDecoder(max_bytes=10)
    with pytest.raises(FrameError) as caught:
        decoder.feed(struct.pack(">I", 11))
    assert caught.value.length == 11


def test_huge_header_is_rejected_before_any_payload_arrives() -> None:
    decoder = FrameDecoder()
    with pytest.raises(FrameError) as caught:
        decoder.feed(b"\xff\xff\xff\xff")
    assert caught.value.length == 2**32 - 1
    assert decoder.buffered == 0


def test_huge_header_is_rejected_when_fed_byte_by_byte() -> None:
    decoder = FrameDecoder()
    for byte in b"\xff\xff\xff":
        assert decoder.feed(bytes([byte])) == []
    with pytest.raises(FrameError):
        decoder.feed(b"\xff")


def test_oversize_with_payload_bytes_does_not_buffer_them() -> None:
    decoder = FrameDecoder(max_bytes=16)
    with pytest.raises(FrameError):
        decoder.feed(struct.pack(">I", 17) + b"y" * 17)
    assert decoder.buffered == 0


def test_payloads_before_the_error_are_kept() -> None:
    good = _stream([b"one", b"two"])
    with pytest.raises(FrameError) as caught:
        FrameDecoder().feed(good + b"\x00\x00\x00\x00" + encode_frame(b"after"))
    assert caught.value.payloads == [b"one", b"two"]
    assert caught.value.length == 0


def test_payloads_before_the_error_only_count_that_feed() -> None:
    decoder = FrameDecoder(max_bytes=100)
    assert decoder.feed(encode_frame(b"first")) == [b"first"]
    with pytest.raises(FrameError) as caught:
        decoder.feed(encode_frame(b"second") + struct.pack(">I", 101))
    assert caught.value.payloads == [b"second"]
    assert caught.value.length == 101


def test_decoder_stays_failed() -> None:
    decoder = FrameDecoder()
    with pytest.raises(FrameError):
        decoder.feed(b"\x00\x00\x00\x00")
    with pytest.raises(FrameError) as caught:
        decoder.feed(encode_frame(b"fine"))
    assert caught.value.payloads == []
    assert caught.value.length == 0


def test_encode_refuses_empty_payload() -> None:
    with pytest.raises(FrameError) as caught:
        encode_frame(b"")
    assert caught.value.length == 0


def test_encode_refuses_all_default_message() -> None:
    # An all-default message serializes to zero bytes.
    with pytest.raises(FrameError):
        encode_frame(command_pb2.CommandAck())


def test_encode_refuses_oversize_payload() -> None:
    with pytest.raises(FrameError) as caught:
        encode_frame(b"x" * (MAX_FRAME_BYTES + 1))
    assert caught.value.length == MAX_FRAME_BYTES + 1
    with pytest.raises(FrameError):
        encode_frame(b"x" * 5, max_bytes=4)


def test_decoder_rejects_a_limit_below_one() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        FrameDecoder(max_bytes=0)
