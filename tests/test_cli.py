"""The ``workcell`` command: table formatting, and real runs of run, watch and history."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.builders import history_entry
from tests.databases import TestDatabase
from tests.history_server import ScriptedHistory, serving
from tests.processes import (
    ROOT,
    running,
    sqlite_url,
    start_controller,
    start_manipulator,
    start_sensor,
)
from workcell.cli import main as cli_main
from workcell.history_table import (
    STREAM_MIN_WIDTHS,
    JsonArrayWriter,
    TableWriter,
    entry_record,
    format_p_value,
    format_table,
    format_time,
)
from workcell.timeconv import from_iso
from workcell.v1 import command_pb2
from workcell.v1.history_pb2 import HistoryEntry, WindowSummary

# ---------------------------------------------------------------- history_table


def entry(
    command_id: int,
    *,
    start: str = "2025-03-01T12:00:00Z",
    seconds: int = 5,
    status: int = command_pb2.STATUS_UP,
    p_value: float | None = 0.0123,
    acked: bool = True,
    count: int = 1,
) -> HistoryEntry:
    return history_entry(
        command_id,
        window_start=from_iso(start),
        period_us=seconds * 1_000_000,
        status=status,
        count=count,
        window=WindowSummary(count=1500, mean=101.25, std_dev=9.5),
        previous=WindowSummary(count=1490, mean=99.0, std_dev=9.0),
        p_value=p_value,
        changed=True,
        acked=acked,
    )


def test_table_has_a_header_and_one_row_per_entry() -> None:
    text = format_table([entry(1), entry(2, start="2025-03-01T12:00:05Z")])
    lines = text.splitlines()
    assert len(lines) == 4
    assert lines[0].split() == [
        "id", "window", "status", "changed", "p-value", "difference", "n", "mean", "std",
        "issued", "acked",
    ]  # fmt: skip
    assert set(lines[1]) <= {"-", " "}
    row = lines[2]
    assert row.startswith("1 ")
    assert "2025-03-01T12:00:00Z → 12:00:05Z" in row
    assert " up " in row
    assert " yes " in row
    assert "0.0123" in row
    assert "1500" in row
    assert "101.25" in row
    assert "9.50" in row
    assert "12:00:05.500Z" in row  # issued, date dropped on the window's day
    assert "12:00:05.510Z" in row  # acknowledged


def test_columns_line_up() -> None:
    lines = format_table([entry(9), entry(10, p_value=None, acked=False)]).splitlines()
    starts = [line.index("  up") for line in lines[2:]]
    assert starts[0] == starts[1]


def test_unacknowledged_shows_pending_and_missing_p_value_a_dash() -> None:
    row = format_table([entry(3, p_value=None, acked=False, status=command_pb2.STATUS_DOWN)])
    last = row.splitlines()[-1]
    assert last.endswith("pending")
    assert " down " in last
    assert " - " in last


def test_tiny_p_values_stay_distinguishable() -> None:
    assert format_p_value(entry(1, p_value=3.2e-9)) == "3.2e-09"
    assert format_p_value(entry(1, p_value=0.5)) == "0.5000"
    assert format_p_value(entry(1, p_value=None)) == "-"


def test_merged_table_shows_runs() -> None:
    text = format_table([entry(4, count=3)], merged=True)
    header, _, row = text.splitlines()
    assert header.split()[:2] == ["ids", "commands"]
    assert row.split()[:2] == ["4-6", "3"]
    assert "2025-03-01T12:00:00Z → 12:00:15Z" in row


def test_empty_history_is_one_line() -> None:
    assert format_table([]) == "no commands in that time range"


def test_times_on_another_day_keep_their_date() -> None:
    base = from_iso("2025-03-01T23:59:59.250Z")
    assert format_time(base) == "2025-03-01T23:59:59.250Z"
    assert format_time(base + 1_000_000, same_day_as=base) == "2025-03-02T00:00:00.250Z"
    assert format_time(base, same_day_as=base) == "23:59:59.250Z"


def test_json_record() -> None:
    record = entry_record(entry(7, p_value=None, acked=False))
    assert record["command_id"] == 7
    assert record["status"] == "up"
    assert record["p_value"] is None
    assert record["acknowledged_at"] is None
    assert record["from_datetime"] == "2025-03-01T12:00:00.000000Z"
    assert record["window"] == {"count": 1500, "mean": 101.25, "std_dev": 9.5}
    json.dumps(record)


def test_streamed_json_is_the_same_text_as_one_dump() -> None:
    entries = [entry(i, p_value=None if i == 2 else 0.5) for i in range(1, 6)]
    writer = JsonArrayWriter()
    text = writer.page(entries[:2]) + writer.page([]) + writer.page(entries[2:]) + writer.finish()
    assert text == json.dumps([entry_record(e) for e in entries], indent=2) + "\n"
    empty = JsonArrayWriter()
    assert empty.page([]) + empty.finish() == "[]\n"


def test_streamed_table_keeps_the_first_pages_columns() -> None:
    writer = TableWriter(min_widths=STREAM_MIN_WIDTHS)
    first = writer.page([entry(9), entry(10, p_value=None, acked=False)]).splitlines()
    later = writer.page([entry(1234, p_value=3.2e-9)]).splitlines()
    assert writer.finish() == ""
    assert first[0].split()[0] == "id"
    assert len(first) == 4  # header, rule, two rows
    assert len(later) == 1  # no second header
    # ids up to seven digits fit the reserved width: every row's columns line up
    starts = {line.index("  up") for line in [*first[2:], *later]}
    assert len(starts) == 1
    assert TableWriter().finish() == "no commands in that time range\n"


# ---------------------------------------------------------------- live view
# The view's state and layout: tests/test_liveview.py (no log line is read for it).


# ---------------------------------------------------------------- the real command


def workcell(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "workcell.cli", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )


def test_history_bad_from_exits_2_with_one_line() -> None:
    process = workcell("history", "--from", "yesterday-ish")
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 2
    assert len(out.strip().splitlines()) == 1
    assert "--from" in out


def test_history_server_down_exits_1_with_one_line() -> None:
    process = workcell("history", "--controller", "127.0.0.1:1")
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 1
    assert len(out.strip().splitlines()) == 1
    assert "UNAVAILABLE" in out


def test_history_against_a_real_controller(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manipulator = start_manipulator(tmp_path / "j.jsonl")
    assert manipulator.port is not None
    results: dict[str, tuple[int, str, str]] = {}
    with running(manipulator):
        controller = start_controller(
            sqlite_url(tmp_path / "w.db"),
            "--period", "0.2",
            "--grace", "0.05",
            manipulator_port=manipulator.port,
        )  # fmt: skip
        with running(controller):
            controller.wait_for_line(r"command 4 acknowledged")
            address = f"127.0.0.1:{controller.port}"
            variants = {
                "table": ["--page-size", "1"],
                "json": ["--json"],
                "merged": ["--merge"],
                "inverted": ["--from", "2030-01-02T00:00:00Z", "--to", "2030-01-01T00:00:00Z"],
            }
            for name, extra in variants.items():
                code = cli_main(["history", "--controller", address, *extra])
                out, err = capsys.readouterr()
                results[name] = (code, out, err)
        controller.stop()
    manipulator.stop()

    code, table_out, _ = results["table"]
    assert code == 0
    rows = table_out.splitlines()[2:]
    # page size 1: every page was followed
    assert [row.split()[0] for row in rows[:4]] == ["1", "2", "3", "4"]
    # The footer says which node leads (the only one, on SQLite) and its term.
    assert table_out.splitlines()[-1].startswith(f"leader: {address} (this node), term 1;")
    code, json_out, _ = results["json"]
    records = json.loads(json_out)
    assert [r["command_id"] for r in records[:4]] == [1, 2, 3, 4]
    assert records[0]["acknowledged_at"] is not None
    code, merged_out, _ = results["merged"]
    assert code == 0
    assert merged_out.splitlines()[0].split()[:2] == ["ids", "commands"]
    # the server's INVALID_ARGUMENT comes back as one line with the status, exit 1
    code, out, err = results["inverted"]
    assert code == 1
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert "INVALID_ARGUMENT" in err


def run_args(data: Path, *extra: str) -> list[str]:
    return [
        "run",
        "--sensors", "2",
        "--period", "0.5",
        "--rate", "100",
        "--no-live",
        "--data", str(data),
        "--controller-listen", "127.0.0.1:0",
        "--manipulator-listen", "127.0.0.1:0",
        *extra,
    ]  # fmt: skip


class Output:
    """Collects a child's merged output on a thread so tests can wait for lines."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._process = process
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if match := regex.search(line):
                    return match
            if self._process.poll() is not None and not self._thread.is_alive():
                break
            time.sleep(0.1)
        raise AssertionError(f"no line matching {pattern!r}; output:\n" + self.text())

    def text(self) -> str:
        self._thread.join(0 if self._process.poll() is None else 5)
        return "\n".join(self.lines)


