"""One gRPC target for several controller nodes, so gRPC itself spreads and fails over.

A client given ``HOST:PORT[,HOST:PORT...]`` (or one DNS name that resolves to
every node) gets a single channel whose target gRPC's own resolvers
understand, with the ``round_robin`` load-balancing policy: each new stream
goes to the next node whose connection is READY, and a node whose
connection fails is skipped until it is back. gRPC has a scheme for a list
of IP literals and one for a DNS name, none for a list of names:

===========================================  ==========================================
given                                        target
===========================================  ==========================================
``10.0.0.1:50051``                           ``ipv4:10.0.0.1:50051``
``10.0.0.1:1,10.0.0.2:1``                    ``ipv4:10.0.0.1:1,10.0.0.2:1``
``[::1]:1,[::1]:2``                          ``ipv6:[::1]:1,[::1]:2``
``controller:50051`` (one name)              ``dns:///controller:50051`` (re-resolved by gRPC)
``node-a:1,node-b:1`` (names in a list)      resolved once, at start, into an ``ipv4:``/
                                             ``ipv6:`` list of every address of each name
===========================================  ==========================================

Parsing (:func:`parse_addresses`) and building (:func:`grpc_target`) are
pure; the one piece of I/O, resolving names of a list, is passed in
(:func:`resolve_host` is the real one).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from workcell.flags import Address, address

__all__ = [
    "ROUND_ROBIN",
    "GrpcTarget",
    "Resolver",
    "TargetError",
    "grpc_target",
    "parse_addresses",
    "resolve_host",
]

Family = Literal[4, 6]
FAMILIES: tuple[Family, ...] = (4, 6)
Resolver = Callable[[str, int], Sequence[str]]
"""``(host, port)`` -> the IP addresses (as text) the host name resolves to."""

ROUND_ROBIN = ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]}))
"""The channel option that makes gRPC spread calls over every address of the target."""


class TargetError(ValueError):
    """The addresses cannot make one gRPC target; the message names the part at fault."""


def parse_addresses(text: str) -> tuple[Address, ...]:
    """Flag type: ``HOST:PORT`` or several, comma-separated (IPv6 hosts in brackets).

    Each port must be dialable (1-65535); an address may be given once.
    """
    parts = [part.strip() for part in text.split(",")]
    found: list[Address] = []
    for number, part in enumerate(parts, 1):
        where = f" (address {number} of {len(parts)})" if len(parts) > 1 else ""
        if not part:
            raise argparse.ArgumentTypeError(f"empty address{where} in {text!r}")
        try:
            parsed = address(part)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(
                f"expected HOST:PORT[,HOST:PORT...], got {part!r}{where}"
            ) from None
        if parsed.port == 0:
            raise argparse.ArgumentTypeError(f"port 0 cannot be dialled: {part!r}{where}")
        if parsed in found:
            raise argparse.ArgumentTypeError(f"{part!r} is listed twice in {text!r}")
        found.append(parsed)
    return tuple(found)


def ip_family(host: str) -> Family | None:
    """4 or 6 for an IP literal, None for a host name."""
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        return None
    return 4 if version == 4 else 6


@dataclass(frozen=True, slots=True)
class GrpcTarget:
    """The target to open a channel to, and the options that go with it."""

    uri: str
    """What ``grpc.aio.insecure_channel``/``secure_channel`` is given."""
    addresses: tuple[Address, ...]
    """The addresses as given (names unresolved)."""
    authority: str | None = None
    """``:authority`` and the name TLS checks, when gRPC would not derive a usable one."""

    @property
    def options(self) -> list[tuple[str, Any]]:
        """Channel options: ``round_robin``, and the authority for an address list."""
        options: list[tuple[str, Any]] = [ROUND_ROBIN]
        if self.authority is not None:
            options.append(("grpc.default_authority", self.authority))
        return options

    @property
    def hosts(self) -> tuple[str, ...]:
        """The distinct hosts given, in order."""
        return tuple(dict.fromkeys(a.host for a in self.addresses))

    def __str__(self) -> str:
        given = ",".join(str(a) for a in self.addresses)
        return given if self.uri in (f"ipv4:{given}", f"ipv6:{given}") else f"{given} ({self.uri})"


def _literal(family: Family, host: str, port: int) -> str:
    return f"[{host}]:{port}" if family == 6 else f"{host}:{port}"


def _by_family(ips: Sequence[str], port: int) -> dict[Family, list[str]]:
    found: dict[Family, list[str]] = {4: [], 6: []}
    for ip in ips:
        family = ip_family(ip)
        if family is not None:
            found[family].append(_literal(family, ip, port))
    return found


def grpc_target(addresses: Sequence[Address], resolve: Resolver) -> GrpcTarget:
    """The target for ``addresses`` (see the module's table); :class:`TargetError` if none.

    ``resolve`` is called only for host names in a list of several.
    """
    if not addresses:
        raise TargetError("no address given")
    given = tuple(addresses)
    first = given[0]
    if len(given) == 1 and ip_family(first.host) is None:
        return GrpcTarget(f"dns:///{first}", given)
    reach: dict[Family, list[str]] = {4: [], 6: []}  # literals per family
    missing: dict[Family, list[Address]] = {4: [], 6: []}  # what a family does not reach
    for item in given:
        ips = [item.host] if ip_family(item.host) is not None else resolve(item.host, item.port)
        found = _by_family(ips, item.port)
        if not found[4] and not found[6]:
            raise TargetError(f"{item.host!r} resolves to no IP address (in {item})")
        for family in FAMILIES:
            if found[family]:
                reach[family].extend(found[family])
            else:
                missing[family].append(item)
    # One family per target (gRPC's ipv4:/ipv6: schemes); IPv4 when it reaches every node.
    if not missing[4]:
        family = 4
    elif not missing[6]:
        family = 6
    else:
        raise TargetError(
            f"{missing[4][0]} has no IPv4 address and {missing[6][0]} no IPv6 address: "
            "one list must reach every node in one address family"
        )
    literals = list(dict.fromkeys(reach[family]))  # a name may repeat another's address
    scheme = "ipv4" if family == 4 else "ipv6"
    # Without it gRPC would use the whole list as the authority, and TLS
    # would check the certificate against that text.
    authority = str(first) if len(given) > 1 else None
    return GrpcTarget(f"{scheme}:{','.join(literals)}", given, authority)


def resolve_host(host: str, port: int) -> list[str]:
    """The IP addresses ``host`` resolves to now (getaddrinfo), in the resolver's order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise TargetError(f"cannot resolve {host!r}: {exc.strerror}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))
