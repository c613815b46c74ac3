"""The manipulator link when a connection is made and then fails (issue 10, item 2).

A plaintext link against a TLS-only manipulator, a link without the client
certificate a manipulator requires, and a server that accepts and closes at
once: each connect succeeds and the link then fails. The old link reconnected
at once every time (3,167 connections and 6,332 log lines in 3 s against the
TLS manipulator). Real servers on 127.0.0.1; connections are counted by a
forwarding proxy in front of the manipulator, or by the server itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controller.link import ManipulatorLink
from controller.link_failures import FailureEpisode, Phase, describe_failure
from manipulator.handshakes import LogThrottle
from manipulator.server import ManipulatorServer
from tests.chaos_proxy import ChaosProxy
from tests.processes import free_port
from tests.test_dispatch import ORIGIN, Acks, command
from tests.test_tls import Pki, make_pki
from workcell.backoff import Backoff
from workcell.flags import Address
from workcell.tls import TlsConfig, client_ssl_context, server_ssl_context

# How long each storm test lets the link try. With the production backoff
# (0.1 s doubling, jitter down to half) at most 7 attempts fit in 3 s.
WATCH_SECONDS = 3.0
MAX_ATTEMPTS = 8


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def lines_of(caplog: pytest.LogCaptureFixture, logger: str, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno >= level]


@contextlib.asynccontextmanager
async def trying_link(port: int, tls: TlsConfig | None = None) -> AsyncIterator[ManipulatorLink]:
    """A link with the production backoff and one pending command, trying ``port``."""
    link = ManipulatorLink(
        Address("127.0.0.1", port),
        on_ack=Acks(),
        origin=ORIGIN,
        ssl=client_ssl_context(tls) if tls is not None else None,
    )
    link.enqueue(command(1))
    await link.start()
    try:
        yield link
    finally:
        await link.close()


async def storm_against_tls_manipulator(
    tmp_path: Path, certs: Pki, link_tls: TlsConfig | None, caplog: pytest.LogCaptureFixture
) -> list[str]:
    """Let a link try a mutual-TLS manipulator for a while; the controller's warnings."""
    caplog.set_level(logging.INFO)
    server = ManipulatorServer(
        journal=tmp_path / "journal.jsonl", ssl=server_ssl_context(certs.server())
    )
    async with server as manipulator, ChaosProxy(manipulator.port) as proxy:
        async with trying_link(proxy.port, link_tls) as link:
            await asyncio.sleep(WATCH_SECONDS)
            assert link.pending == [1]
        attempts = proxy.accepted
        # The manipulator says why, once for the episode (rate-limited), naming the peer.
        handshake_lines = [
            line
            for line in lines_of(caplog, "manipulator.server", logging.WARNING)
            if "TLS handshake" in line
        ]
    assert 1 <= attempts <= MAX_ATTEMPTS, f"{attempts} connections in {WATCH_SECONDS}s"
    controller_lines = lines_of(caplog, "controller.link", logging.INFO)
    # "connected" once, the episode's warning once: not a line per attempt.
    assert len(controller_lines) <= 2, controller_lines
    warnings = lines_of(caplog, "controller.link", logging.WARNING)
    assert len(warnings) == 1, warnings
    assert len(handshake_lines) == 1, handshake_lines
    assert "127.0.0.1:" in handshake_lines[0]
    return warnings


