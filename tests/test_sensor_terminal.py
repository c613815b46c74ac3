"""The sensor on a terminal: its tqdm bar and its log lines share the screen.

A real ``python -m sensor`` whose stderr is a pseudo-terminal (so it draws
its bar) and whose controller is not there (so it warns that delivery
failed). What it wrote is replayed as a terminal shows it (``\\r`` returns to
the line's start, later characters overwrite earlier ones): each log line
must stand on a line of its own, never after the bar's text.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time

from tests.processes import NO_MANIPULATOR, ROOT

_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARNING|ERROR) ")


def screen_lines(raw: str) -> list[str]:
    """The lines a terminal shows for ``raw`` (carriage returns overwrite; escapes dropped)."""
    lines: list[str] = []
    line: list[str] = []
    column = 0
    for char in _ESCAPE.sub("", raw):
        if char == "\r":
            column = 0
        elif char == "\n":
            lines.append("".join(line).rstrip())
            line, column = [], 0
        else:
            if column < len(line):
                line[column] = char
            else:
                line.append(char)
            column += 1
    lines.append("".join(line).rstrip())
    return lines


def test_screen_lines_replays_carriage_returns() -> None:
    assert screen_lines("bar 1\rbar 22\r      \rlog\nbar 3") == ["log", "bar 3"]
    assert screen_lines("bar\x1b[K 1 2024-01-01 WARNING x\r\n") == [
        "bar 1 2024-01-01 WARNING x",
        "",
    ]


def read_until(fd: int, pattern: str, within: float) -> str:
    """What the terminal got until ``pattern`` appears and half a second more (or ``within``)."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + within
    seen_at: float | None = None
    while time.monotonic() < deadline and (seen_at is None or time.monotonic() < seen_at + 0.5):
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        if seen_at is None and re.search(pattern, b"".join(chunks).decode(errors="replace")):
            seen_at = time.monotonic()
    return b"".join(chunks).decode(errors="replace")


def test_warnings_never_land_on_the_bar_line() -> None:
    main_fd, terminal_fd = os.openpty()
    fcntl.ioctl(terminal_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    process = subprocess.Popen(
        [
            sys.executable, "-m", "sensor",
            "--controller", f"127.0.0.1:{NO_MANIPULATOR}",
            "--sensor-id", "tty",
            "--rate", "50",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=terminal_fd,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    os.close(terminal_fd)
    try:
        # The bar is drawn, then delivery fails (nobody on port 1): one warning.
        raw = read_until(main_fd, r"WARNING sensor\.delivery: delivery to .* failed", within=30)
        process.send_signal(signal.SIGTERM)
        raw += read_until(main_fd, r"stopped: created=", within=30)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        with contextlib.suppress(OSError):
            os.close(main_fd)
    lines = screen_lines(raw)
    bars = [line for line in lines if line.startswith("tty:")]
    logs = [line for line in lines if re.search(r" (INFO|WARNING|ERROR) ", line)]
    assert bars, raw  # a bar was drawn ...
    assert any("WARNING sensor.delivery: delivery to" in line for line in logs), raw
    # ... and every log line stands alone on its line, bar-free.
    torn = [line for line in logs if not _LOG_LINE.match(line)]
    assert torn == [], "\n".join(lines)
