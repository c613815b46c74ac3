"""Every command whose reader goes away (``| head``) ends quietly, with the status it would have.

Each command runs as a real process whose stdout is a pipe with its read end
already closed: the first write that reaches the pipe fails with EPIPE, as
with ``| head`` once head has what it wants, but deterministically.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.history_server import ScriptedHistory, serving
from tests.processes import ROOT, sqlite_url
from tests.test_cli import run_args
from tests.test_run_hygiene import alive, children_of, reaping

QUIET = re.compile(r"Traceback|BrokenPipeError|Exception ignored")


def run_into_a_closed_pipe(*argv: str, timeout: float = 90.0) -> tuple[int, str]:
    """Run ``python argv`` with stdout a pipe nobody reads; its exit code and stderr."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, *argv],
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            timeout=timeout,
            check=False,
        )
    finally:
        os.close(write_end)
    return done.returncode, done.stderr


def test_history_json_and_table() -> None:
    with serving(ScriptedHistory(3000)) as address:
        for extra in (["--json"], [], ["--merge"]):
            code, stderr = run_into_a_closed_pipe(
                "-m", "workcell.cli", "history", "--controller", address, *extra
            )
            assert code == 0, (extra, stderr)
            assert not QUIET.search(stderr), (extra, stderr)


def test_report(tmp_path: Path) -> None:
    with serving(ScriptedHistory(50)) as address:
        code, stderr = run_into_a_closed_pipe(
            "-m", "workcell.cli", "report", "--controller", address,
            "--from", "2025-03-01T00:00:00Z", "-o", str(tmp_path / "r.png"),
        )  # fmt: skip
    assert code == 0, stderr
    assert not QUIET.search(stderr), stderr
    assert (tmp_path / "r.png").stat().st_size > 0


def test_help_version_and_migrate(tmp_path: Path) -> None:
    commands = [
        ("-m", "workcell.cli", "--help"),
        ("-m", "workcell.cli", "history", "--help"),
        ("-m", "workcell.cli", "--version"),
        ("-m", "controller", "--help"),
        ("-m", "sensor", "--version"),
        ("-m", "controller.migrate", "--database", sqlite_url(tmp_path / "m.db")),
    ]
    for argv in commands:
        code, stderr = run_into_a_closed_pipe(*argv)
        assert code == 0, (argv, stderr)
        assert not QUIET.search(stderr), (argv, stderr)


def test_run_whose_reader_is_gone_stops_the_cell(tmp_path: Path) -> None:
    """``workcell run --no-live | head -1``: the cell is stopped in order, no child left."""
    read_end, write_end = os.pipe()
    process = subprocess.Popen(
        [sys.executable, "-m", "workcell.cli", *run_args(tmp_path)],
        stdin=subprocess.DEVNULL,
        stdout=write_end,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    os.close(write_end)
    pids: dict[str, int] = {}
    with reaping(pids):
        try:
            with os.fdopen(read_end) as reader:
                first = reader.readline()  # the first summary line, after 5 s
            _, stderr = process.communicate(timeout=90)
        finally:
            if process.poll() is None:
                process.kill()
        pids.update(children_of(stderr))
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in pids.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = {name: pid for name, pid in pids.items() if alive(pid)}
    assert first.startswith("["), first
    assert process.returncode == 0, stderr
    assert not QUIET.search(stderr), stderr
    assert "output closed: stopping the cell" in stderr
    assert set(pids) == {"manipulator", "controller", "sensor-1", "sensor-2"}, stderr
    assert left == {}, stderr
    order = [stderr.index(f"{name} stopped") for name in ("sensor-1", "controller", "manipulator")]
    assert order == sorted(order), stderr
    assert signal.SIGTERM  # (the children were asked to stop, not killed)
    assert "killed by" not in stderr