async def test_plaintext_link_to_a_tls_manipulator_backs_off(
    tmp_path: Path, certs: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    (warning,) = await storm_against_tls_manipulator(tmp_path, certs, None, caplog)
    # A readable reason, not an empty one, with what to check.
    assert "closed the connection" in warning, warning
    assert "TLS" in warning, warning


async def test_link_without_the_required_client_certificate_backs_off(
    tmp_path: Path, certs: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    (warning,) = await storm_against_tls_manipulator(
        tmp_path, certs, TlsConfig(ca=certs.ca), caplog
    )
    assert "certificate" in warning, warning


class Slammer:
    """A TCP server that accepts and closes every connection at once, counting them."""

    def __init__(self, port: int = 0) -> None:
        self.accepted = 0
        self._accepting = asyncio.Event()
        self._requested_port = port
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Slammer:
        self._server = await asyncio.start_server(
            self._on_connect, "127.0.0.1", self._requested_port
        )
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._accepting.set()
        writer.close()

    async def wait_for(self, connections: int) -> None:
        while self.accepted < connections:
            self._accepting.clear()
            await asyncio.wait_for(self._accepting.wait(), 30)

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


async def test_server_that_closes_at_once_gets_few_attempts_then_recovery_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    acks = Acks()
    async with Slammer() as slammer:
        port = slammer.port
        link = ManipulatorLink(Address("127.0.0.1", port), on_ack=acks, origin=ORIGIN)
        link.enqueue(command(1))
        await link.start()
        await asyncio.sleep(WATCH_SECONDS)
        attempts = slammer.accepted
    try:
        assert 1 <= attempts <= MAX_ATTEMPTS, f"{attempts} connections in {WATCH_SECONDS}s"
        (warning,) = lines_of(caplog, "controller.link", logging.WARNING)
        assert "closed the connection" in warning, warning
        assert len(lines_of(caplog, "controller.link", logging.INFO)) <= 2

        # A real manipulator on that port: the command goes through, and the
        # link says once that it works again.
        async with ManipulatorServer(journal=tmp_path / "journal.jsonl", port=port):
            await acks.wait_for([1], within=15)
    finally:
        await link.close()
    recovered = [
        line for line in lines_of(caplog, "controller.link", logging.INFO) if "works again" in line
    ]
    assert len(recovered) == 1, recovered


async def test_a_new_kind_of_failure_in_an_episode_is_logged_once_more(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    port = free_port()
    async with trying_link(port):
        await asyncio.sleep(1.0)  # nothing listens: connection refused
        async with Slammer(port) as slammer:  # then something that hangs up at once
            await slammer.wait_for(2)
    first, second = lines_of(caplog, "controller.link", logging.WARNING)
    assert "cannot connect: ConnectionRefusedError" in first, first
    assert "now fails otherwise: the manipulator closed the connection" in second, second
    # The first successful connect of the episode is logged, the next ones are not.
    connected = [
        line for line in lines_of(caplog, "controller.link", logging.INFO) if "connected" in line
    ]
    assert len(connected) == 1, connected


async def test_tls_link_to_a_plaintext_manipulator_backs_off(
    tmp_path: Path, certs: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = ManipulatorServer(journal=tmp_path / "journal.jsonl")
    async with server as manipulator, ChaosProxy(manipulator.port) as proxy:
        async with trying_link(proxy.port, certs.client()) as link:
            await asyncio.sleep(WATCH_SECONDS)
            assert link.pending == [1]
        attempts = proxy.accepted
    assert 1 <= attempts <= MAX_ATTEMPTS, f"{attempts} connections in {WATCH_SECONDS}s"
    (warning,) = lines_of(caplog, "controller.link", logging.WARNING)
    assert "TLS handshake failed" in warning, warning
    assert "--tls-cert" in warning, warning


async def test_manipulator_logs_a_failed_handshake_once_with_the_peer(
    tmp_path: Path, certs: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="manipulator.server")
    context = server_ssl_context(certs.server())
    async with ManipulatorServer(journal=tmp_path / "journal.jsonl", ssl=context) as manipulator:
        peers = []
        for _ in range(12):  # a plaintext controller retrying, or a scanner
            reader, writer = await asyncio.open_connection("127.0.0.1", manipulator.port)
            host, port = writer.get_extra_info("sockname")[:2]
            peers.append(f"{host}:{port}")
            writer.write(b"\x00\x00\x00\x05hello")
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), 10) == b""
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        # Each one is closed as soon as its handshake fails (no wait for a
        # timeout); the failures are counted as they are handled.
        warnings = lines_of(caplog, "manipulator.server", logging.WARNING)
        assert len(warnings) == 1, warnings
        assert warnings[0].startswith(f"{peers[0]}: TLS handshake failed"), warnings[0]
        assert "plaintext controller" in warnings[0]
        assert "_ssl.c" not in warnings[0]
        # The others are still there for whoever turns on DEBUG.
        debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
        assert sum("TLS handshake failed" in line for line in debug) == 11
    warnings = lines_of(caplog, "manipulator.server", logging.WARNING)
    assert len(warnings) == 2, warnings
    assert warnings[1].startswith("11 more failed TLS handshakes not logged"), warnings[1]
    assert peers[-1] in warnings[1]


def test_log_throttle_admits_one_line_per_interval_and_counts_the_rest() -> None:
    now = [100.0]
    throttle = LogThrottle(60.0, clock=lambda: now[0])
    assert throttle.admit() == 0
    assert [throttle.admit() for _ in range(5)] == [None] * 5
    now[0] += 59.9
    assert throttle.admit() is None
    now[0] += 0.1
    assert throttle.admit() == 6
    assert throttle.admit() is None
    assert throttle.take_suppressed() == 1
    assert throttle.take_suppressed() == 0


def test_the_link_backoff_bounds_a_storm() -> None:
    # The bound the tests above rely on: at the shortest delays the link's backoff
    # (workcell.backoff, as ManipulatorLink's defaults make it) allows, the attempts
    # that fit in WATCH_SECONDS.
    shortest = Backoff(0.1, 5.0).delays(lambda: 0.999999)
    elapsed, attempts = 0.0, 1
    while (elapsed := elapsed + next(shortest)) <= WATCH_SECONDS:
        attempts += 1
    assert attempts < MAX_ATTEMPTS


def test_failure_reasons_are_readable_and_never_empty() -> None:
    def reason(phase: Phase, exc: BaseException | None, tls: bool = False) -> str:
        return describe_failure(phase, exc, tls=tls, seconds=0.004, connect_timeout=5).reason

    # The case that logged an empty reason: a reset with no message.
    assert reason(Phase.CONNECTED, ConnectionResetError()).startswith(
        "the manipulator broke the connection (ConnectionResetError) 0.00s after connect"
    )
    assert "TLS-only" in reason(Phase.CONNECTED, None)
    assert "--manipulator-tls-cert" in reason(Phase.CONNECTED, None, tls=True)
    assert reason(Phase.CONNECT, ConnectionRefusedError(111, "Connection refused")) == (
        "cannot connect: ConnectionRefusedError: [Errno 111] Connection refused"
    )
    assert reason(Phase.CONNECT, TimeoutError()) == "no answer within 5s"
    assert "TLS handshake failed: ConnectionResetError" in reason(
        Phase.CONNECT, ConnectionResetError(), tls=True
    )
    # A kind per phase and exception type: one warning each per episode.
    episode = FailureEpisode(started=0.0)
    eof = describe_failure(Phase.CONNECTED, None, tls=False, seconds=0.0, connect_timeout=5)
    refused = describe_failure(
        Phase.CONNECT, ConnectionRefusedError(), tls=False, seconds=0.0, connect_timeout=5
    )
    assert [episode.failed(f) for f in (eof, eof, refused, eof, refused)] == [
        True,
        False,
        True,
        False,
        False,
    ]
    assert episode.failures == 5
    assert episode.connected  # the eof came after a connect: "connected" is not logged again
    outage = FailureEpisode(started=0.0)
    outage.failed(refused)
    assert outage.first_connect()  # the manipulator is back: logged once
    assert not outage.first_connect()
