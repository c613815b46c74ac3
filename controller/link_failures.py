"""When the manipulator link fails: what to say, and when (pure, no I/O).

A link fails when a connect fails, and also when a connection is made but
ends before it did useful work (no ack arrived, and it was not open for
long): a plaintext link to a TLS-only manipulator, a client certificate the
manipulator refuses, a manipulator that closes on the first command. All of
them wait on one backoff (:class:`workcell.backoff.Backoff`), which only useful work resets, so no
failure can turn into a reconnect storm. A run of failures is an episode,
logged once with its reason (and once more for each other kind of failure
in it) and once when the link works again: :class:`FailureEpisode`.
"""

from __future__ import annotations

import enum
import ssl
from dataclasses import dataclass, field

__all__ = ["FailureEpisode", "LinkFailure", "Phase", "describe_failure", "describe_loss"]


class Phase(enum.Enum):
    """Where in a connection's life the link failed."""

    CONNECT = "connect"
    """TCP connect, and for a TLS link its handshake (part of the connect here)."""
    CONNECTED = "connected"
    """After the connect: the manipulator closed, reset or answered nonsense."""


@dataclass(frozen=True)
class LinkFailure:
    """One failed attempt: its kind (for "is this new in the episode?") and a readable reason."""

    kind: str
    reason: str

    @property
    def after_connect(self) -> bool:
        """Whether the connect itself had succeeded."""
        return self.kind.startswith(f"{Phase.CONNECTED.value}:")


# How a peer that hangs up in the middle of a TLS handshake shows on our side.
_DROPPED = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, EOFError)


def _exception_text(exc: BaseException) -> str:
    """``Type: message``, or just the type when the message is empty (a bare reset)."""
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def describe_failure(
    phase: Phase,
    exc: BaseException | None,
    *,
    tls: bool,
    seconds: float,
    connect_timeout: float,
) -> LinkFailure:
    """What went wrong with one attempt, readable by someone who has only the log.

    ``exc`` is None when the manipulator closed the connection cleanly (EOF);
    ``seconds`` is how long the connection was open. The hints name the
    usual causes of a connection that is made and then dropped at once, and
    point at the manipulator's log, which says which one it was.
    """
    if phase is Phase.CONNECT:
        if isinstance(exc, TimeoutError):
            return LinkFailure("connect:timeout", f"no answer within {connect_timeout:g}s")
        assert exc is not None
        if isinstance(exc, ssl.SSLCertVerificationError):
            return LinkFailure(
                f"connect:{type(exc).__name__}",
                f"the manipulator's certificate is not trusted: {_exception_text(exc)} "
                "(check --manipulator-tls-ca and --manipulator-tls-server-name)",
            )
        if isinstance(exc, ssl.SSLError) or (tls and isinstance(exc, _DROPPED)):
            return LinkFailure(
                f"connect:{type(exc).__name__}",
                f"the TLS handshake failed: {_exception_text(exc)} (does the manipulator "
                "run with --tls-cert? without it, it speaks plaintext and closes a TLS client; "
                "does it accept this controller's client certificate? its log says why)",
            )
        return LinkFailure(
            f"connect:{type(exc).__name__}", f"cannot connect: {_exception_text(exc)}"
        )

    how = (
        "closed the connection"
        if exc is None or isinstance(exc, EOFError)
        else f"broke the connection ({_exception_text(exc)})"
    )
    cannot_take = (
        "Or it cannot take the command: --max-frame too small, its journal deleted or moved. "
        "Its log says which"
    )
    if isinstance(exc, ssl.SSLError) or tls:
        hint = (
            "does it require a client certificate (--tls-ca) that this controller does not "
            "present, or that another CA signed? see --manipulator-tls-cert and "
            f"--manipulator-tls-key. {cannot_take}"
        )
    else:
        hint = (
            "is the manipulator TLS-only (--tls-cert)? it closes a plaintext link during the "
            f"TLS handshake: give this controller --manipulator-tls-ca. {cannot_take}"
        )
    return LinkFailure(
        f"connected:{'eof' if exc is None else type(exc).__name__}",
        f"the manipulator {how} {seconds:.2f}s after connect, acknowledging nothing ({hint})",
    )


def describe_loss(exc: BaseException | None) -> str:
    """Why a connection that had worked ended (``exc`` None: the manipulator closed it)."""
    return "the manipulator closed the connection" if exc is None else _exception_text(exc)


@dataclass
class FailureEpisode:
    """A run of failed attempts, from the first failure to the link working again."""

    started: float
    """When the first attempt failed (a monotonic clock, seconds)."""
    failures: int = 0
    kinds: set[str] = field(default_factory=set)
    connected: bool = False
    """Whether a connect succeeded during the episode."""

    def first_connect(self) -> bool:
        """Note a successful connect; True for the episode's first (then it is logged)."""
        first, self.connected = not self.connected, True
        return first

    def failed(self, failure: LinkFailure) -> bool:
        """Count an attempt; True when its kind is new in the episode (then it is logged)."""
        self.failures += 1
        self.connected = self.connected or failure.after_connect
        if failure.kind in self.kinds:
            return False
        self.kinds.add(failure.kind)
        return True
