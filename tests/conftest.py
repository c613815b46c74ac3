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

# Files whose tests assert timing bounds (a decision's cadence, a takeover's or a restart's
# delay, a sensor's rate), or load both cores on their own. ``make pytest`` runs every
# other test on parallel workers first (pytest-xdist), then these one at a time, so no other
# test's load moves their clocks.
SERIAL_FILES = frozenset(
    {
        "test_nodes.py",
        "test_postgres_crash.py",
        "test_restart_grace.py",
        "test_sensor_failover.py",
        "test_stall.py",
        "test_stream_limits.py",
        "test_watch.py",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests of ``SERIAL_FILES`` ``serial``."""
    for item in items:
        if item.path.name in SERIAL_FILES:
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
