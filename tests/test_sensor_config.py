"""The sensor's flags, environment variables and their validation."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sensor.__main__ import reading_limit
from sensor.config import StepAt, default_sensor_id, parse_config, sanitize_sensor_id
from tests.processes import ROOT
from workcell.flags import Address


def test_defaults() -> None:
    config = parse_config([], environ={})
    assert config.controller.addresses == (Address("127.0.0.1", 50051),)
    assert config.rate == 300
    assert (config.count, config.duration) == (None, None)
    assert config.profile == "regime"
    assert config.step_at == StepAt(10, relative=True)
    assert (config.batch, config.stream_seconds, config.buffer) == (1, 1.0, 100_000)
    assert config.progress
    assert config.log_level == "INFO"
    assert config.sensor_id == default_sensor_id()
    assert 0 <= config.seed < 2**32  # random when not given (and logged at start)


def test_environment_variables() -> None:
    config = parse_config(
        [],
        environ={
            "WORKCELL_CONTROLLER_ADDRESS": "controller:6000",
            "WORKCELL_SENSOR_ID": "s-7",
            "WORKCELL_SENSOR_RATE": "50.5",
            "WORKCELL_SENSOR_COUNT": "10",
            "WORKCELL_SENSOR_DURATION": "2m",
            "WORKCELL_SENSOR_PROFILE": "step",
            "WORKCELL_SENSOR_SEED": "42",
            "WORKCELL_SENSOR_STEP_AT": "1700000000",
            "WORKCELL_SENSOR_BATCH": "5",
            "WORKCELL_SENSOR_STREAM_SECONDS": "0.5",
            "WORKCELL_SENSOR_BUFFER": "1000",
            "WORKCELL_SENSOR_NO_PROGRESS": "1",
            "WORKCELL_LOG_LEVEL": "debug",
        },
    )
    assert config.controller.addresses == (Address("controller", 6000),)
    assert config.sensor_id == "s-7"
    assert config.rate == 50.5
    assert (config.count, config.duration) == (10, 120.0)
    assert (config.profile, config.seed) == ("step", 42)
    assert config.step_at == StepAt(1_700_000_000, relative=False)
    assert (config.batch, config.stream_seconds, config.buffer) == (5, 0.5, 1000)
    assert not config.progress
    assert config.log_level == "DEBUG"


def test_flags_override_environment() -> None:
    config = parse_config(
        ["--rate", "10", "--no-progress", "--step-at", "+2.5"],
        environ={"WORKCELL_SENSOR_RATE": "20", "WORKCELL_SENSOR_NO_PROGRESS": "0"},
    )
    assert config.rate == 10
    assert not config.progress
    assert config.step_at.resolve(1_000_000) == 3_500_000


def test_sanitized_default_sensor_id() -> None:
    assert default_sensor_id("web-01.example.com") == "sensor-web-01.example.com"
    assert default_sensor_id("host name/with:odd*chars") == "sensor-host-name-with-odd-chars"
    assert len(default_sensor_id("h" * 200)) == 64
    assert sanitize_sensor_id("!!!") == "sensor"


@pytest.mark.parametrize(
    ("args", "env", "flag"),
    [
        (["--rate", "0"], {}, "--rate"),
        (["--sensor-id", "bad id!"], {}, "--sensor-id"),
        (["--sensor-id", "x" * 65], {}, "--sensor-id"),
        (["--count", "-3"], {}, "--count"),
        (["--duration", "0"], {}, "--duration"),
        (["--profile", "sine"], {}, "--profile"),
        (["--step-at", "soon"], {}, "--step-at"),
        (["--batch", "10", "--buffer", "5"], {}, "--buffer"),
        (["--controller", "nohost"], {}, "--controller"),
        ([], {"WORKCELL_SENSOR_PROFILE": "sine"}, "--profile"),
        ([], {"WORKCELL_SENSOR_NO_PROGRESS": "maybe"}, "--no-progress"),
        # Values once accepted that could not work (issue 10): a spinning pacer
        # deaf to SIGTERM, a hang before the first log line, messages over the
        # controller's 4 MiB limit, streams older than its --stream-max-age.
        (["--rate", "1e6"], {}, "--rate"),
        (["--duration", "1e300"], {}, "--duration"),
        (["--batch", "100000"], {}, "--batch"),
        ([], {"WORKCELL_SENSOR_STREAM_SECONDS": "3600"}, "--stream-seconds"),
        (["--buffer", "1e9"], {}, "--buffer"),
    ],
)
def test_bad_values_exit_2_with_one_line(
    args: list[str], env: dict[str, str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_config(args, environ=env)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert flag in err


@pytest.mark.parametrize(
    ("args", "flag"), [(["--rate", "0"], "--rate"), (["--sensor-id", "bad id!"], "--sensor-id")]
)
def test_process_rejects_bad_flags(args: list[str], flag: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sensor", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert flag in lines[0]


def test_reading_limit_from_count_and_duration() -> None:
    assert reading_limit(parse_config([], environ={})) is None
    assert reading_limit(parse_config(["--count", "10"], environ={})) == 10
    assert reading_limit(parse_config(["--duration", "2", "--rate", "300"], environ={})) == 600
    both = parse_config(["--duration", "2", "--rate", "300", "--count", "50"], environ={})
    assert reading_limit(both) == 50
