"""Start the services as real child processes for end-to-end tests.

Services bound to port 0 log ``listening on HOST:PORT``; :func:`start_service`
waits for that line so tests learn the real port without racing for one.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "NO_MANIPULATOR",
    "ROOT",
    "Service",
    "free_port",
    "sqlite_url",
    "start_controller",
    "start_manipulator",
    "start_sensor",
    "start_service",
]

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


# The one place the tests spell each service's addressing flags: a flag
# renamed touches this module only. Everything else is passed through.

NO_MANIPULATOR = 1
"""A port nothing listens on: a controller given it keeps trying to reach its manipulator."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 free at the moment of asking."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def sqlite_url(path: Path) -> str:
    """The ``--database`` URL of a SQLite file."""
    return f"sqlite+aiosqlite:///{path}"


def start_manipulator(journal: Path, *flags: str, port: int = 0, **options: Any) -> Service:
    """``python -m manipulator`` on 127.0.0.1:``port`` journaling to ``journal``."""
    args = ["--listen", f"127.0.0.1:{port}", "--journal", str(journal), *flags]
    return start_service("manipulator", args, **options)


def start_controller(
    database: str,
    *flags: str,
    manipulator_port: int = NO_MANIPULATOR,
    port: int = 0,
    **options: Any,
) -> Service:
    """``python -m controller`` on 127.0.0.1:``port`` storing into ``database`` (a URL)."""
    args = [
        "--listen", f"127.0.0.1:{port}",
        "--manipulator", f"127.0.0.1:{manipulator_port}",
        "--database", database,
        *flags,
    ]  # fmt: skip
    return start_service("controller", args, **options)


def start_sensor(
    controller_port: int | Sequence[int],
    *flags: str,
    sensor_id: str | None = None,
    **options: Any,
) -> Service:
    """``python -m sensor`` streaming to 127.0.0.1:``controller_port``, without a progress bar.

    Several ports: the sensor is given every one (one controller node each).
    """
    ports = [controller_port] if isinstance(controller_port, int) else list(controller_port)
    addresses = ",".join(f"127.0.0.1:{port}" for port in ports)
    args = ["--controller", addresses, "--no-progress"]
    if sensor_id is not None:
        args += ["--sensor-id", sensor_id]
    options.setdefault("name", sensor_id or "sensor")
    options.setdefault("wait_listening", False)
    return start_service("sensor", [*args, *flags], **options)
