"""Start the services as real child processes for end-to-end tests.

Services bound to port 0 log ``listening on HOST:PORT``; :func:`start_service`
waits for that line so tests learn the real port without racing for one.
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ROOT", "Service", "start_service"]

ROOT = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(r"listening on (\S+):(\d+)")


@dataclass
class Service:
    """A running ``python -m <module>`` child; its stderr lines are collected."""

    name: str
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    port: int | None = None
    _reader: threading.Thread | None = None
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def _pump(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for_line(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """Block until a stderr line matches ``pattern`` (a regex); return the match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if match := regex.search(line):
                        return match
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.process.poll() is not None and seen == len(self.lines)):
                    if self.process.poll() is not None:
                        # let the reader drain the last lines
                        self._changed.wait(0.2)
                        for line in self.lines[seen:]:
                            if match := regex.search(line):
                                return match
                    raise AssertionError(
                        f"{self.name}: no line matching {pattern!r} within {timeout}s "
                        f"(exit code {self.process.poll()}); output:\n" + self.output()
                    )
                self._changed.wait(min(remaining, 0.2))

    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for exit and return the exit code (kills after ``timeout``)."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            raise AssertionError(
                f"{self.name} did not exit within {timeout}s:\n{self.output()}"
            ) from None
        if self._reader is not None:
            self._reader.join(5)
        return code

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait for the exit code."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout)


def start_service(
    module: str,
    args: Sequence[str] = (),
    *,
    name: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    wait_listening: bool = True,
    timeout: float = 30.0,
) -> Service:
    """Start ``python -m module args``; with ``wait_listening``, wait for its port."""
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env,
        cwd=cwd or ROOT,
    )
    service = Service(name or module, process)
    service._reader = threading.Thread(target=service._pump, daemon=True)
    service._reader.start()
    if wait_listening:
        try:
            match = service.wait_for_line(_LISTENING.pattern, timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                process.kill()
            raise
        service.port = int(match.group(2))
    return service


@contextlib.contextmanager
def running(*services: Service) -> Iterator[None]:
    """Kill whatever is still running on exit (tests stop services themselves)."""
    try:
        yield
    finally:
        for service in services:
            if service.process.poll() is None:
                service.process.kill()
                with contextlib.suppress(Exception):
                    service.process.wait(5)
