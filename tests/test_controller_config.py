"""Controller flags and their WORKCELL_* environment variables."""

from __future__ import annotations

import subprocess
import sys

import pytest

from controller.api.admission import StreamLimits
from controller.config import ControllerConfig, parse_config
from workcell.flags import Address


def test_defaults_match_the_documented_ones() -> None:
    assert parse_config([], environ={}) == ControllerConfig()
    assert str(ControllerConfig().listen) == "127.0.0.1:50051"
    assert ControllerConfig().database == "sqlite+aiosqlite:///data/workcell.db"


def test_environment_fills_in_and_flags_win() -> None:
    environ = {"WORKCELL_PERIOD": "0.5", "WORKCELL_MANIPULATOR_ADDRESS": "manipulator:7700"}
    config = parse_config(["--alpha", "0.01"], environ=environ)
    assert config.period == 0.5
    assert config.manipulator == Address("manipulator", 7700)
    assert config.alpha == 0.01
    assert parse_config(["--period", "2"], environ=environ).period == 2.0


def test_stream_limits_come_from_flags_and_environment() -> None:
    config = parse_config(
        ["--max-streams", "50", "--stream-idle-timeout", "1m"],
        environ={"WORKCELL_MAX_STREAMS_PER_PEER": "5", "WORKCELL_STREAM_MAX_AGE": "2h"},
    )
    assert config.stream_limits == StreamLimits(
        max_streams=50, max_per_peer=5, idle_timeout=60.0, max_age=7200.0
    )


@pytest.mark.parametrize(
    ("args", "env", "flag"),
    [
        (["--period", "0"], {}, "--period"),
        (["--alpha", "1.5"], {}, "--alpha"),
        (["--listen", "nowhere"], {}, "--listen"),
        (["--initial-status", "sideways"], {}, "--initial-status"),
        (["--database", "workcell.db"], {}, "--database"),
        ([], {"WORKCELL_GRACE": "-1"}, "--grace"),
        ([], {"WORKCELL_LOG_LEVEL": "bogus"}, "--log-level"),
        (["--max-streams", "0"], {}, "--max-streams"),
        ([], {"WORKCELL_MAX_STREAMS_PER_PEER": "-3"}, "--max-streams-per-peer"),
        (["--stream-idle-timeout", "0"], {}, "--stream-idle-timeout"),
        (["--stream-max-age", "1e300"], {}, "--stream-max-age"),
        # Values once accepted that could not work (issue 10): a ZeroDivisionError
        # traceback, a cadence the controller cannot keep, sweeps that always fail.
        (["--period", "1e-7"], {}, "--period"),
        ([], {"WORKCELL_PERIOD": "0.001"}, "--period"),
        (["--retain-readings", "1e300"], {}, "--retain-readings"),
        (["--ingest-buffer", "1e12"], {}, "--ingest-buffer"),
        ([], {"WORKCELL_COMMIT_INTERVAL": "2"}, "--commit-interval"),
    ],
)
def test_a_bad_value_exits_2_with_one_line_naming_the_flag(
    args: list[str], env: dict[str, str], flag: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "controller", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert flag in lines[0]
    for name in env:
        assert name in lines[0]
