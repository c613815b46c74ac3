"""Smoke tests of the benchmark harness: its pure parts, and one very short real run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.__main__ import parse_settings
from benchmarks.measure import Window
from benchmarks.nodes import GENERATORS, NodeRun, node_rows
from benchmarks.postgres_server import find_postgres_bin
from benchmarks.procstat import (
    Usage,
    descendants,
    parse_stat_cpu,
    parse_stat_parent,
    parse_status_memory,
    read_tree_cpu,
    read_usage,
)
from benchmarks.profiles import top_own_time
from benchmarks.readings import MessageTemplate
from benchmarks.report import Target, format_table, summary_rows
from benchmarks.scenarios import Settings, run_scenario
from tests.databases import in_ci
from workcell.v1 import telemetry_pb2

STAT = (
    "4242 (python -m (x) y) S 1 4242 4242 0 -1 4194304 9000 0 0 0 "
    "250 50 30 20 20 0 3 0 100 1000000 3000 18446744073709551615"
)


def test_stat_counts_fields_after_the_last_parenthesis() -> None:
    assert parse_stat_cpu(STAT, ticks=100) == (3.0, 0.5)


def test_stat_gives_the_parent_after_the_last_parenthesis() -> None:
    assert parse_stat_parent(STAT) == 1


def test_descendants_walk_the_whole_tree_and_nothing_else() -> None:
    # runuser 10 -> postmaster 11 -> backends 12, 13; 13 -> 14; 20 is another tree.
    parents = {10: 1, 11: 10, 12: 11, 13: 11, 14: 13, 20: 1, 21: 20}
    assert descendants(parents, 10) == {11, 12, 13, 14}
    assert descendants(parents, 14) == set()


BUSY_THEN_IDLE = """
import time
end = time.process_time() + 0.3
while time.process_time() < end:
    pass
print("busy", flush=True)
time.sleep(60)
"""


def test_tree_cpu_counts_a_child_process() -> None:
    busy = subprocess.Popen([sys.executable, "-c", BUSY_THEN_IDLE], stdout=subprocess.PIPE)
    try:
        assert busy.stdout is not None
        assert busy.stdout.readline() == b"busy\n"  # its 0.3 s of CPU are spent
        # The busy child is alive, so its CPU is in the tree and not yet reaped into ours
        # (ours first: it only grows; /proc counts in clock ticks, hence the margin).
        mine = read_usage(os.getpid()).total_cpu
        assert read_tree_cpu(os.getpid()) >= mine + 0.25
    finally:
        busy.kill()
        busy.wait()


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


def _usage(cpu: float) -> Usage:
    return Usage(cpu, 0.0, 1024, 2048)


def test_node_rows_give_cpu_per_reading_per_node_and_for_postgresql() -> None:
    names = ["node-0", "node-1", "postgresql"] + [f"loadgen-{i}" for i in range(GENERATORS)]
    before = {name: _usage(1.0) for name in names}
    after = {"node-0": _usage(4.0), "node-1": _usage(2.0), "postgresql": _usage(3.0)}
    after |= {f"loadgen-{i}": _usage(1.5) for i in range(GENERATORS)}
    tallies = {"node-0": 30_000, "node-1": 10_000, "commits": 100, "wal_bytes": 16_000_000}
    tallies["database_bytes"] = 6_000_000
    window = Window(10.0, 40_000, before, after, tallies)
    rows = node_rows(NodeRun(2, window, leader=1, load_average="1.00 2.00 3.00"))
    assert [row.process for row in rows] == [
        "node 1",
        "node 2",
        "all nodes",
        "PostgreSQL (all processes)",
        f"generators ({GENERATORS} processes)",
    ]
    first, second, total, database, generators = rows
    # 3 CPU s for the 30,000 readings node 1 acknowledged: 100 us each, 30% of a core.
    assert (first.readings_per_s, first.cpu_percent, first.cpu_s_per_million) == (
        3_000.0,
        30.0,
        100.0,
    )
    assert second.note.startswith("leader")
    assert not first.note.startswith("leader")
    assert (total.readings_per_s, total.cpu_percent, total.cpu_s_per_million) == (
        4_000.0,
        40.0,
        100.0,
    )
    assert "load average 1.00 2.00 3.00" in total.note
    assert (database.cpu_percent, database.cpu_s_per_million) == (20.0, 50.0)
    assert database.note == (
        "10 commits/s, 400 readings/commit, 400 WAL bytes/reading, 150 bytes/reading on disk"
    )
    assert generators.cpu_percent == 100 * 0.5 * GENERATORS / 10


def test_node_counts_flag() -> None:
    assert parse_settings(["--nodes", "1,3"])[1].node_counts == (1, 3)
    assert parse_settings([])[1].node_counts == (1, 2, 3)
    with pytest.raises(SystemExit):
        parse_settings(["--nodes", "0"])


def test_node_saturation_scenario_runs_briefly(tmp_path: Path) -> None:
    if find_postgres_bin() is None:
        if in_ci():
            pytest.fail("PostgreSQL binaries missing (CI must run both backends)")
        pytest.skip("PostgreSQL server binaries not installed (make postgres)")
    settings = Settings(work_dir=tmp_path, saturation_s=2.0, warmup_s=1.0, node_counts=(2,))
    result = run_scenario("f", settings)
    first, second, total, database, _ = result.rows
    # Both nodes stored readings, and the durable count saw them.
    for row in (first, second, total):
        assert row.readings_per_s is not None
        assert row.readings_per_s > 0
    assert [first.note, second.note].count("leader; acked to its generators") == 1
    assert database.cpu_percent is not None
    assert database.cpu_percent > 0
