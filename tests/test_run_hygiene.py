"""``workcell run``'s children: they die with it, and they see only the settings meant for them.

Real ``workcell run`` processes on loopback ports. Whatever ends ``run``
(SIGKILL, SIGHUP, the terminal closing), no child is left and the ports
are free; per-process variables set in the shell (``WORKCELL_METRICS_LISTEN``,
``WORKCELL_TLS_*``, ``WORKCELL_LOG_*``) do not break the cell; ``--metrics``
gives every process its own endpoint.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import socket
import subprocess
import sys
import termios
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import ROOT, free_port
from tests.test_cli import Output, run_args, wait_for_file_line, workcell
from workcell.cell_environment import child_environment
from workcell.flags import Address
from workcell.parent_death import guarded
from workcell.runner import CellConfig

_STARTED = re.compile(r"started (\S+) \(pid (\d+)\)")
_LISTENING = re.compile(r"(\S+) listening on 127\.0\.0\.1:(\d+)")
CHILDREN = ("manipulator", "controller", "sensor-1", "sensor-2")


# ---------------------------------------------------------------- helpers


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for init to reap it has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def is_child_of_run(pid: int, name: str) -> bool:
    """Whether ``pid`` is still the ``python -m ...`` child named ``name`` (pids get reused)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return False
    module = name.partition("-")[0]
    return b"-m" in argv and module.encode() in argv


def port_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:``port`` now (as servers do, SO_REUSEADDR)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            probe.listen()
        except OSError:
            return False
    return True


def children_of(text: str) -> dict[str, int]:
    return {name: int(pid) for name, pid in _STARTED.findall(text)}


def ports_of(text: str) -> dict[str, int]:
    return {name: int(port) for name, port in _LISTENING.findall(text)}


def wait_until_gone(pids: dict[str, int], within: float = 40.0) -> dict[str, int]:
    """The children still running after ``within`` seconds (empty: all gone)."""
    deadline = time.monotonic() + within
    while True:
        left = {name: pid for name, pid in pids.items() if alive(pid)}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


@contextlib.contextmanager
def reaping(pids: dict[str, int]) -> Iterator[None]:
    """Kill any child a failing test leaves behind, by pid, once it is sure it is that child."""
    try:
        yield
    finally:
        for name, pid in pids.items():
            if alive(pid) and is_child_of_run(pid, name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def wait_running(data: Path, out: Output) -> tuple[dict[str, int], dict[str, int]]:
    """Once every child runs: their pids and the servers' ports."""
    out.wait_for(r"started sensor-2 \(pid")
    for name in ("sensor-1", "sensor-2"):  # past their imports, inside their event loops
        wait_for_file_line(data / "logs" / f"{name}.log", f"sensor {name} starting")
    text = out.text()
    return children_of(text), ports_of(text)


# ---------------------------------------------------------------- children die with run


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGHUP], ids=["SIGKILL", "SIGHUP"])
def test_no_child_outlives_run(tmp_path: Path, signum: signal.Signals) -> None:
    process = workcell(*run_args(tmp_path))
    out = Output(process)
    pids: dict[str, int] = {}
    with reaping(pids):
        try:
            found, ports = wait_running(tmp_path, out)
            pids.update(found)
            assert set(pids) == set(CHILDREN), out.text()
            assert set(ports) == {"manipulator", "controller"}, out.text()
            process.send_signal(signum)
            code = process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
        left = wait_until_gone(pids)
        text = out.text()
        assert left == {}, f"still running after run ended: {left}\n{text}"
        assert [port for port in ports.values() if not port_free(port)] == [], text
    if signum == signal.SIGHUP:
        # A hang-up is a stop like SIGTERM: in order, sensors first, exit 0.
        assert code == 0, text
        assert "stop requested" in text
        order = [
            text.index(f"{name} stopped") for name in ("sensor-1", "controller", "manipulator")
        ]
        assert order == sorted(order), text


