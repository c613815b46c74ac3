"""Child processes of a benchmark run: started with their log in a file, always cleaned up.

Every child is registered with a :class:`Children` group; leaving the group (``with``) stops
whatever still runs, SIGTERM first and SIGKILL after a timeout, so no run leaves processes
behind whatever fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from benchmarks.procstat import Usage, read_usage

__all__ = ["Child", "ChildError", "Children", "RssSampler"]

ROOT = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(r"listening on (\S+):(\d+)")


class ChildError(RuntimeError):
    """A child did not start, or said something unexpected."""


class Child:
    """One ``python -m module`` process; stderr goes to ``<run_dir>/<name>.log``."""

    def __init__(
        self,
        name: str,
        module: str,
        args: Sequence[str],
        *,
        run_dir: Path,
        pipes: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.log_path = run_dir / f"{name}.log"
        self._log = self.log_path.open("w")
        self.port = 0
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stderr=self._log,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    def log_text(self) -> str:
        """Everything the child wrote to stderr so far."""
        return self.log_path.read_text(errors="replace")

    def wait_for_line(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """Poll the log until a line matches ``pattern``; ChildError on exit or timeout."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log_text().splitlines():
                if match := regex.search(line):
                    return match
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(self.log_text().splitlines()[-15:])
                raise ChildError(
                    f"{self.name}: no line matching {pattern!r} "
                    f"(exit code {self.process.poll()}); last lines:\n{tail}"
                )
            time.sleep(0.05)

    def wait_listening(self, timeout: float = 30.0) -> int:
        """Wait for ``listening on HOST:PORT`` and return the port."""
        self.port = int(self.wait_for_line(_LISTENING.pattern, timeout).group(2))
        return self.port

    def usage(self) -> Usage:
        """A /proc sample of the running child."""
        return read_usage(self.pid)

    def request(self, line: str, timeout: float = 30.0) -> str:
        """Write one command line to stdin and read one answer line from stdout."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        answer: list[str] = []
        reader = threading.Thread(
            target=lambda: answer.append(self.process.stdout.readline()),  # type: ignore[union-attr]
            daemon=True,
        )
        reader.start()
        reader.join(timeout)
        if not answer or not answer[0]:
            raise ChildError(f"{self.name}: no answer to {line!r}:\n{self.log_text()[-2000:]}")
        return answer[0].strip()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(10)
        self._close()
        return code

    def kill(self) -> None:
        """SIGKILL if still running (cleanup after a failure)."""
        if self.process.poll() is None:
            self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)
        self._close()

    def _close(self) -> None:
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._log.close()


class Children:
    """The processes of one measurement; ``with Children(dir) as kids`` stops them all."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._children: list[Child] = []
        run_dir.mkdir(parents=True, exist_ok=True)

    def start(
        self,
        name: str,
        module: str,
        args: Sequence[str] = (),
        *,
        pipes: bool = False,
        env: dict[str, str] | None = None,
    ) -> Child:
        """Start and register a child."""
        child = Child(name, module, args, run_dir=self.run_dir, pipes=pipes, env=env)
        self._children.append(child)
        return child

    def __enter__(self) -> Children:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Reverse start order: clients before the servers they talk to.
        for child in reversed(self._children):
            if child.process.poll() is None:
                with contextlib.suppress(Exception):
                    child.stop(timeout=15.0)
            child.kill()


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds on a thread, between start and stop."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        self._pid = pid
        self._interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        """Begin sampling."""
        self._thread.start()

    def stop(self) -> list[tuple[float, int]]:
        """Stop sampling; (monotonic time, RSS KiB) pairs."""
        self._stop.set()
        self._thread.join(5)
        return self.samples

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.samples.append((time.monotonic(), read_usage(self._pid).rss_kib))
            self._stop.wait(self._interval)
