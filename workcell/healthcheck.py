"""Probe a gRPC server's health: ``python -m workcell.healthcheck HOST:PORT``.

Exit status 0 when ``grpc.health.v1.Health/Check`` reports SERVING for the
overall server (service ``""``), 1 otherwise with one line saying why. The
compose file uses it as the controller's healthcheck, so it must not need
anything beyond the image (no grpcurl, no shell).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from workcell.flags import Address, FlagParser, address, float_between
from workcell.tls import (
    PLAINTEXT,
    TlsConfig,
    add_tls_flags,
    connection_hint,
    grpc_channel,
    parse_tls,
)

__all__ = ["check", "main"]


def check(
    target: Address, *, service: str = "", timeout: float = 3.0, tls: TlsConfig = PLAINTEXT
) -> str:
    """The serving status name (``"SERVING"``, ``"NOT_SERVING"``, ...) of ``service``.

    With ``tls`` (a CA, maybe a client certificate) the server is asked over
    TLS. Raises ``grpc.RpcError`` when the server cannot be asked.
    """
    with grpc_channel(str(target), tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(
            health_pb2.HealthCheckRequest(service=service),
            timeout=timeout,
            wait_for_ready=False,
        )
    name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return name


def main(argv: Sequence[str] | None = None) -> int:
    """Run the probe; return the exit status."""
    parser = FlagParser(
        prog="python -m workcell.healthcheck",
        description="Exit 0 iff the gRPC server at ADDRESS reports SERVING.",
    )
    parser.add_argument("address", type=address, help="HOST:PORT of the gRPC server")
    parser.flag(
        "--timeout",
        env=None,
        default=3.0,
        type=float_between(0.1, 300),
        metavar="SECONDS",
        help="seconds to wait for the answer",
    )
    parser.flag(
        "--service",
        env=None,
        default="",
        metavar="NAME",
        help="the service to ask about (default: the whole server)",
    )
    add_tls_flags(parser, side="client")
    args = parser.parse_args(argv)
    tls = parse_tls(parser, args, side="client")
    try:
        status = check(args.address, service=args.service, timeout=args.timeout, tls=tls)
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        name = code.name if code is not None else "ERROR"
        hint = connection_hint(details, tls)
        details += f". {hint}" if hint else ""
        sys.stderr.write(f"unhealthy: {args.address}: {name}: {details}\n")
        return 1
    if status != "SERVING":
        sys.stderr.write(f"unhealthy: {args.address}: {status}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
