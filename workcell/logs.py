"""Log set-up for the services' ``__main__`` modules (library code never calls it).

Two formats, chosen by ``--log-format`` / ``WORKCELL_LOG_FORMAT``, for the
service's own lines and, read back from stderr, gRPC core's (logger
``grpc.core``, see :mod:`workcell.native_stderr`):

- ``text`` (default): ``2025-01-31T12:00:00.123Z INFO controller.app: listening on …``
- ``json``: one object per line with ``time``, ``level``, ``logger``, ``message``, the
  fields the call passed with ``extra={...}`` as top-level keys, and ``exception`` /
  ``stack`` when the record carries them. For log shippers.

:func:`log_message` gives back the message of a line in either format, so
readers of the services' lines (``workcell run``, tests) work with both.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from typing import Any

from workcell.flags import FlagParser
from workcell.native_stderr import capture_native_stderr

__all__ = [
    "LOG_FORMATS",
    "JsonFormatter",
    "add_log_flags",
    "configure_logging",
    "log_format",
    "log_message",
    "make_formatter",
]

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
# (taskName is new in Python 3.12; listed so it is never taken for an extra.)
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", (), None)).keys()
    | {"message", "asctime", "taskName"}
)


def _utc_time(record: logging.LogRecord) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{stamp}.{int(record.msecs):03d}Z"


class _UTCFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _utc_time(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, then the ``extra`` fields.

    The four fixed keys win over an ``extra`` field of the same name (they are
    what shippers index on). Values JSON cannot hold (objects, NaN, infinities)
    are written as ``str()``.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (no newline inside: JSON escapes it)."""
        event: dict[str, Any] = {
            "time": _utc_time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and key not in event:
                # NaN and infinities are not JSON; strict parsers reject Python's NaN.
                if isinstance(value, float) and not math.isfinite(value):
                    value = str(value)
                event[key] = value
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            event["exception"] = record.exc_text
        if record.stack_info:
            event["stack"] = self.formatStack(record.stack_info)
        # Default separators keep a space after ", " so a regex like
        # ``listening on (\S+):(\d+)`` run over the raw line stops at the message's end.
        return json.dumps(event, ensure_ascii=False, default=str)


def make_formatter(fmt: str = "text") -> logging.Formatter:
    """The formatter for ``fmt`` (one of :data:`LOG_FORMATS`); ValueError otherwise."""
    if fmt == "text":
        return _UTCFormatter(TEXT_FORMAT)
    if fmt == "json":
        return JsonFormatter()
    raise ValueError(f"unknown log format {fmt!r}: expected one of {', '.join(LOG_FORMATS)}")


def configure_logging(
    level: str = "INFO", fmt: str = "text", *, native_stderr: bool = False
) -> None:
    """One line per record on stderr, as ``text`` (UTC time, level, logger, message) or ``json``.

    With ``native_stderr`` (a process's ``__main__``, never a library or a
    test), what native code writes to stderr, gRPC core's log lines, is
    logged the same way (see :mod:`workcell.native_stderr`).
    """
    stream = capture_native_stderr() if native_stderr else sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(make_formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def add_log_flags(parser: FlagParser) -> None:
    """``--log-level`` and ``--log-format`` (WORKCELL_LOG_LEVEL, WORKCELL_LOG_FORMAT)."""
    parser.flag(
        "--log-level",
        env="WORKCELL_LOG_LEVEL",
        default="INFO",
        type=log_level,
        metavar="LEVEL",
        help="log level: DEBUG, INFO, WARNING, ERROR",
    )
    parser.flag(
        "--log-format",
        env="WORKCELL_LOG_FORMAT",
        default="text",
        type=log_format,
        metavar="text|json",
        help="log lines as text, or as JSON objects for log shippers",
    )


def log_level(text: str) -> str:
    """Flag type for ``--log-level`` (any case).

    A type rather than argparse ``choices``: argparse does not check choices
    against a default, and defaults come from WORKCELL_LOG_LEVEL.
    """
    value = text.strip().upper()
    if value not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(LOG_LEVELS)}, got {text!r}")
    return value


def log_format(text: str) -> str:
    """Flag type for ``--log-format``: ``text`` or ``json`` (any case)."""
    value = text.strip().lower()
    if value not in LOG_FORMATS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(LOG_FORMATS)}, got {text!r}")
    return value


def log_message(line: str) -> str:
    """The message of a log line: the ``message`` of a JSON line, else the line itself."""
    if line.startswith("{"):
        try:
            event = json.loads(line)
        except ValueError:
            return line
        message = event.get("message") if isinstance(event, dict) else None
        if isinstance(message, str):
            return message
    return line
