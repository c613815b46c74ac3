"""The controller's Prometheus endpoint, scraped over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import math
import socket
import sqlite3
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest

from controller.config import parse_config
from controller.decision.windows import window_bounds, window_index
from tests.controller_harness import make_reading, running_cell, stream
from tests.processes import running, sqlite_url, start_controller, start_manipulator
from tests.scrape import scrape, scrape_until
from workcell.flags import Address
from workcell.timeconv import US_PER_SECOND, from_timestamp, now_us
from workcell.v1 import history_pb2, history_pb2_grpc

P = "workcell_controller_"
LOOPBACK_ANY_PORT = Address("127.0.0.1", 0)


async def test_the_endpoint_counts_readings_decisions_and_commands(tmp_path: Path) -> None:
    period_us = US_PER_SECOND
    async with running_cell(tmp_path, period=1.0, metrics_listen=LOOPBACK_ANY_PORT) as cell:
        port = cell.controller.metrics_port
        assert port > 0
        # A level shift between the current window and the next: one
        # significant decision with a known p-value.
        index = window_index(now_us(), period_us) + 1
        start_low = window_bounds(index - 1, period_us)[0]
        start_high = window_bounds(index, period_us)[0]
        readings = [make_reading(i + 1, 100 + i % 7, start_low + i) for i in range(40)]
        readings += [make_reading(100 + i, 130 + i % 5, start_high + i) for i in range(40)]
        first = await stream(cell, readings, batch=10)
        resend = await stream(cell, readings[:30], batch=7)
        assert (first.stored, resend.duplicates) == (80, 30)
        bad = make_reading(501, 1, start_high + 100, sensor_id="bad id!")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stream(cell, [make_reading(500, 1, start_high + 99), bad])
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        significant = f'{P}decisions_total{{outcome="significant"}}'
        samples = await scrape_until(
            port,
            lambda s: (
                s[significant] == 1
                and s[f"{P}commands_acknowledged_total"] == s[f"{P}commands_sent_total"]
                and s[f"{P}commands_pending"] == 0
            ),
        )
        history = list((await cell.query(page_size=1000)).entries)

    assert samples[f"{P}readings_received_total"] == 80 + 30 + 1
    assert samples[f"{P}readings_stored_total"] == 81
    assert samples[f"{P}readings_duplicate_total"] == 30
    assert samples[f"{P}readings_stale_total"] == first.stale
    assert samples[f"{P}readings_invalid_total"] == 1
    assert samples[f"{P}open_streams"] == 0
    # Every reading handed to the writer was in exactly one committed group.
    assert samples[f"{P}commit_batch_size_sum"] == 111
    commits = samples[f"{P}commit_batch_size_count"]
    assert commits >= 3
    assert samples[f"{P}commit_latency_seconds_count"] == commits
    assert samples[f'{P}commit_latency_seconds_bucket{{le="+Inf"}}'] == commits
    assert samples[f"{P}commit_latency_seconds_sum"] > 0

    decided = sum(v for k, v in samples.items() if k.startswith(f"{P}decisions_total{{"))
    assert decided == samples[f"{P}commands_sent_total"] >= 2
    assert samples[f'{P}decisions_total{{outcome="too_few_readings"}}'] >= 1
    assert samples[f'{P}decisions_total{{outcome="no_variance"}}'] == 0
    assert samples[f"{P}commands_acknowledged_total"] == decided
    assert samples[f"{P}manipulator_link_up"] == 1
    assert samples[f"{P}manipulator_reconnects_total"] == 0
    # The last p-value is the significant decision's while it is the latest
    # (ids count decisions on a fresh database); later empty windows run no test.
    shift = next(e for e in history if from_timestamp(e.from_datetime) == start_high)
    if shift.command_id == decided:
        assert samples[f"{P}last_p_value"] == pytest.approx(shift.p_value, rel=1e-9)
    else:
        assert math.isnan(samples[f"{P}last_p_value"])
    # Stopping the controller closes its endpoint.
    with pytest.raises(urllib.error.URLError):
        await scrape(port)


async def test_a_lost_manipulator_shows_as_link_down_and_a_reconnect(tmp_path: Path) -> None:
    async with running_cell(tmp_path, metrics_listen=LOOPBACK_ANY_PORT) as cell:
        port = cell.controller.metrics_port
        await scrape_until(port, lambda s: s[f"{P}manipulator_link_up"] == 1)
        assert cell.manipulator is not None
        await cell.manipulator.close()
        samples = await scrape_until(
            port,
            lambda s: (
                s[f"{P}manipulator_link_up"] == 0 and s[f"{P}manipulator_reconnects_total"] == 1
            ),
        )
        # Nothing acknowledges now: issued commands stay pending.
        samples = await scrape_until(port, lambda s: s[f"{P}commands_pending"] >= 1)
        assert samples[f"{P}commands_pending"] == (
            samples[f"{P}commands_sent_total"] - samples[f"{P}commands_acknowledged_total"]
        )


async def test_each_controller_in_a_process_has_its_own_metrics(tmp_path: Path) -> None:
    async with (
        running_cell(tmp_path / "a", metrics_listen=LOOPBACK_ANY_PORT) as busy,
        running_cell(tmp_path / "b", metrics_listen=LOOPBACK_ANY_PORT) as idle,
    ):
        response = await stream(busy, [make_reading(i, i, now_us()) for i in range(1, 11)])
        assert response.stored == 10
        assert (await scrape(busy.controller.metrics_port))[f"{P}readings_stored_total"] == 10
        assert (await scrape(idle.controller.metrics_port))[f"{P}readings_stored_total"] == 0


async def test_no_endpoint_unless_asked(tmp_path: Path) -> None:
    async with running_cell(tmp_path) as cell:
        assert cell.controller.metrics_port == 0
        await stream(cell, [make_reading(1, 1, now_us())])
        # Still counted, just not served.
        value = cell.controller.metrics.registry.get_sample_value(f"{P}readings_stored_total")
        assert value == 1


def test_the_flag_and_its_variable() -> None:
    assert parse_config([], environ={}).metrics_listen is None
    assert parse_config(["--metrics-listen", "0.0.0.0:9100"], environ={}).metrics_listen == (
        Address("0.0.0.0", 9100)
    )
    env = {"WORKCELL_METRICS_LISTEN": "127.0.0.1:0"}
    assert parse_config([], environ=env).metrics_listen == Address("127.0.0.1", 0)
    assert parse_config([], environ={"WORKCELL_METRICS_LISTEN": ""}).metrics_listen is None


def test_a_bad_address_exits_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_config([], environ={"WORKCELL_METRICS_LISTEN": "nowhere"})
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "--metrics-listen" in err
    assert "WORKCELL_METRICS_LISTEN" in err
    assert len(err.splitlines()) == 1


def test_the_process_logs_its_metrics_port_and_serves_it(tmp_path: Path) -> None:
    controller = start_controller(sqlite_url(tmp_path / "w.db"), "--metrics-listen=127.0.0.1:0")
    with running(controller):
        match = controller.wait_for_line(r"metrics on 127\.0\.0\.1:(\d+)")
        port = int(match.group(1))
        assert port > 0
        samples = asyncio.run(scrape(port))
        assert samples[f"{P}readings_stored_total"] == 0
        assert samples[f"{P}manipulator_link_up"] == 0  # nothing listens on port 1
        assert math.isnan(samples[f"{P}last_p_value"])
        assert controller.stop() == 0


def test_a_metrics_port_in_use_fails_the_start_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        controller = start_controller(
            sqlite_url(tmp_path / "w.db"),
            f"--metrics-listen=127.0.0.1:{port}",
            wait_listening=False,
        )
        with running(controller):
            assert controller.wait() == 1
    assert f"cannot serve metrics on 127.0.0.1:{port}" in controller.output()
    assert "listening on" not in controller.output()


async def test_the_process_exports_what_the_alert_rules_read(tmp_path: Path) -> None:
    """The series deploy/prometheus/alerts.yml reads: the time of the last decision, the
    period, and whether the database takes writes (with a count of failed commits)."""
    database = tmp_path / "w.db"
    manipulator = start_manipulator(tmp_path / "journal.jsonl")
    with running(manipulator):
        started = time.time()
        controller = start_controller(
            sqlite_url(database),
            "--metrics-listen=127.0.0.1:0",
            "--period=1",
            "--grace=0.1",
            "--busy-timeout=0.2",
            manipulator_port=manipulator.port or 0,
        )
        with running(controller):
            port = int(controller.wait_for_line(r"metrics on 127\.0\.0\.1:(\d+)").group(1))
            first = await scrape(port)
            assert first[f"{P}period_seconds"] == 1.0
            assert first[f"{P}database_writable"] == 1
            assert first[f"{P}commit_failures_total"] == 0
            # Before the first decision it holds the start, so the age an alert
            # computes from it counts from there, not from 1970.
            assert started <= first[f"{P}last_decision_timestamp_seconds"] <= time.time()

            decided = await scrape_until(port, lambda s: s[f"{P}commands_sent_total"] >= 2)
            last_id = int(decided[f"{P}commands_sent_total"])  # a fresh database: ids count
            async with grpc.aio.insecure_channel(f"127.0.0.1:{controller.port}") as channel:
                history = history_pb2_grpc.HistoryStub(channel)
                reply = await history.Query(history_pb2.QueryRequest(page_size=1000))
            [entry] = [e for e in reply.entries if e.command_id == last_id]
            assert decided[f"{P}last_decision_timestamp_seconds"] == pytest.approx(
                from_timestamp(entry.issued_at) / US_PER_SECOND, abs=1e-6
            )

            # Another client holds the write lock: the next window's close fails.
            blocker = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
            try:
                await asyncio.to_thread(blocker.execute, "BEGIN EXCLUSIVE")
                refusing = await scrape_until(port, lambda s: s[f"{P}database_writable"] == 0)
                assert refusing[f"{P}commit_failures_total"] >= 1
                await asyncio.to_thread(blocker.execute, "ROLLBACK")
            finally:
                blocker.close()
            back = await scrape_until(
                port,
                lambda s: (
                    s[f"{P}database_writable"] == 1
                    and s[f"{P}commands_sent_total"] > decided[f"{P}commands_sent_total"]
                ),
            )
            assert (
                back[f"{P}last_decision_timestamp_seconds"]
                > (decided[f"{P}last_decision_timestamp_seconds"])
            )
            assert controller.stop() == 0, controller.output()
        assert manipulator.stop() == 0, manipulator.output()
