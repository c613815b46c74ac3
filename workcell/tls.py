"""TLS settings shared by every service: flags, checks, and credentials built from PEM files.

One :class:`TlsConfig` value says which PEM files a side of a connection uses.
On a **server** (the controller's gRPC port, the manipulator's TCP port),
``cert`` + ``key`` turn TLS on, and ``ca`` on top of them makes it mutual:
clients must present a certificate signed by that CA. On a **client** (a
sensor, ``workcell history``/``report``, the healthcheck, the controller's
link to the manipulator), ``ca`` turns TLS on and is what the server's
certificate is verified against; ``cert`` + ``key`` are the client's own
certificate, for servers that require one; ``server_name`` is the name
checked in the server's certificate when it differs from the address dialled.
Without those files everything stays plaintext, as before.

The files are read and checked once at start (:func:`parse_tls`), so a
missing key or a key that does not match its certificate exits with status 2
and one line naming the flag, instead of failing at the first connection.
"""

from __future__ import annotations

import argparse
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import grpc

from workcell.flags import FlagParser
from workcell.flags import address as parse_address
from workcell.ports import ListenError, listen_error

__all__ = [
    "PLAINTEXT",
    "Side",
    "TlsConfig",
    "TlsError",
    "add_grpc_port",
    "add_tls_flags",
    "check_tls",
    "client_ssl_context",
    "connection_hint",
    "grpc_aio_channel",
    "grpc_channel",
    "grpc_channel_credentials",
    "grpc_server_credentials",
    "parse_tls",
    "server_ssl_context",
]

Side = Literal["server", "client"]
Field = Literal["cert", "key", "ca", "server_name"]

# TLS 1.0/1.1 are deprecated (RFC 8996); gRPC's own floor is 1.2 as well.
_MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """PEM file paths for one side of a connection; all unset means plaintext."""

    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    server_name: str | None = None

    def enabled(self, side: Side) -> bool:
        """Whether this side speaks TLS: a server with a certificate, a client with a CA."""
        return (self.cert is not None) if side == "server" else (self.ca is not None)

    def describe(self, side: Side) -> str:
        """A few words for a log line: ``plaintext``, ``TLS`` or ``mutual TLS``."""
        if not self.enabled(side):
            return "plaintext"
        if side == "server":
            return "mutual TLS" if self.ca is not None else "TLS"
        return "TLS with a client certificate" if self.cert is not None else "TLS"


PLAINTEXT = TlsConfig()


class TlsError(ValueError):
    """A TLS setting that cannot work; ``field`` names the :class:`TlsConfig` field at fault."""

    def __init__(self, field: Field, message: str) -> None:
        super().__init__(message)
        self.field = field


# -- checks -----------------------------------------------------------------


def _no_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted
    # key; gRPC cannot use one anyway, so refuse it like a bad key.
    return b""


def _check_certificates(path: Path, field: Field) -> None:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        raise TlsError(field, f"no PEM certificate in {str(path)!r} ({exc.reason})") from None
    except OSError as exc:
        raise TlsError(field, f"cannot read {str(path)!r}: {exc.strerror or exc}") from None


def _check_key_pair(cert: Path, key: Path) -> None:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, password=_no_password)
    except ssl.SSLError as exc:
        raise TlsError(
            "key",
            f"{str(key)!r} is not an unencrypted PEM private key matching the certificate "
            f"{str(cert)!r} ({exc.reason})",
        ) from None
    except OSError as exc:
        raise TlsError("key", f"cannot read {str(key)!r}: {exc.strerror or exc}") from None


def check_tls(tls: TlsConfig, side: Side) -> None:
    """Raise :class:`TlsError` unless ``tls`` is complete and its files usable for ``side``."""
    if (tls.cert is None) != (tls.key is None):
        if tls.cert is None:
            raise TlsError("cert", "required with the private key (give both or neither)")
        raise TlsError("key", "required with the certificate (give both or neither)")
    if side == "server":
        if tls.ca is not None and tls.cert is None:
            raise TlsError(
                "ca", "requiring client certificates needs the server's own certificate and key"
            )
        if tls.server_name is not None:
            raise TlsError("server_name", "only a client checks the server's name")
    elif tls.ca is None:
        if tls.cert is not None:
            raise TlsError("cert", "a client certificate needs the CA that signed the server's")
        if tls.server_name is not None:
            raise TlsError("server_name", "needs the CA that signed the server's certificate")
    if tls.server_name is not None and not tls.server_name.strip():
        raise TlsError("server_name", "must not be empty")
    if tls.cert is not None and tls.key is not None:
        _check_certificates(tls.cert, "cert")
        _check_key_pair(tls.cert, tls.key)
    if tls.ca is not None:
        _check_certificates(tls.ca, "ca")


