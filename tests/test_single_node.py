"""One controller per SQLite file and per gRPC port (issue 12, item 7).

Real controller processes: a second one started on the same SQLite file, or
on the port another one serves, must refuse to start with one line that says
why, and exit 1, instead of sharing the file or (grpc's default
``SO_REUSEPORT``) silently splitting the traffic with the first.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import grpc
import pytest

from controller.app import Controller
from controller.config import ControllerConfig
from tests.processes import NO_MANIPULATOR, running, sqlite_url, start_controller
from workcell.filelock import FileLocked, PidLock
from workcell.flags import Address

# The refusal happens before anything is served; well inside this.
REFUSAL_TIMEOUT = 30.0


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("python -m controller: error:")]


def test_a_second_controller_on_the_same_sqlite_file_refuses_to_start(tmp_path: Path) -> None:
    database = tmp_path / "workcell.db"
    first = start_controller(sqlite_url(database))
    with running(first):
        second = start_controller(sqlite_url(database), wait_listening=False)
        with running(second):
            code = second.wait(REFUSAL_TIMEOUT)
        assert code == 1, second.output()
        [line] = _error_lines(second.output())
        assert str(database) in line
        assert f"pid {first.process.pid}" in line
        assert "PostgreSQL" in line  # what to use for several nodes
        assert "listening on" not in second.output()
        # the first one goes on serving, and stops cleanly
        assert first.process.poll() is None
        assert first.stop() == 0, first.output()
    # the lock was released at exit: a controller starts on the file again
    third = start_controller(sqlite_url(database))
    with running(third):
        assert third.stop() == 0, third.output()


def test_a_second_controller_on_a_busy_port_refuses_to_start(tmp_path: Path) -> None:
    first = start_controller(sqlite_url(tmp_path / "one.db"))
    with running(first):
        assert first.port is not None
        second = start_controller(
            sqlite_url(tmp_path / "two.db"), port=first.port, wait_listening=False
        )
        with running(second):
            code = second.wait(REFUSAL_TIMEOUT)
        assert code == 1, second.output()
        [line] = _error_lines(second.output())
        assert f"127.0.0.1:{first.port}" in line
        assert re.search(r"in use", line), line
        assert first.process.poll() is None
        assert first.stop() == 0, first.output()


async def test_the_grpc_server_does_not_share_a_port_through_so_reuseport(tmp_path: Path) -> None:
    """The bind itself refuses, even when the check at start saw the port free (a race).

    An in-process controller (no check at start) on the port of a gRPC server
    that set ``SO_REUSEPORT``, as grpc does by default: with the option on
    both sides the kernel would let the controller bind too.
    """
    other = grpc.aio.server()
    port = other.add_insecure_port("127.0.0.1:0")
    await other.start()
    try:
        config = ControllerConfig(
            listen=Address("127.0.0.1", port),
            manipulator=Address("127.0.0.1", NO_MANIPULATOR),
            database=sqlite_url(tmp_path / "workcell.db"),
        )
        controller = Controller(config)
        try:
            with pytest.raises(OSError, match=rf"cannot listen on 127\.0\.0\.1:{port}: .*in use"):
                await controller.start()
        finally:
            await controller.stop()
    finally:
        await other.stop(None)


# -- the lock file itself (workcell.filelock) --------------------------------


def test_pid_lock_names_its_holder_and_is_released_at_close(tmp_path: Path) -> None:
    path = tmp_path / "thing.lock"
    with PidLock.acquire(path) as lock:
        assert path.read_text() == f"{os.getpid()}\n"
        # flock belongs to the open file: a second open is refused, in this process too
        with pytest.raises(FileLocked) as refused:
            PidLock.acquire(path)
        assert refused.value.path == path
        assert refused.value.holder == os.getpid()
        assert lock.path == path
    again = PidLock.acquire(path)
    again.release()
    again.release()  # idempotent


def test_a_stale_pid_is_replaced_by_the_new_holder(tmp_path: Path) -> None:
    path = tmp_path / "thing.lock"
    path.write_text("999999999\nleft by a process that was killed\n")
    with PidLock.acquire(path):
        assert path.read_text() == f"{os.getpid()}\n"
