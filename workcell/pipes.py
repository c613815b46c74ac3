"""Ending quietly when whoever reads our output has gone (``| head``, a closed terminal).

Python ignores SIGPIPE, so a write into a pipe nobody reads raises
BrokenPipeError (EPIPE), and a write to a terminal that hung up raises
OSError EIO. Neither is a failure of the command: the reader has what it
wanted. :func:`quiet_when_output_gone` wraps a command's ``main`` so that
it ends without a traceback and with the status of a complete run, 0;
:func:`output_gone` tells such an error from any other (a socket's EPIPE
is not our stdout's). After either, :func:`discard_stdout` points stdout at
/dev/null: the interpreter flushes it once more at exit, and that flush
would fail again, printing "Exception ignored ... BrokenPipeError".
"""

from __future__ import annotations

import errno
import functools
import os
import select
import sys
from collections.abc import Callable
from typing import ParamSpec, TextIO

__all__ = ["discard_stdout", "output_gone", "quiet_when_output_gone"]

P = ParamSpec("P")

_GONE = select.POLLERR | select.POLLHUP | select.POLLNVAL


def _closed(stream: TextIO) -> bool:
    """Whether ``stream``'s reader is gone: its descriptor polls as an error or a hang-up."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & _GONE for _, events in poller.poll(0))


def output_gone(exc: OSError, stream: TextIO | None = None) -> bool:
    """Whether ``exc`` means ``stream`` (default stdout) has no reader any more.

    EPIPE or EIO, and the stream's descriptor says so too: the same errno
    from a socket or a file elsewhere in the command is a real error.
    """
    if exc.errno not in (errno.EPIPE, errno.EIO):
        return False
    return _closed(sys.stdout if stream is None else stream)


def discard_stdout() -> None:
    """Send what Python still holds for stdout, and anything written later, to /dev/null."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def quiet_when_output_gone(main: Callable[P, int]) -> Callable[P, int]:
    """``main``, ending with status 0 and no traceback once stdout's reader is gone."""

    @functools.wraps(main)
    def run(*args: P.args, **kwargs: P.kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except OSError as exc:
            if not output_gone(exc):
                raise
            discard_stdout()
            return 0

    return run
