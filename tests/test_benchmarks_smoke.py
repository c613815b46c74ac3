"""Smoke tests of the benchmark harness: its pure parts, and very short real runs."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest

from benchmarks import loadgen
from benchmarks.__main__ import parse_settings
from benchmarks.commit_probe import CommitProbe
from benchmarks.latency import percentile, summarize
from benchmarks.latency_runs import decision_delays
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
from benchmarks.readings import ExactReadings, MessageTemplate
from benchmarks.repeats import combine, interleave
from benchmarks.report import (
    Combined,
    Measured,
    Spread,
    Target,
    format_table,
    measured_table,
    spread,
    summary_rows,
)
from benchmarks.scenarios import Settings, run_scenario
from benchmarks.storage import create_schema
from tests.databases import in_ci
from workcell.v1 import telemetry_pb2, telemetry_pb2_grpc

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


def _median_rate(row: Measured | Combined) -> float:
    assert isinstance(row, Combined)
    assert row.readings_per_s is not None
    return row.readings_per_s.median


def test_saturation_scenario_runs_briefly(tmp_path: Path) -> None:
    # Two runs of each side: the rows are their medians and spreads.
    settings = Settings(work_dir=tmp_path, saturation_s=2.0, storage_s=0.5, warmup_s=1.0, repeat=2)
    result = run_scenario("b", settings)
    bare, controller = result.rows
    assert _median_rate(bare) > 0
    assert _median_rate(controller) > 0
    assert isinstance(controller, Combined)
    assert controller.readings_per_s is not None
    assert controller.readings_per_s.runs == 2
    assert len(result.values["durable_per_s"]) == 2
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
        assert isinstance(row, Measured)
        assert row.readings_per_s is not None
        assert row.readings_per_s > 0
    assert [first.note, second.note].count("leader; acked to its generators") == 1
    assert isinstance(database, Measured)
    assert database.cpu_percent is not None
    assert database.cpu_percent > 0


def _require_postgres() -> None:
    if find_postgres_bin() is None:
        if in_ci():
            pytest.fail("PostgreSQL binaries missing (CI must run both backends)")
        pytest.skip("PostgreSQL server binaries not installed (make postgres)")


# --- issue 15: repetitions, latency, PostgreSQL ------------------------------------------


def test_spread_is_the_median_and_the_range_of_the_runs() -> None:
    assert spread([30.0, 10.0, 20.0]) == Spread(20.0, 10.0, 30.0, 3)
    assert str(spread([1234.5, 1000.0, 1500.0])) == "1,234 [1,000-1,500]"
    # One run: no range to show.
    assert str(spread([2.5])) == "2.50"
    with pytest.raises(ValueError, match="no runs"):
        spread([])


def test_combine_gives_one_row_per_process_with_medians_and_every_note() -> None:
    runs = [
        [Measured("bare", "server", 100.0, 10.0, note="a"), Measured("c", "ctl", 50.0)],
        [Measured("bare", "server", 300.0, 30.0, note="b"), Measured("c", "ctl", 70.0)],
        [Measured("bare", "server", 200.0, None, note="a"), Measured("c", "ctl", 60.0)],
    ]
    server, controller = combine(runs)
    assert server.readings_per_s == Spread(200.0, 100.0, 300.0, 3)
    # A figure missing from a run is left out of its median, not counted as 0.
    assert server.cpu_percent == Spread(20.0, 10.0, 30.0, 2)
    assert server.cpu_s_per_million is None
    assert server.note == "a | b"
    assert controller.readings_per_s == Spread(60.0, 50.0, 70.0, 3)
    table = measured_table([server, controller]).splitlines()
    assert "200 [100-300]" in table[2]
    with pytest.raises(ValueError, match="different rows"):
        combine([[Measured("bare", "server")], [Measured("bare", "other")]])


def test_interleave_alternates_the_sides_run_after_run() -> None:
    order: list[str] = []

    def side(name: str) -> Callable[[int], str]:
        def run(repetition: int) -> str:
            order.append(f"{name}{repetition}")
            return f"{name}{repetition}"

        return run

    project, ceiling = interleave(3, [side("p"), side("c")])
    assert order == ["p0", "c0", "p1", "c1", "p2", "c2"]
    assert project == ["p0", "p1", "p2"]
    assert ceiling == ["c0", "c1", "c2"]


def test_repeat_flag_defaults_to_three_and_quick_to_one() -> None:
    assert parse_settings([])[1].repeat == 3
    assert parse_settings(["--quick"])[1].repeat == 1
    assert parse_settings(["--quick", "--repeat", "2"])[1].repeat == 2
    assert parse_settings(["--repeat", "5"])[1].repeat == 5
    for wrong in ("0", "x"):
        with pytest.raises(SystemExit):
            parse_settings(["--repeat", wrong])
    keys, _ = parse_settings(["--scenarios", "b,l,b-pg,c-pg"])
    assert keys == ["b", "l", "b-pg", "c-pg"]


def test_percentiles_count_late_readings_as_slower_than_any_seen() -> None:
    seen = list(range(1, 101))  # 1..100 us
    assert percentile(seen, 0, 0.5) == 50
    assert percentile(seen, 0, 0.99) == 99
    # Two late of 102: the 99th percentile (rank 101) is among them, so unknown.
    assert percentile(seen, 2, 0.99) is None
    assert percentile(seen, 2, 0.5) == 51
    assert percentile([], 0, 0.5) is None
    summary = summarize([3_000, 1_000, 2_000], [500, 100, 200], late=0)
    assert (summary.p50_s, summary.max_s, summary.receive_p99_s) == (0.002, 0.003, 0.0005)
    late = summarize([1_000], [100], late=1)
    assert (late.readings, late.max_s) == (2, None)


def test_exact_readings_carry_the_microsecond_they_were_sent() -> None:
    readings = ExactReadings("gen-0")
    now_ns = 1_800_000_000_123_456_789
    request = telemetry_pb2.StreamReadingsRequest.FromString(readings.message("a" * 32, 7, now_ns))
    (reading,) = request.readings
    assert (reading.sensor_id, reading.boot_id, reading.seq) == ("gen-0", "a" * 32, 7)
    assert reading.timestamp.ToMicroseconds() == now_ns // 1000


def test_commit_probe_times_committed_rows_and_counts_the_unseen_as_late(
    tmp_path: Path,
) -> None:
    path = tmp_path / "controller.db"
    create_schema(path)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("INSERT INTO sensor_runs (id, sensor_id, boot_id) VALUES (1, 's', 'b')")
        db.execute("INSERT INTO readings (run_id, seq, payload, timestamp, received_at) "
                   "VALUES (1, 0, 0, 0, 0)")  # fmt: skip
        probe = CommitProbe(path, interval=0.002)
        start_us = probe.start()
        created = []
        for seq in range(1, 6):
            now = time.time_ns() // 1000
            created.append(now)
            db.execute("BEGIN")
            db.execute(
                "INSERT INTO readings (run_id, seq, payload, timestamp, received_at) "
                "VALUES (1, ?, 0, ?, ?)",
                (seq, now, now + 100),
            )
            # Committed 20 ms after its creation: the probe's figure is at least that.
            time.sleep(0.02)
            db.execute("COMMIT")
        time.sleep(0.05)
        probe.stop()
        end_us = time.time_ns() // 1000
        # Created in the window, committed after the probe stopped looking: late.
        db.execute(
            "INSERT INTO readings (run_id, seq, payload, timestamp, received_at) "
            "VALUES (1, 6, 0, ?, ?)",
            (end_us - 1, end_us - 1),
        )
    probed = probe.window(start_us, end_us)
    assert len(probed.committed_us) == 5
    assert probed.received_us == [100] * 5
    assert all(20_000 <= latency < 2_000_000 for latency in probed.committed_us)
    assert probed.late == 1
    # The row from before the probe started is not in the window at all.
    assert min(created) >= start_us


def test_latency_scenario_runs_briefly(tmp_path: Path) -> None:
    settings = Settings(
        work_dir=tmp_path,
        latency_s=1.5,
        warmup_s=1.0,
        drain_s=1.0,
        repeat=1,
        saturation_rate=4_000.0,
    )
    result = run_scenario("l", settings)
    assert result.extra is not None
    headers, rows = result.extra
    assert [row[0] for row in rows] == [
        "nominal 8 x 300/s",
        "50% of saturation",
        "80% of saturation",
    ]
    # Half and four fifths of the saturation these generators reached in a run of their own
    # ((b)'s, given here, is only shown beside it).
    saturation = result.values["saturation_per_s"]
    assert saturation > 0
    assert [row[1] for row in rows] == [2_400.0, 0.5 * saturation, 0.8 * saturation]
    assert "(b)'s median: 4,000/s" in result.values["saturation_source"]
    for row in rows:
        durable, p50 = row[headers.index("durable/s")], row[headers.index("p50 ms")]
        assert isinstance(durable, Spread)
        assert durable.median > 0
        assert isinstance(p50, Spread)
        assert 0 < p50.median < math.inf
    assert "decision delay max ms" in headers
    grace = [t for t in result.targets if "grace" in t.target]
    assert [t.scenario for t in grace] == ["l"]
    # The decision target only when a window (5 s) ended inside a run of 1.5 s.
    assert all("decision within" in t.target for t in result.targets if t not in grace)


def testdecision_delays_are_read_for_the_windows_ending_in_the_run(tmp_path: Path) -> None:
    path = tmp_path / "workcell.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE commands (window_end INTEGER, issued_at INTEGER)")
        rows = [(5_000_000, 5_040_000), (10_000_000, 10_020_000), (15_000_000, 15_500_000)]
        db.executemany("INSERT INTO commands VALUES (?, ?)", rows)
        db.commit()
    assert decision_delays(path, 4_000_000, 11_000_000) == [0.04, 0.02]


def test_saturation_on_postgresql_runs_briefly(tmp_path: Path) -> None:
    _require_postgres()
    settings = Settings(work_dir=tmp_path, saturation_s=2.0, warmup_s=1.0, repeat=1)
    result = run_scenario("b-pg", settings)
    assert [row.process for row in result.rows] == [
        "transport server",
        "controller",
        "PostgreSQL (all processes)",
    ]
    assert _median_rate(result.rows[1]) > 0
    assert "PostgreSQL" in result.targets[0].target


def test_storage_ceiling_on_postgresql_tries_every_means(tmp_path: Path) -> None:
    _require_postgres()
    settings = Settings(work_dir=tmp_path, saturation_s=2.0, storage_s=0.3, warmup_s=1.0, repeat=1)
    result = run_scenario("c-pg", settings)
    ceilings = [row for row in result.rows if row.run == "raw asyncpg"]
    assert [row.process for row in ceilings] == [
        f"{method}, {batch}/txn"
        for batch in ("1,000", "10,000")
        for method in ("executemany", "unnest", "copy")
    ]
    for row in ceilings:
        assert _median_rate(row) > 0
    assert _median_rate(result.rows[-2]) > 0  # the controller's durable rows
    (storage, _memory) = result.targets
    assert "raw asyncpg" in storage.measured


class _RecordingTelemetry(telemetry_pb2_grpc.TelemetryServicer):
    """Records every reading's key, to find one sent twice."""

    def __init__(self) -> None:
        self.keys: list[tuple[str, str, int]] = []

    async def StreamReadings(
        self,
        request_iterator: AsyncIterator[telemetry_pb2.StreamReadingsRequest],
        context: grpc.aio.ServicerContext[
            telemetry_pb2.StreamReadingsRequest, telemetry_pb2.StreamReadingsResponse
        ],
    ) -> telemetry_pb2.StreamReadingsResponse:
        count = 0
        async for request in request_iterator:
            for reading in request.readings:
                self.keys.append((reading.sensor_id, reading.boot_id, reading.seq))
                count += 1
        return telemetry_pb2.StreamReadingsResponse(stored=count)