def test_under_nohup_a_hang_up_leaves_the_cell_running(tmp_path: Path) -> None:
    """``nohup workcell run``: SIGHUP stays ignored (the cell is meant to outlive the terminal)."""
    argv = [sys.executable, "-m", "workcell.cli", *run_args(tmp_path)]
    process = subprocess.Popen(
        ["nohup", *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    out = Output(process)
    pids: dict[str, int] = {}
    with reaping(pids):
        try:
            found, _ = wait_running(tmp_path, out)
            pids.update(found)
            before = len(out.lines)
            process.send_signal(signal.SIGHUP)
            # A summary line printed after the hang-up (they come every 5 s).
            deadline = time.monotonic() + 30
            while not any("] stored=" in line for line in out.lines[before:]):
                assert time.monotonic() < deadline, out.text()
                assert process.poll() is None, out.text()
                time.sleep(0.1)
            assert process.poll() is None, out.text()
            assert all(alive(pid) for pid in pids.values()), out.text()
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
    assert code == 0, out.text()
    assert "stop requested" in out.text()


def test_closing_the_terminal_ends_the_cell(tmp_path: Path) -> None:
    """``run`` on a terminal (the live view) that goes away: SIGHUP, then EIO on every write."""
    main_fd, terminal_fd = os.openpty()

    def take_the_terminal() -> None:  # runs in the child, after setsid
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workcell.cli",
            *(a for a in run_args(tmp_path) if a != "--no-live"),
        ],
        stdin=terminal_fd,
        stdout=terminal_fd,
        stderr=terminal_fd,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
        preexec_fn=take_the_terminal,
    )
    os.close(terminal_fd)
    pids: dict[str, int] = {}
    log = tmp_path / "logs" / "workcell.log"
    with reaping(pids):
        try:
            # The live view owns the terminal; run's own lines go to its log file.
            wait_for_file_line(log, "started sensor-2 (pid", timeout=60)
            for name in ("sensor-1", "sensor-2"):
                wait_for_file_line(tmp_path / "logs" / f"{name}.log", f"sensor {name} starting")
            text = log.read_text()
            pids.update(children_of(text))
            ports = ports_of(text)
            assert set(pids) == set(CHILDREN), text
            _drain(main_fd)
            os.close(main_fd)  # the terminal window closes
            code = process.wait(timeout=60)
        finally:
            with contextlib.suppress(OSError):
                os.close(main_fd)
            if process.poll() is None:
                process.kill()
        left = wait_until_gone(pids)
        text = log.read_text()
        assert left == {}, f"still running after run ended: {left}\n{text}"
        assert [port for port in ports.values() if not port_free(port)] == [], text
    assert code == 0, text
    assert "stop requested" in text
    assert "Traceback" not in text


def _drain(fd: int) -> None:
    """Read what the view drew so far (a full terminal buffer would block its writes)."""
    os.set_blocking(fd, False)
    with contextlib.suppress(BlockingIOError, OSError):
        while os.read(fd, 65536):
            pass


