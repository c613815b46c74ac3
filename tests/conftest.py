"""Fixtures shared by the test files: the database each storage test runs against."""

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
