"""Failed TLS handshakes: what each one means, and how often to say so (pure, no I/O).

A TLS-only manipulator closes a client whose handshake fails before it can
send a command: a plaintext client, a client without the certificate
``--tls-ca`` requires, or with one signed by another CA. The client cannot
tell which (the connection is just closed), so the manipulator's log has to.
A misconfigured client retries, and a scanner may open thousands of
connections, so the lines are rate-limited by a :class:`LogThrottle`: the
first failure at once, then at most one line per interval, saying how many
were not logged in between.
"""

from __future__ import annotations

import re
import ssl
import time
from collections.abc import Callable

__all__ = ["HANDSHAKE_LOG_INTERVAL", "LogThrottle", "handshake_failure_reason"]

HANDSHAKE_LOG_INTERVAL = 60.0
"""Seconds between two lines about failed handshakes, at most."""

_SOURCE_LINE = re.compile(r" \(_ssl\.c:\d+\)$")
# OpenSSL's reason codes for the usual misconfigurations, and what they mean.
_HINTS = {
    "WRONG_VERSION_NUMBER": (
        "not a TLS client: a plaintext controller? give it --manipulator-tls-ca"
    ),
    "HTTP_REQUEST": "an HTTP request, not a TLS client",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": (
        "the client presented no certificate, and --tls-ca requires one "
        "(give the controller --manipulator-tls-cert and --manipulator-tls-key)"
    ),
    "CERTIFICATE_VERIFY_FAILED": "the client's certificate is not signed by --tls-ca",
    "TLSV1_ALERT_UNKNOWN_CA": (
        "the client does not trust this manipulator's certificate (its --manipulator-tls-ca "
        "is another CA)"
    ),
    "SSLV3_ALERT_BAD_CERTIFICATE": "the client rejected this manipulator's certificate",
}


def handshake_failure_reason(exc: BaseException) -> str:
    """One readable phrase for why a server-side handshake failed."""
    if isinstance(exc, TimeoutError | ConnectionAbortedError) and "longer than" in str(exc):
        return f"no complete handshake in time ({exc})"
    if isinstance(exc, ssl.SSLError):
        # "[SSL: REASON] what OpenSSL says (_ssl.c:NNNN)": the source line says nothing here.
        text = _SOURCE_LINE.sub("", str(exc))
        hint = _HINTS.get(exc.reason or "")
        return f"{text}: {hint}" if hint else text
    if isinstance(exc, ConnectionError | EOFError) or not str(exc):
        return f"the client closed the connection during the handshake ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}"


class LogThrottle:
    """At most one line per ``interval`` seconds about one kind of event; counts the others."""

    def __init__(
        self,
        interval: float = HANDSHAKE_LOG_INTERVAL,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval = interval
        self._clock = clock
        self._last: float | None = None
        self.suppressed = 0
        """Events not logged since the last line."""

    def admit(self) -> int | None:
        """An event: None when it must not be logged (it is counted); else how many were not.

        The first event is always admitted, then one per interval.
        """
        now = self._clock()
        if self._last is not None and now - self._last < self._interval:
            self.suppressed += 1
            return None
        self._last = now
        skipped, self.suppressed = self.suppressed, 0
        return skipped

    def take_suppressed(self) -> int:
        """The events not logged yet (for a last line at shutdown); the count starts over."""
        skipped, self.suppressed = self.suppressed, 0
        return skipped
