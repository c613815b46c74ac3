"""End to end: real processes on loopback, the real grpcurl, an independent audit.

Runs on SQLite and on PostgreSQL (the ``database`` fixture); the audit reads
the stored readings back with plain SQL, the same on both.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from manipulator.journal import read_journal
from tests.databases import READINGS_WITH_RUNS, TestDatabase
from tests.processes import (
    ROOT,
    Service,
    running,
    start_controller,
    start_manipulator,
    start_sensor,
)
from workcell.timeconv import US_PER_SECOND, from_iso

PERIOD = 1.0
SENSORS = 3
COUNT = 600
RATE = 200


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("grpcurl") or str(Path(ROOT, ".venv", "bin", "grpcurl"))
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=30, check=False)


def query(port: int, body: dict[str, object]) -> dict[str, object]:
    result = grpcurl(
        "-plaintext", "-d", json.dumps(body), f"127.0.0.1:{port}", "workcell.v1.History/Query"
    )
    assert result.returncode == 0, result.stderr
    reply: dict[str, object] = json.loads(result.stdout)
    return reply


def all_entries(port: int) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = []
    token = ""
    while True:
        reply = query(port, {"pageSize": 50, "pageToken": token})
        entries.extend(reply.get("entries", []))  # type: ignore[arg-type]
        token = str(reply.get("nextPageToken", ""))
        if not token:
            return entries


@pytest.fixture
def cell(tmp_path: Path, database: TestDatabase) -> tuple[Service, Service, Path]:
    manipulator = start_manipulator(tmp_path / "journal.jsonl")
    assert manipulator.port is not None
    controller = start_controller(
        database.url, "--period", str(PERIOD), "--grace", "0.6", manipulator_port=manipulator.port
    )
    return manipulator, controller, tmp_path


def test_a_cell_of_real_processes_stores_everything_and_decides_auditably(
    cell: tuple[Service, Service, Path], database: TestDatabase
) -> None:
    manipulator, controller, tmp_path = cell
    port = controller.port
    assert port is not None
    sensors = [_start_sensor(i, port) for i in range(SENSORS)]
    with running(manipulator, controller, *sensors):
        for sensor in sensors:
            assert sensor.wait(60) == 0, sensor.output()
        # Let the windows holding the last readings be decided and acknowledged.
        controller.wait_for_line(r"decision: command \d+", 10)
        last_reading_window_end = _last_window_end(database)
        _wait_until_decided(controller.port, last_reading_window_end)  # type: ignore[arg-type]

        listed = grpcurl("-plaintext", f"127.0.0.1:{port}", "list")
        assert listed.returncode == 0, listed.stderr
        services = set(listed.stdout.split())
        assert {
            "workcell.v1.Telemetry",
            "workcell.v1.History",
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        } <= services
        bad = grpcurl(
            "-plaintext", "-d", '{"pageSize": -1}',
            f"127.0.0.1:{port}", "workcell.v1.History/Query",
        )  # fmt: skip
        assert bad.returncode != 0
        assert "InvalidArgument" in bad.stderr
        assert "page_size" in bad.stderr
        # Decisions go on every period: read History when the newest is acknowledged too.
        for _ in range(20):
            entries = all_entries(port)
            if all("acknowledgedAt" in e for e in entries):
                break
            time.sleep(0.1)

        assert controller.stop() == 0, controller.output()
        assert manipulator.stop() == 0, manipulator.output()

    per_run = database.fetch(
        "SELECT sensor_id, COUNT(*), COUNT(DISTINCT seq), MIN(seq), MAX(seq) "
        f"FROM {READINGS_WITH_RUNS} GROUP BY sensor_id, boot_id"
    )
    readings = [
        (int(timestamp), int(payload))
        for timestamp, payload in database.fetch("SELECT timestamp, payload FROM readings")
    ]
    # Every reading sent is stored exactly once: no gap, no duplicate.
    assert sorted(per_run) == [(f"e2e-{i}", COUNT, COUNT, 1, COUNT) for i in range(SENSORS)]

    # The journal and History list the same commands in the same order, all acknowledged.
    # History was read just before the stop: the journal may hold a decision made after it,
    # and holds every command recorded but one decided as the controller stopped.
    journal = read_journal(tmp_path / "journal.jsonl")
    ids = [int(str(e["commandId"])) for e in entries]
    assert ids == list(range(1, len(ids) + 1))
    journaled = [r["command_id"] for r in journal]
    assert journaled[: len(ids)] == ids
    recorded = [int(i) for (i,) in database.fetch("SELECT id FROM commands ORDER BY id")]
    assert journaled in (recorded, recorded[:-1]), (journaled, recorded)
    assert all("acknowledgedAt" in e for e in entries)
    assert [r["status"] for r in journal[: len(ids)]] == [
        "up" if e["status"] == "STATUS_UP" else "down" for e in entries
    ]

    _audit(entries, readings)
    assert any(e["status"] == "STATUS_UP" for e in entries), "the step never turned the status up"


def _start_sensor(number: int, controller_port: int) -> Service:
    flags = ["--count", str(COUNT), "--rate", str(RATE), "--seed", str(number)]
    # A level shift 1.5 s in: some window is significantly higher than the one before.
    flags += ["--profile", "step", "--step-at", "+1.5"]
    return start_sensor(controller_port, *flags, sensor_id=f"e2e-{number}", name=f"sensor-{number}")


def _audit(entries: list[dict[str, object]], readings: list[tuple[int, int]]) -> None:
    """Recompute every decision from the stored readings (no reading was stale)."""
    period_us = int(PERIOD * US_PER_SECOND)
    windows: dict[int, list[int]] = defaultdict(list)
    for timestamp, payload in readings:
        windows[timestamp // period_us].append(payload)
    status = "down"
    previous: list[int] = []
    for entry in entries:
        index = from_iso(str(entry["fromDatetime"])) // period_us
        current = windows.get(index, [])
        window = entry.get("window", {})
        assert isinstance(window, dict)
        assert int(window.get("count", 0)) == len(current)
        if len(current) >= 2 and len(previous) >= 2 and (np.var(current) or np.var(previous)):
            p = stats.ttest_ind(current, previous, equal_var=False).pvalue
            assert float(str(entry["pValue"])) == pytest.approx(p, rel=1e-6)
            if p < 0.05:
                status = "up" if np.mean(current) > np.mean(previous) else "down"
        else:
            assert "pValue" not in entry
        assert entry["status"] == f"STATUS_{status.upper()}"
        previous = current


def _last_window_end(database: TestDatabase) -> int:
    ((latest,),) = database.fetch("SELECT MAX(timestamp) FROM readings")
    period_us = int(PERIOD * US_PER_SECOND)
    return (int(latest) // period_us + 1) * period_us


def _wait_until_decided(port: int, window_end_us: int) -> None:
    import time

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        entries = all_entries(port)
        done = [e for e in entries if from_iso(str(e["toDatetime"])) >= window_end_us]
        if done and all("acknowledgedAt" in e for e in entries):
            return
        time.sleep(0.3)
    raise AssertionError(f"window ending {window_end_us} not decided and acknowledged in time")