async def test_paced_generator_never_sends_one_seq_twice_across_its_streams() -> None:
    # A stream ends while its writer waits at a yield; the next stream must not take the
    # same index (it did: duplicate keys, with other payloads and times under --exact-time).
    server = grpc.aio.server()
    recording = _RecordingTelemetry()
    telemetry_pb2_grpc.add_TelemetryServicer_to_server(recording, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        for exact in ([], ["--exact-time"]):
            recording.keys.clear()
            args = loadgen.parse_args(
                [
                    "--target",
                    f"127.0.0.1:{port}",
                    "--senders",
                    "2",
                    "--rate",
                    "2000",
                    "--stream-seconds",
                    "0.05",
                    *exact,
                ]
            )
            generator = loadgen.Generator(args)
            running = asyncio.create_task(generator.run())
            await asyncio.sleep(1.5)
            generator.stopping.set()
            await asyncio.wait_for(running, 30)
            assert len(recording.keys) > 1000
            repeated = [key for key, n in Counter(recording.keys).items() if n > 1]
            assert repeated == [], f"{len(repeated)} keys sent twice ({exact}): {repeated[:3]}"
    finally:
        await server.stop(None)


def test_rate_over_time_prints_a_durable_rate_a_step(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable, "-m", "benchmarks.rate_over_time",
            "--seconds", "4", "--step", "2", "--work-dir", str(tmp_path / "run"),
        ],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    lines = done.stdout.splitlines()
    rates = [int(line.split()[2].replace(",", "")) for line in lines if "durable" in line]
    assert len(rates) == 2, done.stdout
    assert min(rates) > 0, done.stdout
    assert lines[-1].startswith("first half "), done.stdout
    assert not list((tmp_path / "run").glob("*.db")), "the run's database is deleted"
