"""The controller-manipulator frame codec, with no I/O.

A frame is a 4-byte big-endian unsigned length followed by that many bytes
of a serialized protobuf message. Lengths of 0 and above the decoder's limit
are protocol errors. Like h11, the decoder only buffers bytes and returns the
payloads it can complete; the caller owns the socket.
"""

from __future__ import annotations

import struct

from google.protobuf.message import Message

__all__ = ["HEADER_BYTES", "MAX_FRAME_BYTES", "FrameDecoder", "FrameError", "encode_frame"]

HEADER_BYTES = 4
# A Command is well under 100 bytes; the limit only has to stop a bad peer
# from making us buffer gigabytes.
MAX_FRAME_BYTES = 64 * 1024
_HEADER = struct.Struct(">I")


class FrameError(ValueError):
    """The byte stream is not a valid sequence of frames.

    ``length`` is the announced payload length when the header was read;
    ``payloads`` are the frames completed by the same ``feed`` call before the
    error, so a caller can still handle them before closing the connection.
    """

    def __init__(
        self, message: str, *, length: int | None = None, payloads: list[bytes] | None = None
    ) -> None:
        super().__init__(message)
        self.length = length
        self.payloads = payloads or []


def encode_frame(message: Message | bytes, *, max_bytes: int = MAX_FRAME_BYTES) -> bytes:
    """Return ``message`` (a protobuf message or its bytes) as one frame."""
    payload = message if isinstance(message, bytes) else message.SerializeToString()
    if not payload:
        # An all-default message serializes to nothing; a zero length is an
        # error on the wire, so refuse to produce one.
        raise FrameError("cannot frame an empty payload", length=0)
    if len(payload) > max_bytes:
        raise FrameError(
            f"payload of {len(payload)} bytes exceeds the {max_bytes}-byte limit",
            length=len(payload),
        )
    return _HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Incremental frame parser: ``feed`` bytes, get back complete payloads.

    After a :class:`FrameError` the stream cannot be resynchronized; the
    decoder stays failed and the caller should close the connection.
    """

    def __init__(self, *, max_bytes: int = MAX_FRAME_BYTES) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._error: FrameError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet form a complete frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data`` and return every payload it completes, in order."""
        if self._error is not None:
            raise FrameError(str(self._error), length=self._error.length)
        self._buffer += data
        payloads: list[bytes] = []
        while len(self._buffer) >= HEADER_BYTES:
            (length,) = _HEADER.unpack_from(self._buffer)
            if length == 0:
                self._error = FrameError("frame of length 0", length=0)
            elif length > self.max_bytes:
                self._error = FrameError(
                    f"frame of {length} bytes exceeds the {self.max_bytes}-byte limit",
                    length=length,
                )
            if self._error is not None:
                self._buffer.clear()
                raise FrameError(str(self._error), length=length, payloads=payloads)
            end = HEADER_BYTES + length
            if len(self._buffer) < end:
                break
            payloads.append(bytes(self._buffer[HEADER_BYTES:end]))
            del self._buffer[:end]
        return payloads
