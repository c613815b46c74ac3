"""What native code writes to stderr, read back and logged in the service's own format.

gRPC's C core logs through Abseil straight to file descriptor 2: grpcio calls
``absl::InitializeLog()`` when it is imported, and offers no Python hook for
its lines. One such line is the only place a server says why it refused a
client, e.g.::

    I1202 01:43:14.769861    8255 ssl_transport_security.cc:2563] Handshake failed with error ...

Written raw, it breaks a ``--log-format json`` stream and escapes
``--log-level``. :func:`capture_native_stderr` points descriptor 2 at a pipe
and gives Python's own ``sys.stderr`` a copy of the original descriptor; a
thread reads the pipe and logs each line: Abseil's under the logger
``grpc.core`` at their own severity (``I``/``W``/``E``/``F`` as INFO, WARNING,
ERROR, CRITICAL) with the core's ``file:line`` as ``grpc_source``, any other
line under ``stderr`` as a WARNING. ``GRPC_VERBOSITY`` and ``GRPC_TRACE`` keep
their meaning (what the core writes); the log level filters what is shown.

Limit: a line the core writes just before aborting the process (a fatal
error) may be lost, as its reader dies with the process; so is one written
after the capture stopped at exit (it goes to /dev/null rather than raw to
the terminal).

:func:`parse_core_line` is pure; the capture is the I/O around it, started by
:func:`workcell.logs.configure_logging` in the services' ``__main__`` only.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import sys
import threading
from dataclasses import dataclass
from typing import TextIO

__all__ = ["CoreLine", "capture_native_stderr", "parse_core_line"]

CORE_LOGGER = "grpc.core"
OTHER_LOGGER = "stderr"

# Abseil's prefix: severity letter, MMDD, time, thread id, file:line, "] ".
# (Before absl::InitializeLog() the date and time read "0000 00:00:<epoch>".)
_ABSL_LINE = re.compile(r"([IWEF])\d{4} \S+\s+\d+ ([^\s\]]+)\] ?(.*)")
_SEVERITIES = {
    "I": logging.INFO,
    "W": logging.WARNING,
    "E": logging.ERROR,
    "F": logging.CRITICAL,
}
# Seconds to wait at exit for the lines still in the pipe to be logged.
_DRAIN_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class CoreLine:
    """One line read from descriptor 2: its level, message and, for Abseil's, the source."""

    level: int
    message: str
    source: str | None = None
    """The core's ``file:line``; None for a line not in Abseil's format."""


def parse_core_line(line: str) -> CoreLine:
    """The level, message and source of one stderr line (without its newline)."""
    match = _ABSL_LINE.fullmatch(line)
    if match is None:
        return CoreLine(logging.WARNING, line)
    severity, source, message = match.groups()
    return CoreLine(_SEVERITIES[severity], message, source)


class _Capture:
    """Descriptor 2 redirected into a pipe, and the thread that logs what comes out of it."""

    def __init__(self) -> None:
        sys.stderr.flush()
        self._original = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
        # Line-buffered, as a terminal's stderr: each log line goes out whole, at once.
        self.stream: TextIO = os.fdopen(
            self._original,
            "w",
            buffering=1,
            encoding=encoding,
            errors="backslashreplace",
            closefd=False,
        )
        self._thread = threading.Thread(
            target=self._pump, args=(read_end,), name="native-stderr", daemon=True
        )
        self._thread.start()
        atexit.register(self.stop)

    def _pump(self, read_end: int) -> None:
        pending = b""
        try:
            while chunk := os.read(read_end, 65536):
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    self._log(line)
            if pending:
                self._log(pending)
        finally:
            os.close(read_end)

    @staticmethod
    def _log(raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").rstrip("\r")
        if not text.strip():
            return
        line = parse_core_line(text)
        if line.source is None:
            logging.getLogger(OTHER_LOGGER).log(line.level, "%s", line.message)
        else:
            logging.getLogger(CORE_LOGGER).log(
                line.level, "%s", line.message, extra={"grpc_source": line.source}
            )

    def stop(self) -> None:
        """Log what is left in the pipe (at exit); later native lines go nowhere.

        Descriptor 2 is pointed at /dev/null, not given back to the terminal:
        core threads still finishing (a TLS handshake as the process stops)
        would otherwise write raw lines into a ``--log-format json`` stream.
        Python's own ``sys.stderr`` keeps its copy of the original descriptor.
        """
        # The pipe's only write end was descriptor 2: replacing it ends the reader.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        self._thread.join(_DRAIN_SECONDS)


_capture: _Capture | None = None
_lock = threading.Lock()


def capture_native_stderr() -> TextIO:
    """Log what native code writes to stderr; the stream Python's own stderr now goes to.

    Idempotent. Sets ``sys.stderr`` to that stream, so tracebacks and
    warnings still reach the terminal directly; log handlers must write to it
    too (a handler writing to descriptor 2 would read its own lines back).
    Nothing is done when ``sys.stderr`` is not descriptor 2 (a test harness
    captures it: a command's ``main`` called in-process leaves it alone).
    """
    global _capture
    with _lock:
        if _capture is None:
            try:
                if sys.stderr.fileno() != 2:
                    return sys.stderr
            except (AttributeError, OSError, ValueError):  # no descriptor at all
                return sys.stderr
            _capture = _Capture()
            sys.stderr = _capture.stream
        return _capture.stream
