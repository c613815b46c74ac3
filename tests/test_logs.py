"""``--log-format text|json``: the formatter, each service's stderr, and ``workcell run``."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.processes import (
    ROOT,
    Service,
    running,
    sqlite_url,
    start_controller,
    start_manipulator,
    start_sensor,
)
from workcell.logs import (
    JsonFormatter,
    configure_logging,
    log_format,
    log_message,
    make_formatter,
)
from workcell.native_stderr import CoreLine, parse_core_line

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
LISTENING = re.compile(r"listening on (\S+):(\d+)")


def record(
    msg: str,
    *args: object,
    level: int = logging.INFO,
    extra: dict[str, Any] | None = None,
    exc_info: Any = None,
) -> logging.LogRecord:
    """A record made the way ``Logger.info(..., extra=...)`` makes it."""
    logger = logging.getLogger("tests.logs")
    made = logger.makeRecord("tests.logs", level, __file__, 1, msg, args, exc_info, extra=extra)
    made.created = 1_700_000_000.0425  # 2023-11-14T22:13:20.042Z
    made.msecs = 42.0
    return made


def as_json(made: logging.LogRecord) -> dict[str, Any]:
    line = JsonFormatter().format(made)
    assert "\n" not in line
    event: dict[str, Any] = json.loads(line)
    return event


# ------------------------------------------------------------------ the formatter


def test_json_line_has_time_level_logger_and_formatted_message() -> None:
    event = as_json(record("listening on %s:%d", "127.0.0.1", 50051, level=logging.WARNING))
    assert event == {
        "time": "2023-11-14T22:13:20.042Z",
        "level": "WARNING",
        "logger": "tests.logs",
        "message": "listening on 127.0.0.1:50051",
    }


def test_extra_fields_become_top_level_keys_and_record_attributes_do_not() -> None:
    event = as_json(
        record(
            "command %d acknowledged",
            7,
            extra={"command_id": 7, "p_value": None, "ok": True, "rate": 299.5},
        )
    )
    assert event["command_id"] == 7
    assert event["p_value"] is None
    assert event["ok"] is True
    assert event["rate"] == 299.5
    for attribute in ("args", "msg", "levelno", "pathname", "lineno", "thread", "process"):
        assert attribute not in event
    assert "exception" not in event


def test_fixed_keys_win_over_extra_fields_of_the_same_name() -> None:
    event = as_json(record("hello", extra={"level": "fake", "time": 0, "logger": "x"}))
    assert event["level"] == "INFO"
    assert event["time"] == "2023-11-14T22:13:20.042Z"
    assert event["logger"] == "tests.logs"


def test_values_json_cannot_hold_are_written_as_text() -> None:
    event = as_json(record("odd", extra={"path": Path("/a/b"), "nan": float("nan")}))
    assert event["path"] == "/a/b"
    assert event["nan"] == "nan"


def test_exception_is_formatted_into_its_own_field() -> None:
    try:
        raise ValueError("bad frame")
    except ValueError:
        made = record("decision failed", level=logging.ERROR, exc_info=sys.exc_info())
    event = as_json(made)
    assert event["message"] == "decision failed"
    assert event["exception"].startswith("Traceback (most recent call last):")
    assert event["exception"].endswith("ValueError: bad frame")


def test_unicode_and_newlines_survive_a_round_trip() -> None:
    message = 'sensor "Ω-7": naïve ✓\nsecond line'
    event = as_json(record("%s", message, extra={"note": "größer ≥ 5"}))
    assert event["message"] == message
    assert event["note"] == "größer ≥ 5"
    assert log_message(JsonFormatter().format(record("%s", message))) == message


def test_text_format_is_unchanged() -> None:
    made = record("listening on %s:%d", "127.0.0.1", 7700, extra={"command_id": 3})
    assert make_formatter("text").format(made) == (
        "2023-11-14T22:13:20.042Z INFO tests.logs: listening on 127.0.0.1:7700"
    )


def test_configure_logging_sets_the_root_handler(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging("info", "json")
        logging.getLogger("tests.logs").info("x=%d", 1, extra={"x": 1})
        err = capsys.readouterr().err
    finally:
        root.handlers[:], root.level = saved
    event = json.loads(err)
    assert TIME.fullmatch(event["time"])
    assert (event["message"], event["x"]) == ("x=1", 1)
    with pytest.raises(ValueError, match="log format"):
        make_formatter("yaml")


def test_flag_type_accepts_either_case_and_names_the_choices() -> None:
    assert log_format("JSON") == "json"
    assert log_format(" text ") == "text"
    with pytest.raises(Exception, match="text, json"):
        log_format("xml")


def test_log_message_leaves_text_and_broken_json_alone() -> None:
    text = "2023-11-14T22:13:20.042Z INFO sensor: {not json"
    assert log_message(text) == text
    assert log_message("{not json") == "{not json"
    assert log_message('{"no_message": 1}') == '{"no_message": 1}'
    assert log_message("[1, 2]") == "[1, 2]"


def test_listening_regex_finds_the_port_in_a_raw_json_line() -> None:
    # tests/processes.py and the runner search raw lines; extras after the message
    # must not be taken for part of the address.
    line = JsonFormatter().format(
        record("listening on %s:%d", "127.0.0.1", 40123, extra={"port": 1, "host": "h"})
    )
    match = LISTENING.search(line)
    assert match is not None
    assert match.groups() == ("127.0.0.1", "40123")


# -------------------------------------------------------------------- the services


def json_lines(service: Service) -> list[dict[str, Any]]:
    """Every stderr line of ``service`` as JSON (fails on the first that is not)."""
    events = []
    for line in service.output().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            pytest.fail(f"{service.name}: not a JSON line: {line!r}\n{service.output()}")
        assert isinstance(event, dict)
        assert {"time", "level", "logger", "message"} <= event.keys(), line
        assert TIME.fullmatch(event["time"]), line
        events.append(event)
    return events


def messages(events: list[dict[str, Any]]) -> list[str]:
    return [str(e["message"]) for e in events]


def test_every_service_logs_json_lines_with_their_fields(tmp_path: Path) -> None:
    manipulator = start_manipulator(tmp_path / "journal.jsonl", "--log-format", "json")
    assert manipulator.port is not None
    with running(manipulator):
        controller = start_controller(
            sqlite_url(tmp_path / "workcell.db"),
            "--period", "0.5",
            "--grace", "0.1",
            manipulator_port=manipulator.port,
            env={"WORKCELL_LOG_FORMAT": "json"},  # the variable works like the flag
        )  # fmt: skip
        assert controller.port is not None
        with running(controller):
            sensor = start_sensor(
                controller.port,
                "--count", "50", "--rate", "100", "--log-format", "json",
                sensor_id="json-1",
            )  # fmt: skip
            with running(sensor):
                assert sensor.wait(60) == 0, sensor.output()
            controller.wait_for_line(r"command \d+ acknowledged")
            manipulator.wait_for_line(r"command \d+: status=")
            assert controller.stop() == 0, controller.output()
        assert manipulator.stop() == 0, manipulator.output()

    for service in (manipulator, controller):
        events = json_lines(service)
        listening = [m for m in messages(events) if m.startswith("listening on ")]
        assert listening == [f"listening on 127.0.0.1:{service.port}"]

    decisions = [e for e in json_lines(controller) if e["message"].startswith("decision:")]
    assert decisions
    first = decisions[0]
    assert first["logger"] == "controller.decision.loop"
    assert first["command_id"] == 1
    assert first["status"] in ("up", "down")
    assert first["window_start"] in first["message"]
    assert first["window_end"] in first["message"]
    assert {"p_value", "changed", "count", "window_end"} <= first.keys()

    journaled = [e for e in json_lines(manipulator) if "command_id" in e]
    assert journaled
    assert journaled[0]["message"].startswith(f"command {journaled[0]['command_id']}: status=")

    sensor_messages = messages(json_lines(sensor))
    assert any(m.startswith("sensor json-1 starting:") for m in sensor_messages)
    assert any("stopped: created=50 sent=50 acked=50" in m for m in sensor_messages)


def test_a_bad_log_format_exits_2_with_one_line() -> None:
    for module in ("controller", "manipulator", "sensor"):
        result = subprocess.run(
            [sys.executable, "-m", module, "--log-format", "xml"],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=ROOT,
            check=False,
        )
        assert result.returncode == 2, (module, result.stderr)
        assert result.stderr.count("\n") == 1, result.stderr
        assert "--log-format" in result.stderr


def test_workcell_run_with_json_logs_still_shows_the_cell(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable, "-m", "workcell.cli", "run",
            "--sensors", "1",
            "--period", "0.5",
            "--rate", "100",
            "--no-live",
            "--data", str(tmp_path),
            "--controller-listen", "127.0.0.1:0",
            "--manipulator-listen", "127.0.0.1:0",
            "--duration", "6",
            "--log-format", "json",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    # The summary (stdout) comes from the controller's API, whatever the log format.
    assert re.search(r"sensor-1 \d+\.\d/s", result.stdout), result.stdout
    assert re.search(r"stored=\d+", result.stdout), result.stdout
    assert re.search(r"commands=[1-9]", result.stdout), result.stdout
    # The command's own log lines (stderr) and every child's are JSON.
    for line in result.stderr.splitlines():
        assert json.loads(line)["logger"], line
    for name in ("manipulator", "controller", "sensor-1", "workcell"):
        lines = (tmp_path / "logs" / f"{name}.log").read_text().splitlines()
        assert lines, name
        for line in lines:
            assert "message" in json.loads(line), (name, line)


# ------------------------------------------------------------ native stderr (gRPC core)


@pytest.mark.parametrize(
    ("line", "level", "message", "source"),
    [
        (
            "I1202 01:43:14.769861    8255 ssl_transport_security.cc:2563] Handshake failed",
            logging.INFO,
            "Handshake failed",
            "ssl_transport_security.cc:2563",
        ),
        (
            "E0000 00:00:1744377140.613412 35892123 init.cc:229] timed out.",
            logging.ERROR,
            "timed out.",
            "init.cc:229",
        ),
        ("W1231 23:59:59.000001 1 a/b.cc:1] ", logging.WARNING, "", "a/b.cc:1"),
        ("F0101 00:00:00.000000 7 x.cc:9] fatal] here", logging.CRITICAL, "fatal] here", "x.cc:9"),
        ("Segmentation fault", logging.WARNING, "Segmentation fault", None),
        ("I am not absl] at all", logging.WARNING, "I am not absl] at all", None),
    ],
)
def test_core_lines_are_read_with_their_severity(
    line: str, level: int, message: str, source: str | None
) -> None:
    assert parse_core_line(line) == CoreLine(level, message, source)


NATIVE_WRITER = """
import logging, os, sys
from workcell.logs import configure_logging
configure_logging("INFO", "json", native_stderr=True)
logging.getLogger("test").info("before")
os.write(2, b"I1202 01:43:14.769861 8255 ssl_transport_security.cc:2563] Handshake fai")
os.write(2, b"led with error X\\nsomething else\\n")
print("python's own stderr", file=sys.stderr)
os.write(2, b"E1202 01:43:15.000000 8255 init.cc:229] the last words\\n")
"""


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    """``python -c code`` as a real process (descriptor 2 is its own); it must exit 0."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


