"""TLS: mutual TLS on the controller's gRPC port and on the manipulator link.

Each run makes throwaway CAs with ``cryptography``: the cell's CA (a server
certificate for 127.0.0.1/localhost and a client certificate) and a "wrong"
CA with a client certificate of its own. Real servers on 127.0.0.1 port 0
show that plaintext and wrong-CA clients are refused and the right client is
served, by our own clients, by the real ``grpcurl`` and by real processes
started with the flags.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import ipaddress
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from controller.config import parse_config as parse_controller_config
from manipulator.config import parse_config as parse_manipulator_config
from manipulator.server import ManipulatorServer
from sensor.config import parse_config as parse_sensor_config
from tests.controller_harness import make_reading, running_cell, stream
from tests.processes import (
    ROOT,
    Service,
    running,
    sqlite_url,
    start_controller,
    start_manipulator,
    start_sensor,
)
from workcell import cli, healthcheck
from workcell.framing import FrameDecoder, encode_frame
from workcell.timeconv import now_us, to_timestamp
from workcell.tls import (
    PLAINTEXT,
    TlsConfig,
    TlsError,
    check_tls,
    client_ssl_context,
    connection_hint,
    grpc_aio_channel,
    server_ssl_context,
)
from workcell.v1 import command_pb2, history_pb2, history_pb2_grpc

GRPCURL = shutil.which("grpcurl") or str(ROOT / ".venv" / "bin" / "grpcurl")


# -- a throwaway PKI ----------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """PEM files: the cell's CA, its server and client certificates, and a wrong CA's client."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    wrong_ca: Path
    wrong_client_cert: Path
    wrong_client_key: Path

    def server(self, *, mutual: bool = True) -> TlsConfig:
        return TlsConfig(self.server_cert, self.server_key, self.ca if mutual else None)

    def client(self) -> TlsConfig:
        return TlsConfig(self.client_cert, self.client_key, self.ca)

    def wrong_client(self) -> TlsConfig:
        """A client that trusts the right server but presents the wrong CA's certificate."""
        return TlsConfig(self.wrong_client_cert, self.wrong_client_key, self.ca)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _make_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _issue(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    common_name: str,
    *,
    server: bool,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256()), key


