"""Fixtures shared by the test files: the database each storage test runs against; and
which test files run alone (``serial``), after the rest ran in parallel (``make pytest``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.databases import (
    BACKENDS,
    PostgresServer,
    TestDatabase,
    running_postgres,
    sqlite_database,
)

# Files (or single tests, ``file::name``) that assert timing bounds (a decision's cadence,
# a takeover's or a restart's delay, a sensor's rate, statuses from sub-second windows), or
# load both cores on their own, or failed once when other tests loaded the machine.
# ``make pytest`` runs every other test on parallel workers first (pytest-xdist), then
# these one at a time, so no other test's load moves their clocks.
SERIAL = frozenset(
    {
        "test_nodes.py",
        "test_postgres_crash.py",
        "test_restart_grace.py",
        "test_sensor_failover.py",
        "test_stall.py",
        "test_stream_limits.py",
        "test_watch.py",
        "test_watermarks_e2e.py",
        "test_cli.py::test_run_for_a_while_then_stop_by_itself",
        "test_controller.py::test_a_level_shift_turns_the_status_up_with_the_right_p_value",
        "test_logs.py::test_workcell_run_with_json_logs_still_shows_the_cell",
        "test_replay_e2e.py::test_a_guarded_replay_of_the_drift_step_profile_flaps_less_and_catches_the_step",
        "test_report.py::test_report_from_a_real_controller",
        "test_sensor_delivery.py::test_readings_evicted_while_in_flight_count_as_acknowledged",
        "test_tls.py::test_with_json_logs_a_refused_client_shows_no_raw_core_line_and_hears_why",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests of ``SERIAL`` ``serial``."""
    for item in items:
        name = item.name.split("[", 1)[0]
        if item.path.name in SERIAL or f"{item.path.name}::{name}" in SERIAL:
            item.add_marker(pytest.mark.serial)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the session; skipped when not installed (not in CI)."""
    with running_postgres() as server:
        yield server


@pytest.fixture(params=BACKENDS, ids=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestDatabase]:
    """A fresh, empty database: the test runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield sqlite_database(tmp_path)
        return
    # Looked up only here, so runs of the SQLite half alone never start a server.
    server: PostgresServer = request.getfixturevalue("postgres_server")
    with server.fresh_database() as fresh:
        yield fresh