def test_what_native_code_writes_to_stderr_is_logged_in_the_format() -> None:
    # A real process: descriptor 2 is redirected, and read to the end at exit.
    result = _run_python(NATIVE_WRITER)
    lines = result.stderr.splitlines()
    # Python's own writes go straight out, as before; everything else is JSON.
    assert "python's own stderr" in lines
    events = [json.loads(line) for line in lines if line != "python's own stderr"]
    got = {(e["logger"], e["level"], e["message"], e.get("grpc_source")) for e in events}
    assert got == {
        ("test", "INFO", "before", None),
        ("grpc.core", "INFO", "Handshake failed with error X", "ssl_transport_security.cc:2563"),
        ("stderr", "WARNING", "something else", None),
        ("grpc.core", "ERROR", "the last words", "init.cc:229"),  # written just before exit
    }


LATE_NATIVE_WRITER = """
import atexit, os
from workcell.logs import configure_logging
# Registered before the capture, so it runs after the capture's own exit hook:
# as a gRPC core thread finishing a handshake while the process shuts down.
atexit.register(os.write, 2, b"I1202 02:41:11.962237 16278 ssl_transport_security.cc:2563] late\\n")
configure_logging("INFO", "json", native_stderr=True)
"""


def test_a_native_line_written_after_the_capture_stopped_is_not_written_raw() -> None:
    # Found by CI: a sensor's last TLS handshake failed after its capture had
    # given descriptor 2 back, and a raw core line broke the JSON stream.
    result = _run_python(LATE_NATIVE_WRITER)
    for line in result.stderr.splitlines():
        json.loads(line)  # nothing raw, whatever comes too late to be logged
