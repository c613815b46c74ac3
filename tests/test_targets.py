"""Several controller addresses as one gRPC target (workcell.targets) and the sensor's flag.

Pure parsing and building, with a fake resolver where a name is looked up
(a real DNS server with several records for one name cannot exist here);
then real gRPC servers on 127.0.0.1 show that the channel built from a list
spreads calls over every node and that TLS still checks the right name.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sensor.config import parse_config
from tests.test_tls import make_pki
from workcell.flags import Address
from workcell.targets import (
    ROUND_ROBIN,
    GrpcTarget,
    TargetError,
    grpc_target,
    parse_addresses,
    resolve_host,
)
from workcell.tls import (
    PLAINTEXT,
    TlsConfig,
    connection_hint,
    grpc_aio_channel,
    grpc_server_credentials,
)

HOSTS = {
    "node-a": ["10.0.0.1"],
    "node-b": ["10.0.0.2", "10.0.0.3"],
    "node-c": ["10.0.0.1"],  # the same node as node-a under another name
    "v6-only": ["fd00::7"],
    "dual": ["fd00::8", "10.0.0.8"],
}


def fake_resolve(host: str, port: int) -> Sequence[str]:
    try:
        return HOSTS[host]
    except KeyError:
        raise TargetError(f"cannot resolve {host!r}") from None


def no_lookups(host: str, port: int) -> Sequence[str]:
    raise AssertionError(f"{host} looked up: only names in a list are")


def target(text: str, resolve: object = fake_resolve) -> GrpcTarget:
    return grpc_target(parse_addresses(text), resolve)  # type: ignore[arg-type]


# -- parsing ------------------------------------------------------------------


def test_one_or_several_addresses() -> None:
    assert parse_addresses("127.0.0.1:50051") == (Address("127.0.0.1", 50051),)
    assert parse_addresses(" a:1 , [::1]:2,b:3") == (
        Address("a", 1),
        Address("::1", 2),
        Address("b", 3),
    )


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("a:1,,b:2", "empty address (address 2 of 3)"),
        ("a:1,", "empty address (address 2 of 2)"),
        ("a:1,b", "got 'b' (address 2 of 2)"),
        ("a:1,b:99999", "got 'b:99999' (address 2 of 2)"),
        ("nohost", "got 'nohost'"),
        ("a:0", "port 0 cannot be dialled: 'a:0'"),
        ("a:1,a:1", "'a:1' is listed twice"),
    ],
)
def test_bad_lists_name_the_bad_part(text: str, names: str) -> None:
    with pytest.raises(
        argparse.ArgumentTypeError, match=names.replace("(", r"\(").replace(")", r"\)")
    ):
        parse_addresses(text)


# -- building the target --------------------------------------------------------


def test_ip_literals_go_to_grpcs_ipv4_and_ipv6_resolvers() -> None:
    one = target("127.0.0.1:50051", no_lookups)
    assert one.uri == "ipv4:127.0.0.1:50051"
    assert one.authority is None  # gRPC's own, 127.0.0.1:50051
    two = target("127.0.0.1:1,127.0.0.2:2", no_lookups)
    assert two.uri == "ipv4:127.0.0.1:1,127.0.0.2:2"
    assert two.authority == "127.0.0.1:1"
    assert target("[::1]:1,[fd00::1]:2", no_lookups).uri == "ipv6:[::1]:1,[fd00::1]:2"
    assert ROUND_ROBIN in two.options
    assert ("grpc.default_authority", "127.0.0.1:1") in two.options


def test_one_name_is_left_to_grpcs_dns_resolver() -> None:
    one = target("controller:50051", no_lookups)
    assert one.uri == "dns:///controller:50051"
    assert one.authority is None
    assert one.options == [ROUND_ROBIN]
    assert str(one) == "controller:50051 (dns:///controller:50051)"


def test_names_in_a_list_are_resolved_into_every_address_once() -> None:
    built = target("node-a:1,node-b:1,node-c:1")
    # node-c is node-a again: one subchannel, not two
    assert built.uri == "ipv4:10.0.0.1:1,10.0.0.2:1,10.0.0.3:1"
    assert built.authority == "node-a:1"  # TLS checks the name given, not an IP
    assert built.hosts == ("node-a", "node-b", "node-c")
    assert str(built) == "node-a:1,node-b:1,node-c:1 (ipv4:10.0.0.1:1,10.0.0.2:1,10.0.0.3:1)"


def test_one_family_for_the_whole_list() -> None:
    assert target("v6-only:1,dual:2").uri == "ipv6:[fd00::7]:1,[fd00::8]:2"
    assert target("node-a:1,dual:2").uri == "ipv4:10.0.0.1:1,10.0.0.8:2"
    with pytest.raises(TargetError, match=r"v6-only:1 has no IPv4 address and 127.0.0.1:2 no IPv6"):
        target("v6-only:1,127.0.0.1:2")


def test_an_unknown_name_in_a_list_is_an_error_at_start() -> None:
    with pytest.raises(TargetError, match="cannot resolve 'nowhere'"):
        target("node-a:1,nowhere:2")
    with pytest.raises(TargetError, match=r"cannot resolve 'no-such-host\.invalid'"):
        resolve_host("no-such-host.invalid", 1)


def test_localhost_resolves_for_real() -> None:
    built = target("localhost:1,localhost:2", resolve_host)
    assert built.uri.startswith(("ipv4:127.0.0.1:1,127.0.0.1:2", "ipv6:[::1]:1,[::1]:2"))


# -- the sensor's flag -----------------------------------------------------------


def test_sensor_takes_a_list_from_the_flag_or_the_environment() -> None:
    config = parse_config(["--controller", "127.0.0.1:1,127.0.0.1:2"], environ={})
    assert config.controller.uri == "ipv4:127.0.0.1:1,127.0.0.1:2"
    config = parse_config(
        [], environ={"WORKCELL_CONTROLLER_ADDRESS": "node-a:7,node-b:7"}, resolve=fake_resolve
    )
    assert config.controller.uri == "ipv4:10.0.0.1:7,10.0.0.2:7,10.0.0.3:7"


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--controller", "a:1,,b:2"], {}, "empty address (address 2 of 3)"),
        ([], {"WORKCELL_CONTROLLER_ADDRESS": "a:1,b"}, "WORKCELL_CONTROLLER_ADDRESS"),
        (["--controller", "node-a:1,nowhere:1"], {}, "cannot resolve 'nowhere'"),
    ],
)
def test_sensor_refuses_a_bad_list_with_one_line(
    args: list[str], env: dict[str, str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_config(args, environ=env, resolve=fake_resolve)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--controller" in err
    assert says in err


def test_tls_with_nodes_under_different_names_needs_a_server_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = make_pki(tmp_path)
    tls = ["--tls-ca", str(pki.ca)]
    with pytest.raises(SystemExit):
        parse_config(["--controller", "node-a:1,node-b:1", *tls], environ={}, resolve=fake_resolve)
    assert "need --tls-server-name" in capsys.readouterr().err
    # one name for all, or the override: fine
    parse_config(["--controller", "127.0.0.1:1,127.0.0.1:2", *tls], environ={})
    named = ["--controller", "node-a:1,node-b:1", *tls, "--tls-server-name", "cell"]
    assert parse_config(named, environ={}, resolve=fake_resolve).tls.server_name == "cell"


# -- real servers -------------------------------------------------------------------


class _Numbered(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """Answers with its own number as the status, so a client can tell the nodes apart."""

    def __init__(self, number: int) -> None:
        self.number = number

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        return health_pb2.HealthCheckResponse(status=self.number)


async def _answers(text: str, tls: TlsConfig, server_tls: TlsConfig | None) -> list[int]:
    """Which of two servers answer six calls on one channel built from ``text``."""
    servers = []
    try:
        ports = []
        for number in (1, 2):
            server = grpc.aio.server()
            health_pb2_grpc.add_HealthServicer_to_server(_Numbered(number), server)
            if server_tls is None:
                ports.append(server.add_insecure_port("127.0.0.1:0"))
            else:
                credentials = grpc_server_credentials(server_tls)
                assert credentials is not None
                ports.append(server.add_secure_port("127.0.0.1:0", credentials))
            await server.start()
            servers.append(server)
        built = grpc_target(parse_addresses(text.format(*ports)), resolve_host)
        async with grpc_aio_channel(built.uri, tls, options=built.options) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest()
            return [int((await stub.Check(request, timeout=10)).status) for _ in range(6)]
    finally:
        for server in servers:
            await server.stop(None)


async def test_calls_go_round_robin_over_the_nodes() -> None:
    # (the first calls may all go to the node whose connection was ready first)
    answers = await _answers("127.0.0.1:{},127.0.0.1:{}", PLAINTEXT, None)
    assert sorted(set(answers)) == [1, 2]


async def test_tls_checks_the_name_given_for_a_list(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    client = TlsConfig(ca=pki.ca)
    # without the authority the list itself would be checked against the certificate
    answers = await _answers("localhost:{},localhost:{}", client, pki.server(mutual=False))
    assert sorted(set(answers)) == [1, 2]
    answers = await _answers("127.0.0.1:{},127.0.0.1:{}", client, pki.server(mutual=False))
    assert sorted(set(answers)) == [1, 2]


async def test_one_name_goes_through_grpcs_dns_resolver() -> None:
    # (a name with an address per node needs a DNS server: compose's, in the ha profile)
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(_Numbered(7), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        built = grpc_target(parse_addresses(f"localhost:{port}"), no_lookups)
        assert built.uri == f"dns:///localhost:{port}"
        async with grpc_aio_channel(built.uri, PLAINTEXT, options=built.options) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
        assert reply.status == 7
    finally:
        await server.stop(None)


def test_a_refusal_seen_through_round_robin_still_gets_its_hint() -> None:
    # round_robin words a refused connection differently from pick_first
    details = (
        "connections to all backends failing; last error: UNAVAILABLE: "
        "ipv4:127.0.0.1:35689: Socket closed"
    )
    hint = connection_hint(details, PLAINTEXT, server="the controller")
    assert hint is not None
    assert "does it require TLS? Then give --tls-ca" in hint


def test_a_tls_server_too_slow_to_refuse_a_plaintext_client_still_gets_the_hint() -> None:
    # On a loaded machine the TLS server's refusal can come after the client's connect
    # deadline: the client then gives up waiting for HTTP/2 SETTINGS, not on a closed socket
    # (seen in a full suite run: the plaintext sensor's warning had no hint).
    details = (
        "connections to all backends failing; last error: UNKNOWN: ipv4:127.0.0.1:35689: "
        "connection attempt timed out before receiving SETTINGS frame"
    )
    hint = connection_hint(details, PLAINTEXT, server="the controller")
    assert hint is not None
    assert "does it require TLS? Then give --tls-ca" in hint
    # A TLS client that got that far completed its handshake: nothing points at TLS.
    assert connection_hint(details, TlsConfig(ca=Path("ca.pem"))) is None
