"""``workcell report``: its data preparation, its drawing, and the command against a real cell."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import struct
import subprocess
import sys
import tracemalloc
from datetime import datetime
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from scipy import stats

from tests.builders import history_entry
from tests.controller_harness import make_reading, running_cell, stream
from tests.history_server import PERIOD_US as SCRIPTED_PERIOD_US
from tests.history_server import START_US, ScriptedHistory, serving, synthetic_entry
from workcell.cli import HistoryConfig, report_command
from workcell.cli import main as cli_main
from workcell.flags import address as address_flag
from workcell.report import DPI, FIGSIZE, save_report
from workcell.report_buckets import BucketGrid
from workcell.report_data import (
    P_FLOOR,
    ReportBuilder,
    acknowledgements,
    mean_bands,
    p_values,
    prepare_report,
    status_spans,
)
from workcell.timeconv import from_iso, from_timestamp, now_us, to_datetime
from workcell.v1 import command_pb2
from workcell.v1.history_pb2 import HistoryEntry, WindowSummary

from .processes import ROOT

START = from_iso("2025-03-01T12:00:00Z")
PERIOD_US = 5_000_000
UP = command_pb2.STATUS_UP
DOWN = command_pb2.STATUS_DOWN


def entry(
    k: int,
    *,
    n: int = 1500,
    mean: float = 100.0,
    std: float = 10.0,
    status: int = UP,
    p_value: float | None = 0.5,
    acked: bool = True,
) -> HistoryEntry:
    """The command deciding window k after START (windows of PERIOD_US)."""
    return history_entry(
        k + 1,
        window_start=START + k * PERIOD_US,
        period_us=PERIOD_US,
        status=status,
        window=WindowSummary(count=n, mean=mean, std_dev=std),
        p_value=p_value,
        acked=acked,
    )


def at(us: int) -> datetime:
    return to_datetime(us)


# ---------------------------------------------------------------- data preparation


def test_band_is_the_95_percent_t_interval() -> None:
    entries = [entry(0, n=2, mean=10.0, std=3.0), entry(1, n=30, mean=12.5, std=4.0)]
    (band,) = mean_bands(entries)
    for i, (n, mean, std) in enumerate([(2, 10.0, 3.0), (30, 12.5, 4.0)]):
        low, high = stats.t.interval(0.95, n - 1, loc=mean, scale=std / math.sqrt(n))
        assert band.low[i] == pytest.approx(low, rel=1e-12)
        assert band.high[i] == pytest.approx(high, rel=1e-12)
        assert band.mean[i] == mean
        assert band.count[i] == n
    # at the window's midpoint
    assert band.times[0] == at(START + PERIOD_US // 2)
    # n = 2 has one degree of freedom: t ≈ 12.706
    assert band.high[0] - 10.0 == pytest.approx(12.706 * 3.0 / math.sqrt(2), rel=1e-4)


def test_band_confidence_is_a_parameter() -> None:
    (band,) = mean_bands([entry(0, n=10, mean=0.0, std=1.0)], confidence=0.99)
    assert band.high[0] == pytest.approx(stats.t.ppf(0.995, 9) / math.sqrt(10))


def test_windows_with_fewer_than_two_readings_are_skipped_and_split_the_band() -> None:
    entries = [entry(0), entry(1, n=1), entry(2), entry(3), entry(4, n=0), entry(6)]
    bands = mean_bands(entries)
    assert [len(b.times) for b in bands] == [1, 2, 1]
    assert bands[1].times[0] == at(START + 2 * PERIOD_US + PERIOD_US // 2)


def test_zero_std_gives_a_zero_width_band() -> None:
    (band,) = mean_bands([entry(0, n=5, mean=7.0, std=0.0)])
    assert band.low[0] == band.high[0] == 7.0


def test_status_spans_run_from_each_decision_to_the_next_and_merge() -> None:
    entries = [
        entry(0, status=DOWN),
        entry(1, status=DOWN),
        entry(2, status=UP),
        entry(3, status=UP),
        entry(6, status=UP),  # after a gap: the controller was not deciding
    ]
    spans = status_spans(entries)
    assert [(s.status, s.start, s.end) for s in spans] == [
        ("down", at(START + 1 * PERIOD_US), at(START + 3 * PERIOD_US)),
        ("up", at(START + 3 * PERIOD_US), at(START + 5 * PERIOD_US)),
        ("up", at(START + 7 * PERIOD_US), at(START + 8 * PERIOD_US)),
    ]


def test_p_values_at_the_decision_and_untested_apart() -> None:
    entries = [entry(0, p_value=None), entry(1, p_value=0.2), entry(2, p_value=0.0)]
    pv = p_values(entries)
    assert pv.times == (at(START + 2 * PERIOD_US), at(START + 3 * PERIOD_US))
    assert list(pv.p) == [0.2, 0.0]
    # 0 cannot go on a log axis: drawn at the floor and flagged
    assert list(pv.shown) == [0.2, P_FLOOR]
    assert list(pv.clipped) == [False, True]
    assert pv.untested == (at(START + PERIOD_US),)


def test_acknowledged_at_their_ack_pending_at_their_issue() -> None:
    acks = acknowledgements([entry(0), entry(1, acked=False, status=DOWN), entry(2, status=DOWN)])
    assert acks.acknowledged == (
        at(START + PERIOD_US + 510_000),
        at(START + 3 * PERIOD_US + 510_000),
    )
    assert acks.acknowledged_status == ("up", "down")
    assert acks.pending == (at(START + 2 * PERIOD_US + 500_000),)
    assert acks.pending_status == ("down",)


def test_report_range_and_count() -> None:
    entries = [entry(k) for k in range(4)]
    data = prepare_report(entries)
    assert data.commands == 4
    assert (data.start, data.end) == (at(START), at(START + 4 * PERIOD_US))
    asked = prepare_report(entries, from_us=START - 60_000_000, to_us=START + 3_600_000_000)
    assert (asked.start, asked.end) == (at(START - 60_000_000), at(START + 3_600_000_000))
    with pytest.raises(ValueError, match="no commands"):
        prepare_report([])


def test_bucket_grid_merges_neighbours_in_pairs_as_it_widens() -> None:
    grid = BucketGrid(origin_us=100, width_us=10, size=4)
    grid.add_field("n", "sum", dtype=np.int64)
    grid.add_field("low", "min")
    grid.add_field("high", "max")
    grid.add_field("first", "first", count="n")
    times = np.array([100, 115, 125, 139], dtype=np.int64)
    index = grid.index(times)
    assert list(index) == [0, 1, 2, 3]
    np.add.at(grid["n"], index, 1)
    grid["low"][index] = [1.0, 2.0, 3.0, 4.0]
    grid["high"][index] = [1.0, 2.0, 3.0, 4.0]
    grid["first"][[1, 3]] = [7.0, 9.0]  # what the first non-empty bucket of a pair says
    grid["n"][0] = 0
    grid.fit(140)  # one past the last bucket: the width doubles once
    assert grid.width_us == 20
    assert list(grid["n"]) == [1, 2, 0, 0]
    assert list(grid["low"]) == [1.0, 3.0, np.inf, np.inf]
    assert list(grid["high"]) == [2.0, 4.0, -np.inf, -np.inf]
    assert list(grid["first"])[:2] == [7.0, 0.0]
    grid.fit(100 + 20 * 4 * 4 - 1)  # up to sixteen times the first width
    assert grid.width_us == 80
    assert list(grid["n"]) == [3, 0, 0, 0]
    # a time before the origin goes to the first bucket
    assert list(grid.index(np.array([0, 100, 99_999], dtype=np.int64))) == [0, 0, 3]


# ---------------------------------------------------------------- drawing


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR, after checking the signature."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert header[12:16] == b"IHDR"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def test_every_kind_of_point_draws(tmp_path: Path) -> None:
    entries = [
        entry(0, n=1, p_value=None, status=DOWN),
        entry(1, n=0, p_value=None, status=DOWN),
        entry(2, mean=100.0, p_value=0.4, status=DOWN),
        entry(3, mean=140.0, p_value=0.0, status=UP),
        entry(4, mean=141.0, p_value=0.3, status=UP, acked=False),
        entry(5, mean=90.0, p_value=1e-40, status=DOWN, acked=False),
    ]
    path = tmp_path / "r.png"
    save_report(prepare_report(entries, alpha=0.05), path)
    assert png_size(path) == (FIGSIZE[0] * DPI, FIGSIZE[1] * DPI)
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (FIGSIZE[1] * DPI, FIGSIZE[0] * DPI)
    assert np.ptp(pixels[..., :3]) > 0.5  # something was drawn


def test_nothing_testable_still_draws(tmp_path: Path) -> None:
    path = tmp_path / "r.png"
    save_report(prepare_report([entry(0, n=1, p_value=None)], alpha=0.01), path)
    png_size(path)


# ---------------------------------------------------------------- the command


def workcell(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workcell.cli", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


def test_bad_iso_exits_2_naming_the_flag() -> None:
    result = workcell("report", "--to", "soon", "-o", "x.png")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "--to" in result.stderr


def test_server_down_exits_1_with_the_grpc_status(tmp_path: Path) -> None:
    result = workcell("report", "--controller", "127.0.0.1:1", "-o", str(tmp_path / "x.png"))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "UNAVAILABLE" in result.stderr
    assert not (tmp_path / "x.png").exists()


async def test_report_from_a_real_controller(tmp_path: Path) -> None:
    period = 0.25
    async with running_cell(tmp_path, period=period, grace=0.05) as cell:
        address = f"127.0.0.1:{cell.controller.port}"
        rng = np.random.default_rng(7)
        seq = 0
        # A level shift up, then back down: the t-test sees both, so both
        # statuses appear (the controller starts "down").
        for level in (100, 100, 160, 160, 100, 100):
            window_start = (now_us() // int(period * 1e6)) * int(period * 1e6)
            readings = []
            for offset in np.linspace(0, period * 1e6, 40, endpoint=False):
                seq += 1
                payload = int(level + rng.normal(0, 5))
                readings.append(make_reading(seq, payload, window_start + int(offset)))
            await stream(cell, readings, batch=40)
            # into the next window, past its grace
            next_decided = window_start + int(period * 1e6) + 60_000
            await asyncio.sleep(max(0, next_decided - now_us()) / 1e6)
        await asyncio.sleep(period * 2)
        history = await cell.query(page_size=1000)
        statuses = {e.status for e in history.entries}
        assert statuses == {UP, DOWN}, history

        empty = await _run(
            "report", "--controller", address, "--from", "2031-01-01T00:00:00Z",
            "-o", str(tmp_path / "empty.png"),
        )  # fmt: skip
        result = await _run(
            "report", "--controller", address, "--alpha", "0.01", "-o", "tmp/report.png",
            cwd=tmp_path,
        )  # fmt: skip

    assert empty.returncode == 1
    assert empty.stderr.strip() == "workcell report: no commands in that time range"
    assert not (tmp_path / "empty.png").exists()

    assert result.returncode == 0, result.stderr
    assert "wrote tmp/report.png" in result.stdout
    path = tmp_path / "tmp" / "report.png"
    assert png_size(path) == (FIGSIZE[0] * DPI, FIGSIZE[1] * DPI)
    assert 10_000 < path.stat().st_size < 500_000


async def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """The command as a child process, without blocking the controller's event loop."""
    return await asyncio.to_thread(workcell, *args, cwd=cwd)


