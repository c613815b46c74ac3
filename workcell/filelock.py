"""Exclusive locks on files, held while a process runs: one process per file it guards.

``flock`` rather than POSIX record locks (``fcntl.lockf``): a flock belongs
to the open file description, so the kernel drops it when the process dies
however it dies (SIGKILL included, no stale lock to clean up), and a second
open of the same file conflicts even within one process (a record lock would
be granted again to its owner). It is advisory: it guards against processes
that also take it, which is what every user of this module does.

Two layers: :func:`open_lock_file` and :func:`try_lock` for a caller with
rules of its own about its lock file (the manipulator's journal keeps a note
in it), and :class:`PidLock`, a lock file that holds its owner's pid so that
a process refused can say which process holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["FileLocked", "PidLock", "open_lock_file", "try_lock"]

# A pid is at most 7 digits on Linux (pid_max <= 2^22); read a little more.
_PID_BYTES = 32


def open_lock_file(path: Path) -> int:
    """Open (or create) ``path`` for locking; the descriptor (close-on-exec, not inherited)."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


def try_lock(fd: int) -> bool:
    """Take the exclusive flock of ``fd`` without waiting; False when another holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class FileLocked(OSError):
    """Another process holds the lock on ``path``; ``holder`` is its pid, when it wrote one."""

    def __init__(self, path: Path, holder: int | None) -> None:
        who = "another process" if holder is None else f"process {holder}"
        super().__init__(f"{path} is locked by {who}")
        self.path = path
        self.holder = holder


def _pid_in(fd: int) -> int | None:
    try:
        text = os.pread(fd, _PID_BYTES, 0).decode("ascii", errors="replace")
    except OSError:
        return None
    first = text.split("\n", 1)[0].strip()
    # Empty while the holder is between taking the lock and writing its pid.
    return int(first) if first.isdigit() else None


class PidLock:
    """An exclusive lock file that names the pid of the process holding it.

    ``PidLock.acquire(path)`` takes the lock and writes ``<pid>\\n`` into the
    file (replacing whatever a dead holder left), or raises
    :class:`FileLocked` naming the holder. The file itself stays after
    :meth:`release`: it is the lock's name, not a sign of a running process.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: Path) -> PidLock:
        """Lock ``path`` (created if missing) or raise :class:`FileLocked`; OSError if unusable."""
        fd = open_lock_file(path)
        try:
            if not try_lock(fd):
                raise FileLocked(path, _pid_in(fd))
            # The pid is for people and for the refusal message of another
            # process; no fsync: after a crash the lock is free anyway.
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd)

    def release(self) -> None:
        """Drop the lock (closing the file drops it); idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
