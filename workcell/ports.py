"""Whether a TCP address can be listened on, asked of the kernel before a server binds it.

gRPC's C core reports a failed bind as "Failed to bind to address" (a
RuntimeError) and leaves the reason in its own log; and by default it sets
``SO_REUSEPORT``, so a second server on a busy port succeeds and silently
splits the connections with the first. The controller turns that off
(``grpc.so_reuseport`` 0) and asks here first, so a busy port is refused at
start, before the database or the manipulator is touched, with the kernel's
own reason in one line.
"""

from __future__ import annotations

import errno
import socket

from workcell.flags import Address

__all__ = ["ListenError", "check_listen", "listen_error"]


class ListenError(OSError):
    """``address`` cannot be listened on; the message says why."""

    def __init__(self, address: Address | str, reason: str) -> None:
        super().__init__(f"cannot listen on {address}: {reason}")
        self.address = address
        self.reason = reason


def listen_error(address: Address) -> str | None:
    """Why a server could not listen on ``address`` now (None: it could, as far as a probe sees).

    A probe socket with ``SO_REUSEADDR`` (as gRPC binds) and without
    ``SO_REUSEPORT`` is bound to each local address the host resolves to and
    closed at once. Port 0 always binds.
    """
    if address.port == 0:
        return None
    try:
        infos = socket.getaddrinfo(
            address.host or None,
            address.port,
            type=socket.SOCK_STREAM,
            flags=socket.AI_PASSIVE,
        )
    except socket.gaierror as exc:
        return f"cannot resolve {address.host!r} ({exc.strerror})"
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return "the address is in use by another process"
                # Not ours to judge (an IPv6 address on a host without IPv6
                # for one): the server's own bind decides.
                continue
    return None


def check_listen(address: Address) -> None:
    """Raise :class:`ListenError` when ``address`` is already in use."""
    reason = listen_error(address)
    if reason is not None:
        raise ListenError(address, reason)