def wait_for_file_line(path: Path, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in {path} within {timeout}s")


def test_run_for_a_while_then_stop_by_itself(tmp_path: Path, database: TestDatabase) -> None:
    process = workcell(*run_args(tmp_path, "--duration", "8", "--database", database.url))
    out = Output(process)
    code = process.wait(timeout=90)
    text = out.text()
    assert code == 0, text
    # the sensors' rates, as the controller's Sensors/ListRuns tells them, reached the summary
    assert re.search(r"sensor-1 \d+\.\d/s", text), text
    assert re.search(r"sensor-2 \d+\.\d/s", text), text
    assert "exited unexpectedly" not in text
    journal = (tmp_path / "journal.jsonl").read_text().splitlines()
    assert journal
    assert json.loads(journal[0])["command_id"] >= 1
    [(readings,)] = database.fetch("SELECT count(*) FROM readings")
    assert readings > 0
    for name in ("manipulator", "controller", "sensor-1", "sensor-2", "workcell"):
        assert (tmp_path / "logs" / f"{name}.log").stat().st_size > 0


def test_a_dead_sensor_is_reported_and_sigterm_stops_the_rest(tmp_path: Path) -> None:
    process = workcell(*run_args(tmp_path))
    out = Output(process)
    try:
        pid = int(out.wait_for(r"started sensor-2 \(pid (\d+)\)").group(1))
        os.kill(pid, signal.SIGKILL)
        out.wait_for(r"sensor-2 exited unexpectedly \(killed by SIGKILL\)")
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    text = out.text()
    # a sensor's death is reported, the rest of the cell keeps going until asked to stop
    assert code == 1, text
    assert "stop requested" in text
    assert "controller stopped" in text
    assert "manipulator stopped" in text
    assert "exited: sensor-2 (killed by SIGKILL)" in text


def test_a_dead_controller_stops_the_cell_with_exit_1(tmp_path: Path) -> None:
    process = workcell(*run_args(tmp_path))
    out = Output(process)
    try:
        pid = int(out.wait_for(r"started controller \(pid (\d+)\)").group(1))
        out.wait_for(r"started sensor-2")
        os.kill(pid, signal.SIGKILL)
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    text = out.text()
    assert code == 1, text
    assert "controller exited unexpectedly (killed by SIGKILL)" in text
    assert "controller is essential: stopping the cell" in text
    assert "manipulator stopped" in text


def test_ctrl_c_stops_sensors_then_controller_then_manipulator(tmp_path: Path) -> None:
    process = workcell(*run_args(tmp_path))
    out = Output(process)
    try:
        out.wait_for(r"started sensor-2")
        for name in ("sensor-1", "sensor-2"):  # running, not still importing
            wait_for_file_line(tmp_path / "logs" / f"{name}.log", f"sensor {name} starting")
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    text = out.text()
    assert code == 0, text
    assert "killed by" not in text
    order = [text.index(f"{name} stopped") for name in ("sensor-1", "controller", "manipulator")]
    assert order == sorted(order), text
    assert text.index("sensor-2 stopped") < order[1]


# ---------------------------------------------------------------- streaming history


class ClientOutput:
    """A ``workcell`` child's stdout lines, collected on a thread; waitable from another."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._process = process
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for_line_starting(self, prefix: str, timeout: float) -> bool:
        """Whether a line starting with ``prefix`` (indentation aside) comes within ``timeout``."""
        with self._changed:
            return self._changed.wait_for(
                lambda: any(line.lstrip().startswith(prefix) for line in self.lines), timeout
            )

    def join(self) -> None:
        self._thread.join(10)


def history_client(address: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "workcell.cli", "history", "--controller", address, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_history_prints_each_page_before_asking_for_the_next(fmt: str) -> None:
    """Pages are printed as they arrive: memory stays flat however long the history."""
    page_size, pages = 2, 3
    seen_before: dict[int, bool] = {}
    output: ClientOutput | None = None
    ready = threading.Event()

    def before_page(number: int) -> None:
        if number == 1:
            return
        ready.wait(10)
        assert output is not None
        # the last entry of the previous page, as the chosen format prints it
        last_id = (number - 1) * page_size
        needle = f'"command_id": {last_id},' if fmt == "json" else f"{last_id} "
        seen_before[number] = output.wait_for_line_starting(needle, 10)

    servicer = ScriptedHistory(page_size * pages, before_page=before_page)
    with serving(servicer) as address:
        extra = ["--json"] if fmt == "json" else []
        process = history_client(address, "--page-size", str(page_size), *extra)
        output = ClientOutput(process)
        ready.set()
        try:
            code = process.wait(timeout=90)
        finally:
            if process.poll() is None:
                process.kill()
        output.join()
        assert process.stderr is not None
        stderr = process.stderr.read()
    assert code == 0, stderr
    assert len(servicer.requests) == pages
    # before asking for page n, the client had printed page n-1
    assert seen_before == {n: True for n in range(2, pages + 1)}
    text = "\n".join(output.lines)
    if fmt == "json":
        assert [r["command_id"] for r in json.loads(text)] == list(range(1, 7))
    else:
        assert [line.split()[0] for line in output.lines[2:]] == [str(i) for i in range(1, 7)]


def test_history_stops_asking_once_its_reader_is_gone() -> None:
    """``workcell history | head``: no traceback, and no more pages fetched for nobody."""
    reader_gone = threading.Event()

    def before_page(number: int) -> None:
        if number == 2:
            reader_gone.wait(10)

    servicer = ScriptedHistory(50 * 10, before_page=before_page)
    with serving(servicer) as address:
        process = history_client(address, "--page-size", "10")
        assert process.stdout is not None
        try:
            first = process.stdout.readline()  # the header: the first page has been printed
            process.stdout.close()
            reader_gone.set()
            code = process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
        assert process.stderr is not None
        stderr = process.stderr.read()
    assert first.split()[:2] == ["id", "window"]
    assert code == 0, stderr
    assert stderr == ""
    # page 2 was written into a closed pipe; nothing after it was asked for
    assert len(servicer.requests) == 2


# ---------------------------------------------------------------- workcell watch


def test_watch_a_real_cell_in_plain_lines(tmp_path: Path) -> None:
    manipulator = start_manipulator(tmp_path / "j.jsonl")
    assert manipulator.port is not None
    with running(manipulator):
        controller = start_controller(
            sqlite_url(tmp_path / "w.db"),
            "--period", "0.5",
            "--grace", "0.05",
            manipulator_port=manipulator.port,
        )  # fmt: skip
        assert controller.port is not None
        sensor = start_sensor(controller.port, "--rate", "50", sensor_id="probe")
        with running(controller, sensor):
            controller.wait_for_line(r"command 2 acknowledged", 60)
            # stdout is a pipe, not a terminal: plain lines.
            process = workcell("watch", f"127.0.0.1:{controller.port}")
            out = Output(process)
            try:
                # The last commands first (History/Query), then each event as it comes.
                issued = int(out.wait_for(r"^command (\d+) issued: (up|down)").group(1))
                out.wait_for(rf"^command {issued} acknowledged \(acked \+\d")
                out.wait_for(rf"^command {issued + 1} issued")
                summary = out.wait_for(r"^\[\s*\d+\.\ds\] stored=(\d+) .*\| sensors: probe ")
                assert int(summary.group(1)) > 0
                process.send_signal(signal.SIGINT)
                code = process.wait(timeout=30)
            finally:
                if process.poll() is None:
                    process.kill()
            sensor.stop()
            controller.stop()
        manipulator.stop()
    text = out.text()
    assert code == 0, text
    assert "Traceback" not in text
    last = text.splitlines()[-1]
    assert re.search(r"leader=127\.0\.0\.1:\d+ \| sensors: probe \d+\.\d/s", last), last


def test_watch_of_a_controller_that_is_not_there_waits_and_says_so() -> None:
    process = workcell("watch", "127.0.0.1:1", "--duration", "3")
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0, out
    last = out.splitlines()[-1]
    assert "stored=- (no node answered yet)" in last
    assert "unreachable: 127.0.0.1:1 (UNAVAILABLE" in last