def test_the_guard_becomes_its_command_or_exits_when_its_parent_is_gone() -> None:
    # Its parent is this process: it runs the command in its place (same pid).
    process = subprocess.Popen(
        guarded([sys.executable, "-c", "import os; print(os.getpid())"]),
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    out, _ = process.communicate(timeout=30)
    assert (process.returncode, out) == (0, f"{process.pid}\n")
    # Told another parent (as when its own died before it could ask for the signal):
    # it ends at once with 128 + the signal, and the command never runs.
    args = ["-m", "workcell.parent_death", "1", str(int(signal.SIGTERM)), "--"]
    command = [sys.executable, "-c", "print('ran')"]
    orphan = subprocess.run(
        [sys.executable, *args, *command], capture_output=True, text=True, timeout=30, check=False
    )
    assert (orphan.returncode, orphan.stdout) == (128 + signal.SIGTERM, "")
    bad = subprocess.run(
        [sys.executable, "-m", "workcell.parent_death", "x"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.startswith("usage: python -m workcell.parent_death PARENT_PID SIGNAL")


# ---------------------------------------------------------------- per-process settings


def test_child_environment_keeps_cell_settings_and_drops_per_process_ones() -> None:
    shell = {
        "PATH": "/usr/bin",
        "WORKCELL_ALPHA": "0.01",
        "WORKCELL_SENSOR_PROFILE": "step",
        "WORKCELL_METRICS_LISTEN": "0.0.0.0:9100",
        "WORKCELL_TLS_CERT": "server.pem",
        "WORKCELL_TLS_CA": "ca.pem",
        "WORKCELL_MANIPULATOR_TLS_CA": "ca.pem",
        "WORKCELL_TLS_SERVER_NAME": "cell",
        "WORKCELL_LOG_LEVEL": "WARNING",
        "WORKCELL_LOG_FORMAT": "json",
    }
    env = child_environment(shell)
    assert env == {
        "PATH": "/usr/bin",
        "WORKCELL_ALPHA": "0.01",
        "WORKCELL_SENSOR_PROFILE": "step",
        "PYTHONUNBUFFERED": "1",
    }
    assert "WORKCELL_METRICS_LISTEN" in shell  # the caller's mapping is left alone


@pytest.mark.parametrize(
    "variables",
    [
        {"WORKCELL_METRICS_LISTEN": "127.0.0.1:{port}"},
        {"WORKCELL_TLS_CA": "{missing}", "WORKCELL_MANIPULATOR_TLS_CA": "{missing}"},
        {"WORKCELL_LOG_LEVEL": "WARNING"},
    ],
    ids=["metrics-listen", "tls", "log-level"],
)
def test_per_process_settings_in_the_shell_do_not_break_the_cell(
    tmp_path: Path, variables: dict[str, str]
) -> None:
    port = free_port()
    env = {
        name: value.format(port=port, missing=tmp_path / "missing.pem")
        for name, value in variables.items()
    }
    process = workcell(*run_args(tmp_path, "--duration", "4"), env=env)
    out = Output(process)
    try:
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    text = out.text()
    assert code == 0, text
    assert "exited unexpectedly" not in text
    logs = tmp_path / "logs"
    # The children still logged at INFO into their files (run reads their lines).
    assert "listening on" in (logs / "controller.log").read_text()
    assert re.search(r"rate=\d", (logs / "sensor-2.log").read_text())
    for name in CHILDREN:
        assert "metrics on" not in (logs / f"{name}.log").read_text(), name
    assert port_free(port)


# ---------------------------------------------------------------- --metrics


def test_metrics_ports_are_consecutive_from_a_base_or_free() -> None:
    free = CellConfig(sensors=2, metrics=Address("127.0.0.1", 0))
    assert free.metrics_listens() == {
        "manipulator": Address("127.0.0.1", 0),
        "controller": Address("127.0.0.1", 0),
        "sensor-1": Address("127.0.0.1", 0),
        "sensor-2": Address("127.0.0.1", 0),
    }
    based = CellConfig(
        sensors=2, controllers=2, database="postgresql+asyncpg://u@h/db",
        metrics=Address("0.0.0.0", 9100),
    )  # fmt: skip
    assert based.metrics_listens() == {
        "manipulator": Address("0.0.0.0", 9100),
        "controller-1": Address("0.0.0.0", 9101),
        "controller-2": Address("0.0.0.0", 9102),
        "sensor-1": Address("0.0.0.0", 9103),
        "sensor-2": Address("0.0.0.0", 9104),
    }
    assert CellConfig().metrics_listens() == {}
    too_high = CellConfig(sensors=8, metrics=Address("127.0.0.1", 65530))
    assert too_high.problem() == (
        "--metrics 127.0.0.1:65530: 10 processes need ports up to 65539, above 65535"
    )


def test_run_metrics_gives_each_process_its_own_endpoint(tmp_path: Path) -> None:
    process = workcell(*run_args(tmp_path, "--metrics"), env={"WORKCELL_METRICS_LISTEN": "x"})
    out = Output(process)
    try:
        endpoints: dict[str, int] = {}
        for name in ("controller", "sensor-1", "sensor-2"):
            match = out.wait_for(rf"{name} metrics on http://127\.0\.0\.1:(\d+)/metrics")
            endpoints[name] = int(match.group(1))
        assert len(set(endpoints.values())) == len(endpoints), endpoints
        bodies = {name: _get(port) for name, port in endpoints.items()}
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    text = out.text()
    assert code == 0, text
    assert "workcell_controller_readings_stored_total" in bodies["controller"]
    for sensor in ("sensor-1", "sensor-2"):
        assert f'sensor_id="{sensor}"' in bodies[sensor], bodies[sensor]
    assert all(port_free(port) for port in endpoints.values())


def _get(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        body: bytes = response.read()
    return body.decode()
