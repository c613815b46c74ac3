"""``workcell replay`` as a command: bad input, an unreachable or empty controller, its output.

The command runs as a child process against a real gRPC History server serving a scripted
history (``tests.history_server``); the replay against a real cell is ``test_replay_e2e``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.builders import history_entry
from tests.history_server import PERIOD_US, START_US, ScriptedHistory, serving
from tests.test_report import png_size, workcell
from workcell.replay_plot import DPI, FIGSIZE
from workcell.v1 import command_pb2, history_pb2


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--from", "2026-01-02T00:00:00Z", "--to", "2026-01-01T00:00:00Z"], "--from is after"),
        (["--alpha", "0"], "--alpha"),
        (["--alpha", "1"], "--alpha"),
        (["--alpha", "lots"], "--alpha"),
        (["--min-effect", "-1"], "--min-effect"),
        (["--min-effect", "nan"], "--min-effect"),
        (["--confirm", "0"], "--confirm"),
        (["--confirm", "1.5"], "--confirm"),
        (["--initial-status", "sideways"], "--initial-status"),
        (["--from", "yesterday"], "--from"),
    ],
)
def test_bad_input_exits_2_naming_the_flag(args: list[str], flag: str) -> None:
    result = workcell("replay", "--controller", "127.0.0.1:1", *args)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert flag in result.stderr
    assert result.stdout == ""


def test_an_unreachable_controller_exits_1_with_the_grpc_status() -> None:
    result = workcell("replay", "--controller", "127.0.0.1:1")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "workcell replay: 127.0.0.1:1: UNAVAILABLE" in result.stderr


def test_an_empty_range_exits_1(tmp_path: Path) -> None:
    with serving(ScriptedHistory(0)) as address:
        result = workcell("replay", "--controller", address, "-o", str(tmp_path / "r.png"))
    assert result.returncode == 1
    assert result.stderr.strip() == "workcell replay: no commands in that time range"
    assert not (tmp_path / "r.png").exists()


def _entry(i: int) -> history_pb2.HistoryEntry:
    """Command i+1: windows of 40 readings at 100, then at 130 from window 5 on (exact sums:
    every reading 100 or 130 but one 101 or 131, so each window has some variance)."""

    def sums(level: int) -> history_pb2.WindowSummary:
        values = [level] * 39 + [level + 1]
        total, total_sq = sum(values), sum(v * v for v in values)
        return history_pb2.WindowSummary(
            count=40, mean=total / 40, std_dev=0.16, total=str(total), total_sq=str(total_sq)
        )

    level = 130 if i >= 5 else 100
    entry = history_entry(
        i + 1,
        window_start=START_US + i * PERIOD_US,
        period_us=PERIOD_US,
        status=command_pb2.STATUS_DOWN,  # as if the controller never moved: window 5 differs
        window=sums(level),
        previous=sums(130 if i - 1 >= 5 else 100) if i else history_pb2.WindowSummary(),
        changed=False,
        p_value=None,
        acked=True,
    )
    entry.policy.CopyFrom(history_pb2.DecisionPolicy(alpha=0.05, min_effect=0.0, confirm=1))
    return entry


def test_the_table_shows_both_statuses_and_the_windows_that_differ(tmp_path: Path) -> None:
    with serving(ScriptedHistory(8, make_entry=_entry)) as address:
        result = workcell(
            "replay", "--controller", address, "--min-effect", "10", "-o", str(tmp_path / "r.png")
        )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "id", "window", "n", "mean", "p-value", "difference", "issued", "replayed",
    ]  # fmt: skip
    rows = lines[2:10]
    assert [row.split()[0] for row in rows] == [str(i) for i in range(1, 9)]
    assert "down (too few readings)" in rows[0]
    assert "up (changed)" in rows[5]
    assert rows[5].endswith("differs")
    assert all("differs" in row for row in rows[5:])
    assert "replayed 8 windows" in result.stdout
    assert "alpha as recorded, min effect 10, confirm as recorded" in result.stdout
    assert "status changes: issued 0, replayed 1" in result.stdout
    assert "windows that differ: 3 (commands 6-8)" in result.stdout
    assert "wrote" in result.stderr
    assert png_size(tmp_path / "r.png") == (FIGSIZE[0] * DPI, FIGSIZE[1] * DPI)


def test_json_is_one_object_with_every_window_and_the_summary() -> None:
    with serving(ScriptedHistory(2500, make_entry=_entry)) as address:  # three pages
        result = workcell("replay", "--controller", address, "--confirm", "2", "--json")
    assert result.returncode == 0, result.stderr
    replay = json.loads(result.stdout)
    assert replay["policy"] == {"alpha": None, "min_effect": None, "confirm": 2}
    windows = replay["windows"]
    assert [w["command_id"] for w in windows] == list(range(1, 2501))
    assert windows[5]["replayed"]["outcome"] == "unconfirmed"
    assert windows[5]["replayed"]["policy"] == {"alpha": 0.05, "min_effect": 0.0, "confirm": 2}
    assert windows[6]["replayed"]["status"] == "down"  # 130 vs 130: nothing more to confirm
    assert not any(w["differs"] for w in windows)
    assert all(w["exact"] for w in windows)
    assert replay["summary"] == {
        "windows": 2500,
        "issued_changes": 0,
        "replayed_changes": 0,
        "differing_windows": 0,
        "differing": [],
        "inexact_windows": 0,
    }


def test_a_command_missing_from_the_history_exits_1() -> None:
    def with_a_gap(i: int) -> history_pb2.HistoryEntry:
        return _entry(i + 1 if i >= 3 else i)

    with serving(ScriptedHistory(6, make_entry=with_a_gap)) as address:
        result = workcell("replay", "--controller", address)
    assert result.returncode == 1
    assert "workcell replay: command 5 does not follow command 3" in result.stderr
