"""Smoke tests of the benchmark harness: its pure parts, and one very short real run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.procstat import parse_stat_cpu, parse_status_memory, read_usage
from benchmarks.profiles import top_own_time
from benchmarks.readings import MessageTemplate
from benchmarks.report import Target, format_table, summary_rows
from benchmarks.scenarios import Settings, run_scenario
from workcell.v1 import telemetry_pb2

STAT = (
    "4242 (python -m (x) y) S 1 4242 4242 0 -1 4194304 9000 0 0 0 "
    "250 50 30 20 20 0 3 0 100 1000000 3000 18446744073709551615"
)


def test_stat_counts_fields_after_the_last_parenthesis() -> None:
    assert parse_stat_cpu(STAT, ticks=100) == (3.0, 0.5)


def test_status_memory_reads_rss_and_hwm() -> None:
    text = "Name:\tpython\nVmHWM:\t  20480 kB\nVmRSS:\t   10240 kB\nThreads:\t3\n"
    assert parse_status_memory(text) == (10240, 20480)
    assert parse_status_memory("Name:\tzombie\n") == (0, 0)


def test_read_usage_of_this_process() -> None:
    usage = read_usage(os.getpid())
    assert usage.rss_kib > 0
    assert usage.hwm_kib >= usage.rss_kib
    assert usage.total_cpu > 0


def test_table_aligns_numbers_right_and_shows_none_as_dash() -> None:
    table = format_table(("name", "rate"), [("a", 1234.5), ("bb", None)])
    assert table.splitlines() == [
        "name   rate",
        "----  -----",
        "a     1,234",
        "bb        -",
    ]


def test_summary_rows_say_pass_or_fail() -> None:
    rows = summary_rows([Target("b", "x >= 0.8 y", "1 vs 2", 0.5, False)])
    assert rows == [("b", "x >= 0.8 y", "1 vs 2", 0.5, "FAIL")]


def test_profile_summary_counts_leaf_frames() -> None:
    lines = [
        "MainThread;run (a.py:1);work (b.py:10) 3",
        "MainThread;run (a.py:1);work (b.py:12) 1",
        "MainThread;run (a.py:1) 4",
    ]
    assert sorted(top_own_time(lines)) == [("run (a.py)", 4, 0.5), ("work (b.py)", 4, 0.5)]


def test_message_template_gives_unique_keys_per_stream() -> None:
    template = MessageTemplate("gen-0", batch=3, count=2)
    first = template.stream("a" * 32, 1_800_000_000)
    request = telemetry_pb2.StreamReadingsRequest.FromString(first[1])
    assert [r.seq for r in request.readings] == [4, 5, 6]
    assert {r.boot_id for r in request.readings} == {"a" * 32}
    assert request.readings[0].timestamp.seconds == 1_800_000_000
    other = telemetry_pb2.StreamReadingsRequest.FromString(
        template.message(0, "b" * 32, 1_700_000_001)
    )
    assert other.readings[0].boot_id == "b" * 32
    assert other.readings[0].timestamp.seconds == 1_700_000_001
    with pytest.raises(ValueError, match="second"):
        template.message(0, "b" * 32, 5)


def test_saturation_scenario_runs_briefly(tmp_path: Path) -> None:
    settings = Settings(work_dir=tmp_path, saturation_s=2.0, storage_s=0.5, warmup_s=1.0)
    result = run_scenario("b", settings)
    bare, controller = result.rows
    assert bare.readings_per_s is not None
    assert bare.readings_per_s > 0
    assert controller.readings_per_s is not None
    assert controller.readings_per_s > 0
    assert {target.scenario for target in result.targets} == {"b"}


def test_history_page_scenario_runs_briefly(tmp_path: Path) -> None:
    # Its database is made by the controller's migrations, like the controller's own.
    result = run_scenario("e", Settings(work_dir=tmp_path, small=1_000, big=2_000))
    assert [row.run for row in result.rows] == ["1,000 commands", "2,000 commands"]
    (target,) = result.targets
    assert target.ratio is not None
    assert target.ratio > 0
