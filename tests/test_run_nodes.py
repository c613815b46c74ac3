"""``workcell run --controllers N``: several controller nodes on one PostgreSQL database.

The live view's state with several nodes (pure, from the nodes' answers), the refusal of several
nodes on SQLite, and real runs on the throwaway PostgreSQL: every node
takes readings (each sensor is given every address), the summary lists
every node, and a node that dies is reported while the others go on.

Until a leader is elected (issue 12, items 1-3) every node decides and
the manipulator refuses the duplicates: these tests assert on readings,
the view and the lifecycle only.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

from tests.databases import PostgresServer
from tests.test_cli import Output, run_args, workcell
from tests.test_liveview import runs
from workcell.cell_state import CellState
from workcell.flags import Address
from workcell.liveview import render_screen, render_summary
from workcell.runner import CellConfig


def test_the_view_lists_every_controller() -> None:
    state = CellState(sensor_ids=["sensor-1"], controller_ids=["controller-1", "controller-2"])
    state.watch_nodes(["127.0.0.1:50051", "127.0.0.1:50052"])
    state.set_runs("127.0.0.1:50051", runs("a", ("sensor-1", 950, True)))
    screen = "\n".join(render_screen(state, elapsed=10))
    assert re.search(r"controller-1 127\.0\.0\.1:50051\s+…\s+3800\s+190\.0", screen), screen
    # a node not heard from yet is shown as such, and so is one that cannot be reached
    assert "controller-2 -/s" in render_summary(state, elapsed=10)
    state.set_error("127.0.0.1:50052", "UNAVAILABLE: failed to connect")
    screen = "\n".join(render_screen(state, elapsed=10))
    assert re.search(r"controller-2 127\.0\.0\.1:50052\s+unreachable: UNAVAILABLE", screen)
    state.set_runs("127.0.0.1:50052", runs("b", ("sensor-1", 500, True)))
    summary = render_summary(state, elapsed=10)
    assert "stored=5800 (290.0/s) (controller-1 190.0/s, controller-2 100.0/s)" in summary


def test_one_controller_is_shown_as_before() -> None:
    state = CellState(controller_ids=["controller"])
    state.watch_nodes(["127.0.0.1:50051"])
    state.set_runs("127.0.0.1:50051", runs("a", ("sensor-1", 10, True)))
    assert re.search(
        r"controller 127\.0\.0\.1:50051\s+…\s+40\s+2\.0", "\n".join(render_screen(state, elapsed=1))
    )
    assert "stored=40 (2.0/s) commands=0" in render_summary(state, elapsed=1)


def test_nodes_take_consecutive_ports_and_need_postgresql(tmp_path: Path) -> None:
    postgres = "postgresql+asyncpg://u@127.0.0.1:5432/cell"
    three = CellConfig(controllers=3, database=postgres)
    assert three.problem() is None
    assert three.controller_names == ["controller-1", "controller-2", "controller-3"]
    assert three.controller_listens == [
        Address("127.0.0.1", 50051),
        Address("127.0.0.1", 50052),
        Address("127.0.0.1", 50053),
    ]
    free = CellConfig(controllers=2, database=postgres, controller_listen=Address("0.0.0.0", 0))
    assert free.controller_listens == [Address("0.0.0.0", 0)] * 2
    assert CellConfig().controller_names == ["controller"]
    problem = CellConfig(controllers=2, data=tmp_path).problem()
    assert problem is not None
    assert "several controllers need PostgreSQL" in problem


def test_several_controllers_on_sqlite_are_refused_with_one_line(tmp_path: Path) -> None:
    for extra, env in ((["--controllers", "2"], {}), ([], {"WORKCELL_CONTROLLERS": "3"})):
        process = workcell(*run_args(tmp_path, *extra), env=env)
        out, _ = process.communicate(timeout=30)
        assert process.returncode == 2, out
        [line] = out.splitlines()
        assert "argument --controllers: several controllers need PostgreSQL" in line
        if env:
            assert "WORKCELL_CONTROLLERS" in line
    assert not (tmp_path / "logs" / "manipulator.log").exists()  # nothing was started


def wait_for_log(path: Path, pattern: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and re.search(pattern, path.read_text()):
            return
        time.sleep(0.2)
    raise AssertionError(f"no line matching {pattern!r} in {path} within {timeout}s")


def _stored_at_stop(log: Path) -> int:
    match = re.search(r"stopped: (\d+) readings stored in all", log.read_text())
    assert match is not None, log.read_text()
    return int(match.group(1))


def test_run_two_controllers_on_postgresql(tmp_path: Path, postgres_server: PostgresServer) -> None:
    with postgres_server.fresh_database() as database:
        args = run_args(tmp_path, "--controllers", "2", "--database", database.url)
        process = workcell(*args, "--duration", "10")
        out = Output(process)
        code = process.wait(timeout=120)
        text = out.text()
        [(readings,)] = database.fetch("SELECT count(*) FROM readings")
    assert code == 0, text
    assert "exited unexpectedly" not in text
    # the summary lists both nodes, and each one stored readings of the two sensors
    assert re.search(r"controller-1 \d+\.\d/s, controller-2 \d+\.\d/s", text), text
    logs = tmp_path / "logs"
    stored = [_stored_at_stop(logs / f"controller-{i}.log") for i in (1, 2)]
    assert min(stored) > 0, stored
    assert sum(stored) == readings
    sensor_log = (logs / "sensor-1.log").read_text()
    assert re.search(r"controller=127\.0\.0\.1:\d+,127\.0\.0\.1:\d+ ", sensor_log), sensor_log


def test_a_dead_node_is_reported_and_the_others_go_on(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    with postgres_server.fresh_database() as database:
        process = workcell(*run_args(tmp_path, "--controllers", "2", "--database", database.url))
        out = Output(process)
        try:
            pid = int(out.wait_for(r"started controller-2 \(pid (\d+)\)").group(1))
            out.wait_for(r"started sensor-2")
            # killed while it takes readings
            wait_for_log(tmp_path / "logs" / "controller-2.log", r"ingest: stored=[1-9]")
            os.kill(pid, signal.SIGKILL)
            out.wait_for(r"controller-2 is gone; controller-1 go on")
            # the cell keeps running on the other node: its next summary line comes
            out.wait_for(r"exited: controller-2 \(killed by SIGKILL\)")
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
        text = out.text()
    assert code == 1, text  # a child exited unexpectedly
    assert "controller-2 exited unexpectedly (killed by SIGKILL)" in text
    assert "is essential" not in text
    assert "stop requested" in text
    for name in ("sensor-1", "sensor-2", "controller-1", "manipulator"):
        assert f"{name} stopped" in text, text