# ---------------------------------------------------------------- bounded memory


def held(value: object) -> int:
    """How many items ``value`` holds in its sequences and arrays, however deeply nested."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(held(getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, np.ndarray):
        return int(value.size)
    if isinstance(value, tuple | list):
        return len(value) + sum(held(item) for item in value)
    return 0


def test_report_data_is_bounded_whatever_the_number_of_commands() -> None:
    """A year of commands is drawn from a bounded summary, not from one point per command.

    The entries come from a generator: nothing needs them all at once.
    """
    small = prepare_report(synthetic_entry(i) for i in range(10_000))
    large = prepare_report(synthetic_entry(i) for i in range(100_000))
    assert (small.commands, large.commands) == (10_000, 100_000)
    # at most about 33 numbers per bucket, 2,048 buckets; 1.1 million before
    assert held(large) < 70_000
    assert held(large) < 2 * held(small)
    # the picture still covers the whole range
    assert large.start == at(START_US)
    assert large.end == at(START_US + 100_000 * SCRIPTED_PERIOD_US)


def test_report_memory_does_not_grow_with_the_history(tmp_path: Path) -> None:
    """The whole command (paging, aggregating, drawing) against a real History server."""

    def peak_bytes(total: int) -> int:
        servicer = ScriptedHistory(total)
        with serving(servicer) as address:
            config = HistoryConfig(
                controller=address_flag(address),
                from_us=START_US,
                to_us=START_US + 10**9 * SCRIPTED_PERIOD_US,
                page_size=1000,
            )
            tracemalloc.start()
            try:
                code = report_command(config, alpha=0.05, output=tmp_path / f"{total}.png")
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        assert code == 0
        assert len(servicer.requests) == -(-total // 1000)
        return peak

    peak_bytes(500)  # matplotlib's one-time caches (fonts, …) out of the way
    small, large = peak_bytes(1_000), peak_bytes(10_000)
    # 9,000 more commands: 126 MB more before (about 14 KB each), now the same few MB
    assert large - small < 8 * 2**20, (small, large)


def test_a_long_range_is_summarized_with_exact_counts() -> None:
    """Several windows per bucket: means averaged, intervals enveloped, statuses shared."""
    statuses = [UP, UP, DOWN, UP] * 4
    p_cycle = [0.5, 0.01, 0.0, None]
    entries = [
        entry(k, mean=float(k), std=0.0, status=s, p_value=p_cycle[k % 4])
        for k, s in enumerate(statuses)
    ]
    # 16 windows and the last status span reach 17 periods: a grid of 4 buckets
    # doubles from 1 period to 8 to hold them.
    data = prepare_report(entries, max_buckets=4, alpha=0.05)
    assert data.commands == 16
    assert data.summarized
    assert (data.window_us, data.bucket_us) == (PERIOD_US, 8 * PERIOD_US)
    (band,) = data.bands
    assert list(band.mean) == [3.5, 11.5]
    assert list(band.low) == [0.0, 8.0]
    assert list(band.high) == [7.0, 15.0]
    assert list(band.count) == [8 * 1500, 8 * 1500]
    assert band.times == (at(START + 4 * PERIOD_US), at(START + 12 * PERIOD_US))
    # status in force from a window's end for one period: [P, 8P) holds 5 up of 7
    assert [(s.status, s.up_share) for s in data.spans[:2]] == [("mixed", 5 / 7), ("mixed", 0.75)]
    assert data.spans[2].status == "up"
    assert data.spans[2].end == at(START + 17 * PERIOD_US)
    pv = data.p_values
    # the legend's counts are exact
    assert (pv.not_significant, pv.significant, pv.below_floor, pv.untested_count) == (4, 4, 4, 4)
    assert list(pv.p) == [0.0, 0.0]
    assert list(pv.p_high) == [0.5, 0.5]
    assert list(pv.decisions) == [6, 6]
    assert len(pv.untested) == 3
    acks = data.acknowledgements
    assert (acks.acknowledged_count, sum(acks.acknowledged_commands)) == (16, 16)


def test_pages_fold_in_the_same_however_they_are_cut() -> None:
    """A band (and a status span) continues across a page boundary."""
    entries = [entry(k, mean=100.0 + k, status=UP if k < 5 else DOWN) for k in range(10)]
    whole = ReportBuilder()
    whole.add(entries)
    one_by_one = ReportBuilder()
    for e in entries:
        one_by_one.add([e])
    a, b = whole.result(), one_by_one.result()
    assert [band.times for band in a.bands] == [band.times for band in b.bands]
    assert len(b.bands) == 1
    assert a.spans == b.spans
    assert [s.status for s in b.spans] == ["up", "down"]


# ---------------------------------------------------------------- the default range


def requested_range(*args: str, tmp_path: Path) -> tuple[int | None, int | None]:
    """The [from, to) the report asked the History server for, in µs (None: unset)."""
    servicer = ScriptedHistory(10)
    with serving(servicer) as address:
        code = cli_main(["report", "--controller", address, "-o", str(tmp_path / "r.png"), *args])
    assert code == 0
    request = servicer.requests[0]
    return (
        from_timestamp(request.from_datetime) if request.HasField("from_datetime") else None,
        from_timestamp(request.to_datetime) if request.HasField("to_datetime") else None,
    )


def test_report_reads_the_last_24_hours_by_default(tmp_path: Path) -> None:
    before = now_us()
    start, end = requested_range(tmp_path=tmp_path)
    day = 86_400_000_000
    assert end is None
    assert start is not None
    assert before - day <= start <= now_us() - day


def test_last_and_to_set_the_range(tmp_path: Path) -> None:
    to = "2025-03-02T00:00:00Z"
    assert requested_range("--to", to, "--last", "90m", tmp_path=tmp_path) == (
        from_iso(to) - 90 * 60_000_000,
        from_iso(to),
    )
    # --from draws from there, without a default length
    assert requested_range("--from", "2025-03-01T00:00:00Z", tmp_path=tmp_path) == (
        from_iso("2025-03-01T00:00:00Z"),
        None,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--from", "2025-03-01T00:00:00Z", "--last", "1h"],
        ["--last", "0"],
        ["--last", "1e300"],
        ["--last", "soon"],
    ],
)
def test_bad_range_flags_exit_2_with_one_line(args: list[str]) -> None:
    result = workcell("report", *args, "-o", "x.png")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "--last" in result.stderr