def make_pki(folder: Path) -> Pki:
    """The cell's CA with a server and a client certificate, and an intruder of another CA."""
    ca = _make_ca("workcell test CA")
    server = _issue(ca, "workcell server", server=True)
    client = _issue(ca, "workcell client", server=False)
    wrong_ca = _make_ca("some other CA")
    wrong_client = _issue(wrong_ca, "intruder", server=False)
    return Pki(
        ca=_write_cert(ca[0], folder / "ca.pem"),
        server_cert=_write_cert(server[0], folder / "server.pem"),
        server_key=_write_key(server[1], folder / "server-key.pem"),
        client_cert=_write_cert(client[0], folder / "client.pem"),
        client_key=_write_key(client[1], folder / "client-key.pem"),
        wrong_ca=_write_cert(wrong_ca[0], folder / "wrong-ca.pem"),
        wrong_client_cert=_write_cert(wrong_client[0], folder / "wrong-client.pem"),
        wrong_client_key=_write_key(wrong_client[1], folder / "wrong-client-key.pem"),
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


# -- the controller's gRPC port ---------------------------------------------


async def _query(channel: grpc.aio.Channel) -> history_pb2.QueryResponse:
    stub = history_pb2_grpc.HistoryStub(channel)
    return await stub.Query(history_pb2.QueryRequest(), timeout=5)


async def _refused(target: str, tls: TlsConfig) -> grpc.StatusCode:
    async with grpc_aio_channel(target, tls) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _query(channel)
    return refused.value.code()


async def test_mutual_tls_controller_serves_only_clients_of_its_ca(
    tmp_path: Path, pki: Pki
) -> None:
    async with running_cell(tmp_path, tls=pki.server()) as cell:
        target = f"127.0.0.1:{cell.controller.port}"
        # The harness's own channel is plaintext.
        with pytest.raises(grpc.aio.AioRpcError) as plaintext:
            await cell.query()
        assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE
        assert await _refused(target, pki.wrong_client()) == grpc.StatusCode.UNAVAILABLE
        # TLS, but no client certificate at all.
        assert await _refused(target, TlsConfig(ca=pki.ca)) == grpc.StatusCode.UNAVAILABLE
        # A client that does not trust the server's CA refuses the server.
        untrusting = TlsConfig(pki.client_cert, pki.client_key, pki.wrong_ca)
        assert await _refused(target, untrusting) == grpc.StatusCode.UNAVAILABLE

        async with grpc_aio_channel(target, pki.client()) as channel:
            secure = dataclasses.replace(cell, channel=channel)
            start = now_us()
            response = await stream(secure, [make_reading(i, i, start) for i in range(1, 11)])
            assert response.stored == 10
            deadline = time.monotonic() + 10
            while not (await _query(channel)).entries:
                assert time.monotonic() < deadline, "no command issued"
                await asyncio.sleep(0.1)


async def test_server_name_override(tmp_path: Path, pki: Pki) -> None:
    async with running_cell(tmp_path, with_manipulator=False, tls=pki.server()) as cell:
        target = f"127.0.0.1:{cell.controller.port}"
        named = TlsConfig(pki.client_cert, pki.client_key, pki.ca, server_name="localhost")
        async with grpc_aio_channel(target, named) as channel:
            await _query(channel)
        misnamed = TlsConfig(pki.client_cert, pki.client_key, pki.ca, server_name="elsewhere")
        assert await _refused(target, misnamed) == grpc.StatusCode.UNAVAILABLE


async def _grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    # The controller runs on this event loop: never block it on the child.
    process = await asyncio.create_subprocess_exec(
        GRPCURL,
        # A refused handshake is retried until this runs out (default 10 s).
        "-connect-timeout",
        "3",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return subprocess.CompletedProcess(args, process.returncode, out.decode(), err.decode())


async def test_grpcurl_with_client_certificate(tmp_path: Path, pki: Pki) -> None:
    async with running_cell(tmp_path, with_manipulator=False, tls=pki.server()) as cell:
        target = f"127.0.0.1:{cell.controller.port}"
        certs = ("-cacert", str(pki.ca), "-cert", str(pki.client_cert), "-key", str(pki.client_key))
        listed = await _grpcurl(*certs, target, "list")
        assert listed.returncode == 0, listed.stderr
        services = listed.stdout.split()
        assert "workcell.v1.History" in services
        assert "workcell.v1.Telemetry" in services
        assert "grpc.health.v1.Health" in services
        queried = await _grpcurl(*certs, "-d", "{}", target, "workcell.v1.History/Query")
        assert queried.returncode == 0, queried.stderr

        plaintext = await _grpcurl("-plaintext", target, "list")
        assert plaintext.returncode != 0
        assert "Failed to dial" in plaintext.stderr
        no_cert = await _grpcurl("-cacert", str(pki.ca), target, "list")
        assert no_cert.returncode != 0
        assert "Failed to dial" in no_cert.stderr
        wrong = ("-cert", str(pki.wrong_client_cert), "-key", str(pki.wrong_client_key))
        wrong_cert = await _grpcurl("-cacert", str(pki.ca), *wrong, target, "list")
        assert wrong_cert.returncode != 0
        assert "Failed to dial" in wrong_cert.stderr


# -- a refused client: what each side is told (issue 10, item 9) ---------------


async def _refusal_details(target: str, tls: TlsConfig) -> str:
    async with grpc_aio_channel(target, tls) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _query(channel)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    return refused.value.details() or ""


async def test_a_refused_client_is_told_the_likely_cause(tmp_path: Path, pki: Pki) -> None:
    # All a refused client hears is "Socket closed": the hint guesses from its own settings.
    cases = {
        "plaintext": (PLAINTEXT, "closed the connection at once: does it require TLS?"),
        "no certificate": (TlsConfig(ca=pki.ca), "does it require a client certificate"),
        "a certificate of another CA": (
            pki.wrong_client(),
            "does it not trust this client certificate",
        ),
        "a CA that did not sign the server's": (
            TlsConfig(pki.client_cert, pki.client_key, pki.wrong_ca),
            "does not trust the controller's certificate",
        ),
        "another name": (
            TlsConfig(pki.client_cert, pki.client_key, pki.ca, server_name="elsewhere"),
            "--tls-server-name",
        ),
    }
    async with running_cell(tmp_path, with_manipulator=False, tls=pki.server()) as cell:
        target = f"127.0.0.1:{cell.controller.port}"
        for case, (tls, expected) in cases.items():
            details = await _refusal_details(target, tls)
            hint = connection_hint(details, tls, server="the controller")
            assert expected in (hint or ""), (case, details, hint)
    plain_folder = tmp_path / "plaintext"
    plain_folder.mkdir()
    async with running_cell(plain_folder, with_manipulator=False) as plain:
        target = f"127.0.0.1:{plain.controller.port}"
        details = await _refusal_details(target, pki.client())
        hint = connection_hint(details, pki.client(), server="the controller")
        assert "plaintext" in (hint or ""), details
    # Nothing listening is an outage, not a TLS problem: no hint.
    details = await _refusal_details(target, pki.client())
    assert connection_hint(details, pki.client()) is None, details


def _json_events(service: Service) -> list[dict[str, Any]]:
    """Every stderr line of ``service`` as a JSON object (fails on the first that is not)."""
    events = []
    for line in service.output().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            pytest.fail(f"{service.name}: not a JSON line: {line!r}\n{service.output()}")
        assert isinstance(event, dict), line
        events.append(event)
    return events


def test_with_json_logs_a_refused_client_shows_no_raw_core_line_and_hears_why(
    tmp_path: Path, pki: Pki
) -> None:
    controller = start_controller(
        sqlite_url(tmp_path / "workcell.db"), "--log-format", "json", *_flags("", pki.server())
    )
    assert controller.port is not None
    with running(controller):
        target = f"127.0.0.1:{controller.port}"
        sensor = start_sensor(controller.port, "--rate", "50", "--log-format", "json")
        untrusting = start_sensor(
            controller.port,
            "--rate", "50", "--log-format", "json",
            "--tls-ca", str(pki.wrong_ca),
            "--tls-cert", str(pki.client_cert), "--tls-key", str(pki.client_key),
            name="untrusting sensor",
        )  # fmt: skip
        with running(sensor, untrusting):
            sensor.wait_for_line("delivery to .* failed")
            # This client's own core logs why it gave up the handshake.
            untrusting.wait_for_line("CERTIFICATE_VERIFY_FAILED.*grpc_source")
            assert sensor.stop() == 0, sensor.output()
            assert untrusting.stop() == 0, untrusting.output()
        no_cert = _run_cli("history", "--controller", target, "--tls-ca", str(pki.ca))
        controller.wait_for_line("PEER_DID_NOT_RETURN_A_CERTIFICATE")
        assert controller.stop() == 0, controller.output()

    # The server's reasons, in its own format (they were raw gRPC core lines).
    core = [e for e in _json_events(controller) if e["logger"] == "grpc.core"]
    reasons = " ".join(e["message"] for e in core)
    assert "Handshake failed" in reasons, controller.output()
    assert "WRONG_VERSION_NUMBER" in reasons  # the plaintext sensor
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in reasons  # history without a certificate
    assert all(e["grpc_source"].startswith("ssl_transport_security.cc:") for e in core), core

    warnings = [e["message"] for e in _json_events(sensor) if e["level"] == "WARNING"]
    assert any("does it require TLS? Then give --tls-ca" in w for w in warnings), warnings
    events = _json_events(untrusting)
    assert any(e["logger"] == "grpc.core" for e in events)
    warnings = [e["message"] for e in events if e["level"] == "WARNING"]
    assert any("does not trust the controller's certificate" in w for w in warnings), warnings
    assert no_cert.returncode == 1
    assert no_cert.stderr.count("\n") == 1, no_cert.stderr
    assert "does it require a client certificate (--tls-cert/--tls-key)?" in no_cert.stderr


def test_healthcheck_names_the_likely_cause(
    tmp_path: Path, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    controller = start_controller(sqlite_url(tmp_path / "workcell.db"), *_flags("", pki.server()))
    with running(controller):
        target = f"127.0.0.1:{controller.port}"
        assert healthcheck.main([target, "--timeout", "2", *_flags("", pki.wrong_client())]) == 1
        assert controller.stop() == 0
    assert "does it not trust this client certificate" in capsys.readouterr().err


# -- the manipulator link -----------------------------------------------------


def _command(command_id: int) -> bytes:
    start = now_us()
    return encode_frame(
        command_pb2.Command(
            id=command_id,
            status=command_pb2.STATUS_UP,
            window_start=to_timestamp(start - 1_000_000),
            window_end=to_timestamp(start),
            issued_at=to_timestamp(start),
        )
    )


def _journal_ids(journal: Path) -> list[int]:
    if not journal.exists():
        return []
    return [json.loads(line)["command_id"] for line in journal.read_text().splitlines()]


async def _closed_without_ack(port: int, *, tls: TlsConfig | None = None) -> bool:
    """Connect (plaintext, or TLS with ``tls``), send a command; True when closed unanswered."""
    context = client_ssl_context(tls) if tls is not None else None
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    except OSError:
        return True  # refused in the handshake
    try:
        writer.write(_command(10_000))
        await writer.drain()
        data = await asyncio.wait_for(reader.read(65536), 10)
    except OSError:
        return True
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return data == b"" or not FrameDecoder().feed(data)


@contextlib.asynccontextmanager
async def _tls_manipulator(tmp_path: Path, pki: Pki) -> AsyncIterator[ManipulatorServer]:
    context = server_ssl_context(pki.server())
    async with ManipulatorServer(journal=tmp_path / "journal.jsonl", ssl=context) as manipulator:
        yield manipulator


async def test_link_over_mutual_tls_and_plaintext_refused(tmp_path: Path, pki: Pki) -> None:
    async with _tls_manipulator(tmp_path, pki) as manipulator:
        # A plaintext client (which is what the TLS handshake sees as garbage)
        # and a client with the wrong CA's certificate are closed unanswered.
        assert await _closed_without_ack(manipulator.port)
        assert await _closed_without_ack(manipulator.port, tls=pki.wrong_client())
        assert await _closed_without_ack(manipulator.port, tls=TlsConfig(ca=pki.ca))
        assert _journal_ids(manipulator.journal.path) == []

        async with running_cell(
            tmp_path,
            with_manipulator=False,
            manipulator_port=manipulator.port,
            manipulator_tls=pki.client(),
        ) as cell:
            deadline = time.monotonic() + 10
            while len(_journal_ids(manipulator.journal.path)) < 2:
                assert time.monotonic() < deadline, "no commands journaled over TLS"
                await asyncio.sleep(0.1)
            # Still refusing plaintext while the TLS link is up, and still serving it after.
            assert await _closed_without_ack(manipulator.port)
            count = len(_journal_ids(manipulator.journal.path))
            while len(_journal_ids(manipulator.journal.path)) <= count:
                assert time.monotonic() < deadline + 10, "the link stopped after the intruder"
                await asyncio.sleep(0.1)
            assert cell.controller.link is not None
            assert cell.controller.link.connected


# -- real processes with the flags -------------------------------------------


def _flags(prefix: str, tls: TlsConfig) -> list[str]:
    flags: list[str] = []
    for name, path in (("ca", tls.ca), ("cert", tls.cert), ("key", tls.key)):
        if path is not None:
            flags += [f"--{prefix}tls-{name}", str(path)]
    return flags


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workcell.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def test_cell_of_processes_over_tls(tmp_path: Path, pki: Pki) -> None:
    manipulator = start_manipulator(tmp_path / "journal.jsonl", *_flags("", pki.server()))
    assert manipulator.port is not None
    with running(manipulator):
        controller = start_controller(
            sqlite_url(tmp_path / "workcell.db"),
            "--period", "1",
            "--grace", "0.1",
            *_flags("", pki.server()),
            *_flags("manipulator-", pki.client()),
            manipulator_port=manipulator.port,
        )  # fmt: skip
        assert controller.port is not None
        with running(controller):
            controller.wait_for_line("gRPC: mutual TLS")
            target = f"127.0.0.1:{controller.port}"
            sensor = start_sensor(
                controller.port, "--count", "50", "--rate", "100", *_flags("", pki.client())
            )
            with running(sensor):
                assert sensor.wait(30) == 0, sensor.output()
            assert "acked=50" in sensor.output()
            controller.wait_for_line(r"command \d+ acknowledged")

            history = _run_cli("history", "--controller", target, *_flags("", pki.client()))
            assert history.returncode == 0, history.stderr
            assert "up" in history.stdout or "down" in history.stdout
            plaintext = _run_cli("history", "--controller", target)
            assert plaintext.returncode == 1
            assert "UNAVAILABLE" in plaintext.stderr

            # workcell watch takes the same client flags (plain lines: stdout is a pipe).
            watch = _run_cli("watch", target, "--duration", "3", *_flags("", pki.client()))
            assert watch.returncode == 0, watch.stderr
            assert re.search(r"^command \d+ issued", watch.stdout, re.MULTILINE), watch.stdout
            assert "stored=50 " in watch.stdout.splitlines()[-1], watch.stdout

            assert healthcheck.main([target, *_flags("", pki.client())]) == 0
            assert healthcheck.main([target, "--timeout", "2"]) == 1
            assert controller.stop() == 0
        assert manipulator.stop() == 0
    assert "TLS only, client certificates required" in manipulator.output()


# -- flags --------------------------------------------------------------------


def _exit_line(capsys: pytest.CaptureFixture[str], parse: object, *argv: str) -> str:
    with pytest.raises(SystemExit) as exited:
        parse(list(argv))  # type: ignore[operator]
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_bad_flag_combinations_exit_2(
    tmp_path: Path, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    def controller(argv: list[str]) -> object:
        return parse_controller_config(argv, environ={})

    def manipulator(argv: list[str]) -> object:
        return parse_manipulator_config(argv, environ={})

    def sensor(argv: list[str]) -> object:
        return parse_sensor_config(argv, environ={})

    cert, key, ca = str(pki.server_cert), str(pki.server_key), str(pki.ca)
    line = _exit_line(capsys, controller, "--tls-cert", cert)
    assert "argument --tls-key:" in line
    assert "required" in line
    line = _exit_line(capsys, manipulator, "--tls-key", key)
    assert "argument --tls-cert:" in line
    line = _exit_line(capsys, controller, "--tls-ca", ca)
    assert "argument --tls-ca:" in line
    missing = str(tmp_path / "missing.pem")
    line = _exit_line(capsys, controller, "--tls-cert", missing, "--tls-key", key)
    assert "argument --tls-cert:" in line
    assert "cannot read" in line
    line = _exit_line(capsys, manipulator, "--tls-cert", cert, "--tls-key", str(pki.client_key))
    assert "argument --tls-key:" in line
    assert "matching" in line
    line = _exit_line(capsys, controller, "--tls-cert", cert, "--tls-key", key, "--tls-ca", key)
    assert "argument --tls-ca:" in line
    assert "no PEM certificate" in line
    line = _exit_line(
        capsys,
        controller,
        "--manipulator-tls-cert",
        str(pki.client_cert),
        "--manipulator-tls-key",
        str(pki.client_key),
    )
    assert "argument --manipulator-tls-cert:" in line
    assert "CA" in line
    line = _exit_line(capsys, sensor, "--tls-server-name", "localhost")
    assert "argument --tls-server-name:" in line
    line = _exit_line(capsys, sensor, "--tls-ca", ca, "--tls-cert", str(pki.client_cert))
    assert "argument --tls-key:" in line
    line = _exit_line(capsys, cli.main, "history", "--tls-ca", missing)
    assert "argument --tls-ca:" in line
    assert "workcell history" in line
    line = _exit_line(capsys, healthcheck.main, "127.0.0.1:1", "--tls-cert", cert)
    assert "argument --tls-key:" in line

    # From the environment: the line names the variable too.
    with pytest.raises(SystemExit):
        parse_controller_config([], environ={"WORKCELL_TLS_CERT": cert})
    line = capsys.readouterr().err.strip()
    assert "argument --tls-key:" in line
    with pytest.raises(SystemExit):
        parse_controller_config([], environ={"WORKCELL_TLS_CERT": missing, "WORKCELL_TLS_KEY": key})
    assert "WORKCELL_TLS_CERT" in capsys.readouterr().err


def test_flags_and_environment_build_the_configs(pki: Pki) -> None:
    environ = {
        "WORKCELL_TLS_CERT": str(pki.server_cert),
        "WORKCELL_TLS_KEY": str(pki.server_key),
        "WORKCELL_TLS_CA": str(pki.ca),
        "WORKCELL_MANIPULATOR_TLS_CA": str(pki.ca),
        "WORKCELL_MANIPULATOR_TLS_CERT": str(pki.client_cert),
        "WORKCELL_MANIPULATOR_TLS_KEY": str(pki.client_key),
        "WORKCELL_MANIPULATOR_TLS_SERVER_NAME": "localhost",
    }
    config = parse_controller_config([], environ=environ)
    assert config.tls == pki.server()
    assert config.manipulator_tls == TlsConfig(
        pki.client_cert, pki.client_key, pki.ca, server_name="localhost"
    )
    # Empty variables (compose's ${VAR:-}) mean unset: plaintext, as before.
    blank = {name: "" for name in environ}
    config = parse_controller_config([], environ=blank)
    assert config.tls == TlsConfig()
    assert config.manipulator_tls == TlsConfig()
    assert parse_manipulator_config([], environ=environ).tls == pki.server()


def test_check_tls_sides(pki: Pki) -> None:
    check_tls(pki.server(), "server")
    check_tls(pki.server(mutual=False), "server")
    check_tls(pki.client(), "client")
    check_tls(TlsConfig(ca=pki.ca), "client")
    with pytest.raises(TlsError) as error:
        check_tls(TlsConfig(ca=pki.ca), "server")
    assert error.value.field == "ca"
    with pytest.raises(TlsError) as error:
        check_tls(TlsConfig(pki.client_cert, pki.client_key), "client")
    assert error.value.field == "cert"
    assert pki.server().describe("server") == "mutual TLS"
    assert TlsConfig().describe("client") == "plaintext"
