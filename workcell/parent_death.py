"""Children that die with their parent, however the parent ends (Linux).

``workcell run`` stops its children itself on SIGINT, SIGTERM and SIGHUP, in
order. What it cannot handle is its own SIGKILL (or a crash of the
interpreter): its children would be orphaned, still holding their ports.
``PR_SET_PDEATHSIG`` asks the kernel to send a process a signal when its
parent dies, and it survives ``execve``. So each child is started through
this module::

    python -m workcell.parent_death PARENT_PID SIGNAL -- python -m sensor ...

which asks for SIGNAL on the parent's death, checks that its parent is
still PARENT_PID (a parent that died before the ``prctl`` call has already
left the child to init, and no signal would ever come: it exits at once),
and then becomes the real command by ``execv``, under the same pid.

Why not a ``preexec_fn`` doing the same between fork and exec: it makes
``subprocess`` use ``fork()`` rather than ``vfork()``, which runs gRPC's
fork handlers in a process that uses gRPC (``run`` polls History); they
restart gRPC's threads in the child, which then abort on the descriptors
``subprocess`` closes before the exec (seen: a sensor killed by SIGABRT,
"epoll_wait error: Bad file descriptor").

Two details of the kernel's rule: the signal is tied to the *thread* that
forked the child, not the process (``run`` starts children from its event
loop, the main thread, which lives as long as the process); and the signal
is SIGTERM: every service stops cleanly on it (sensors deliver what they
hold, the controller flushes), and it ends a process that has not yet
installed its handlers as surely as SIGKILL would.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Sequence

__all__ = ["PR_SET_PDEATHSIG", "guarded", "main"]

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def guarded(
    argv: Sequence[str], *, python: str = sys.executable, signum: int = signal.SIGTERM
) -> list[str]:
    """``argv``, run so that it is sent ``signum`` when this process dies."""
    return [
        python, "-m", "workcell.parent_death", str(os.getpid()), str(int(signum)), "--", *argv,
    ]  # fmt: skip


def _set_parent_death_signal(signum: int) -> None:
    if not sys.platform.startswith("linux"):
        return  # no prctl: the parent's own stop is all there is
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    if prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def main(argv: Sequence[str] | None = None) -> int:
    """``PARENT_PID SIGNAL -- COMMAND...``: exec COMMAND, to be sent SIGNAL when PARENT_PID dies.

    Returns only when it cannot go on: 2 for a bad command line, 128 + SIGNAL
    when the parent is already gone, 127 when COMMAND cannot be run.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 4 or args[2] != "--" or not args[0].isdigit() or not args[1].isdigit():
        sys.stderr.write("usage: python -m workcell.parent_death PARENT_PID SIGNAL -- COMMAND...\n")
        return 2
    parent, signum, command = int(args[0]), int(args[1]), args[3:]
    _set_parent_death_signal(signum)
    if os.getppid() != parent:
        return 128 + signum  # the parent died before it could be watched
    try:
        os.execv(command[0], command)
    except OSError as exc:
        sys.stderr.write(f"workcell.parent_death: cannot run {command[0]}: {exc.strerror}\n")
        return 127


if __name__ == "__main__":
    sys.exit(main())
