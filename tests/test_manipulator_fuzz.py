"""Garbage on the manipulator's port leaves it serving.

One server runs on its own event loop in a thread for the whole module;
each hypothesis case talks to it over plain blocking sockets, then a
well-behaved client must still get its ack.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from manipulator.journal import read_journal
from manipulator.server import ManipulatorServer
from tests.test_manipulator import make_command
from workcell.framing import FrameDecoder, FrameError, encode_frame
from workcell.v1 import command_pb2

LIMIT = 512
TIMEOUT = 5.0


class _Recorder(logging.Handler):
    """Keeps asyncio's own error records: an exception nobody handled ends up there."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class _Served:
    def __init__(self, server: ManipulatorServer, journal: Path) -> None:
        self.server = server
        self.journal = journal
        self.ids = itertools.count(1)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Served]:
    journal = tmp_path_factory.mktemp("fuzz") / "journal.jsonl"
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="manipulator-fuzz", daemon=True)
    thread.start()
    recorder = _Recorder()
    logging.getLogger("asyncio").addHandler(recorder)
    server = ManipulatorServer(journal=journal, max_frame_bytes=LIMIT, read_timeout=0.1)
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(TIMEOUT)
        yield _Served(server, journal)
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(TIMEOUT)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(TIMEOUT)
        loop.close()
        logging.getLogger("asyncio").removeHandler(recorder)
    assert recorder.records == [], [r.getMessage() for r in recorder.records]


def _drain_until_closed(sock: socket.socket) -> None:
    """Read until the server closes (or resets) the connection."""
    while True:
        try:
            if not sock.recv(65536):
                return
        except ConnectionResetError:
            return


def _good_client_is_acked(served: _Served) -> None:
    command_id = next(served.ids)
    with socket.create_connection(("127.0.0.1", served.server.port), timeout=TIMEOUT) as sock:
        sock.sendall(encode_frame(make_command(command_id)))
        decoder = FrameDecoder()
        payloads: list[bytes] = []
        while not payloads:
            data = sock.recv(4096)
            assert data, "the manipulator closed a well-behaved connection"
            payloads = decoder.feed(data)
    assert command_pb2.CommandAck.FromString(payloads[0]).command_id == command_id


def _header(length: int) -> bytes:
    return struct.pack(">I", length)


_valid_frame = st.integers(min_value=1, max_value=2**40).map(
    lambda i: encode_frame(make_command(i))
)
_garbage = st.one_of(
    # Anything at all.
    st.binary(max_size=300),
    # A valid frame cut short, with or without trailing junk.
    st.tuples(_valid_frame, st.integers(min_value=0, max_value=40), st.binary(max_size=20)).map(
        lambda t: t[0][: t[1]] + t[2]
    ),
    # Lengths around the limit (and the extremes), with some payload behind them.
    st.tuples(
        st.sampled_from([0, 1, LIMIT - 1, LIMIT, LIMIT + 1, 2**31, 2**32 - 1]),
        st.binary(max_size=LIMIT + 8),
    ).map(lambda t: _header(t[0]) + t[1]),
    # A well-formed frame around a payload that is not a valid Command.
    st.binary(min_size=1, max_size=LIMIT).map(lambda p: _header(len(p)) + p),
    # Good frames, then garbage.
    st.tuples(st.lists(_valid_frame, max_size=3), st.binary(max_size=50)).map(
        lambda t: b"".join(t[0]) + t[1]
    ),
)


def _server_must_close(data: bytes) -> bool:
    """Whether the frames alone (not their payloads) make the server hang up.

    A bad frame closes at once, a partial one after the read timeout; between
    whole frames the server waits as long as the client likes.
    """
    decoder = FrameDecoder(max_bytes=LIMIT)
    try:
        decoder.feed(data)
    except FrameError:
        return True
    return decoder.buffered > 0


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=_garbage, ending=st.sampled_from(["half-close", "vanish", "linger"]))
def test_garbage_leaves_the_manipulator_serving(served: _Served, data: bytes, ending: str) -> None:
    with socket.create_connection(("127.0.0.1", served.server.port), timeout=TIMEOUT) as sock:
        if data:
            sock.sendall(data)
        if ending == "half-close":
            sock.shutdown(socket.SHUT_WR)
            _drain_until_closed(sock)
        elif ending == "linger" and _server_must_close(data):
            # Times out (failing the case) unless the server hangs up by itself.
            _drain_until_closed(sock)
        # "vanish", or lingering would wait forever: just drop the connection.
    _good_client_is_acked(served)


def test_journal_stays_well_formed(served: _Served) -> None:
    # Runs after the fuzz case in file order; the journal must still parse
    # line by line with strictly increasing ids.
    _good_client_is_acked(served)
    ids = [entry["command_id"] for entry in read_journal(served.journal)]
    assert ids == sorted(set(ids))