# -- flags ------------------------------------------------------------------


def _optional_path(text: str) -> Path | None:
    # An empty variable (compose's `${WORKCELL_TLS_CERT:-}`) means unset.
    return Path(text) if text.strip() else None


def _optional_text(text: str) -> str | None:
    return text.strip() or None


def _names(role: str, field: Field) -> tuple[str, str]:
    """The flag and the variable of ``field`` for ``role`` ("" or e.g. "manipulator")."""
    suffix = field.replace("_", "-")
    flag = f"--{role}-tls-{suffix}" if role else f"--tls-{suffix}"
    env = "WORKCELL_" + (f"{role}_" if role else "").upper() + "TLS_" + field.upper()
    return flag, env.replace("-", "_")


_SERVER_HELP: dict[Field, str] = {
    "cert": "PEM certificate (chain) to serve TLS with; needs --{p}tls-key",
    "key": "PEM private key of --{p}tls-cert",
    "ca": "PEM CA certificate(s): clients must present a certificate signed by it (mutual TLS)",
}
_CLIENT_HELP: dict[Field, str] = {
    "ca": "PEM CA certificate(s) to verify the server with; turns TLS on",
    "cert": "PEM client certificate to present (for servers requiring one); needs --{p}tls-key",
    "key": "PEM private key of --{p}tls-cert",
    "server_name": "name expected in the server's certificate, when not the address's host",
}


def add_tls_flags(parser: FlagParser, *, side: Side, role: str = "", what: str = "") -> None:
    """Add ``--[ROLE-]tls-cert/-key/-ca`` (and ``-server-name`` on a client) to ``parser``.

    Each reads ``WORKCELL_[ROLE_]TLS_*`` from the environment too. ``what``
    prefixes the help texts (e.g. "manipulator link: ").
    """
    helps = _SERVER_HELP if side == "server" else _CLIENT_HELP
    prefix = f"{role}-" if role else ""
    for field, text in helps.items():
        flag, env = _names(role, field)
        parser.flag(
            flag,
            env=env,
            default=None,
            type=_optional_text if field == "server_name" else _optional_path,
            metavar="NAME" if field == "server_name" else "PEM",
            help=what + text.format(p=prefix),
        )


def parse_tls(
    parser: FlagParser, args: argparse.Namespace, *, side: Side, role: str = ""
) -> TlsConfig:
    """The :class:`TlsConfig` from flags added by :func:`add_tls_flags`, checked.

    A bad combination or file exits through ``parser.error`` (status 2, one
    line naming the flag, and the variable when the value came from one).
    """
    prefix = f"{role}_tls_" if role else "tls_"
    tls = TlsConfig(
        cert=getattr(args, prefix + "cert"),
        key=getattr(args, prefix + "key"),
        ca=getattr(args, prefix + "ca"),
        server_name=getattr(args, prefix + "server_name", None),
    )
    try:
        check_tls(tls, side)
    except TlsError as exc:
        parser.error(f"argument {_names(role, exc.field)[0]}: {exc}")
    return tls


# -- credentials ------------------------------------------------------------


def _read(path: Path | None) -> bytes | None:
    return None if path is None else path.read_bytes()


def server_ssl_context(tls: TlsConfig) -> ssl.SSLContext | None:
    """The context to accept TLS connections with, or None for plaintext."""
    if tls.cert is None or tls.key is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _MINIMUM_VERSION
    context.load_cert_chain(tls.cert, tls.key, password=_no_password)
    if tls.ca is not None:
        context.load_verify_locations(cafile=tls.ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_ssl_context(tls: TlsConfig) -> ssl.SSLContext | None:
    """The context to connect with (server verified, host name checked), or None for plaintext."""
    if tls.ca is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca)
    context.minimum_version = _MINIMUM_VERSION
    if tls.cert is not None and tls.key is not None:
        context.load_cert_chain(tls.cert, tls.key, password=_no_password)
    return context


def grpc_server_credentials(tls: TlsConfig) -> grpc.ServerCredentials | None:
    """gRPC server credentials (mutual when ``ca`` is set), or None for plaintext."""
    if tls.cert is None or tls.key is None:
        return None
    pair = (tls.key.read_bytes(), tls.cert.read_bytes())
    return grpc.ssl_server_credentials(
        [pair], root_certificates=_read(tls.ca), require_client_auth=tls.ca is not None
    )


def grpc_channel_credentials(tls: TlsConfig) -> grpc.ChannelCredentials | None:
    """gRPC channel credentials trusting only ``ca``, or None for plaintext."""
    if tls.ca is None:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=tls.ca.read_bytes(),
        private_key=_read(tls.key),
        certificate_chain=_read(tls.cert),
    )


def _channel_options(tls: TlsConfig, options: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    if tls.ca is not None and tls.server_name is not None:
        return [*options, ("grpc.ssl_target_name_override", tls.server_name)]
    return list(options)


def grpc_channel(
    target: str, tls: TlsConfig, *, options: Sequence[tuple[str, Any]] = ()
) -> grpc.Channel:
    """A blocking channel to ``target``: secure when ``tls`` has a CA, else plaintext."""
    credentials = grpc_channel_credentials(tls)
    if credentials is None:
        return grpc.insecure_channel(target, options=list(options))
    return grpc.secure_channel(target, credentials, options=_channel_options(tls, options))


def grpc_aio_channel(
    target: str, tls: TlsConfig, *, options: Sequence[tuple[str, Any]] = ()
) -> grpc.aio.Channel:
    """An asyncio channel to ``target``: secure when ``tls`` has a CA, else plaintext."""
    credentials = grpc_channel_credentials(tls)
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=list(options))
    return grpc.aio.secure_channel(target, credentials, options=_channel_options(tls, options))


def add_grpc_port(server: grpc.aio.Server, address: str, tls: TlsConfig) -> int:
    """Bind ``server`` to ``address`` with TLS when ``tls`` has a certificate; the bound port.

    A failed bind raises :class:`~workcell.ports.ListenError` (an OSError)
    with the kernel's reason when a probe can learn it: gRPC itself raises a
    RuntimeError that only says it failed.
    """
    credentials = grpc_server_credentials(tls)
    try:
        if credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        try:
            reason = listen_error(parse_address(address))
        except argparse.ArgumentTypeError:
            reason = None
        raise ListenError(address, reason or str(exc)) from exc


# -- why a connection failed --------------------------------------------------


def connection_hint(details: str, tls: TlsConfig, *, server: str = "the server") -> str | None:
    """The likely cause of a failed connection, as a sentence for the client's error line.

    ``details`` is a gRPC status's (UNAVAILABLE's) text, ``tls`` this client's
    settings. A server that refuses a TLS handshake just closes the socket,
    so a rejected client sees only "Socket closed": what it was asked for can
    only be guessed from the client's own settings. None when nothing in
    ``details`` points at TLS.
    """
    subject = server[:1].upper() + server[1:]
    if "WRONG_VERSION_NUMBER" in details:
        return (
            f"{subject} did not answer the TLS handshake in TLS: does it run without "
            "--tls-cert (plaintext)? Then connect without --tls-ca."
        )
    if "CERTIFICATE_VERIFY_FAILED" in details:
        return (
            f"This client does not trust {server}'s certificate: is it signed by the CA "
            "given with --tls-ca, and still valid?"
        )
    if "Hostname Verification" in details or "Peer name" in details:
        return (
            f"{subject}'s certificate does not name the host dialled: give a name it holds "
            "with --tls-server-name."
        )
    # pick_first says "failed to connect to all addresses", round_robin (a
    # sensor's channel, workcell.targets) "connections to all backends failing".
    connect_failed = "failed to connect" in details or "to all backends failing" in details
    # A TLS server refuses a plaintext client by closing the socket; on a loaded
    # machine that can come after the client's connect deadline, which then says it
    # never got the server's HTTP/2 SETTINGS. A TLS client that got that far had
    # completed its handshake: that wording says nothing about TLS to it.
    unanswered = "before receiving SETTINGS frame" in details and not tls.enabled("client")
    if not connect_failed or ("Socket closed" not in details and not unanswered):
        return None
    if not tls.enabled("client"):
        what = "never answered in HTTP/2" if unanswered else "closed the connection at once"
        return (
            f"{subject} {what}: does it require TLS? Then give "
            "--tls-ca (and --tls-cert/--tls-key if it requires client certificates)."
        )
    if tls.cert is None:
        return (
            f"{subject} closed the connection during the TLS handshake: does it require "
            "a client certificate (--tls-cert/--tls-key)?"
        )
    return (
        f"{subject} closed the connection during the TLS handshake: does it not trust "
        "this client certificate (--tls-cert)? It must be signed by the CA the server "
        "was given with --tls-ca."
    )
