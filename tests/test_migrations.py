"""Alembic migrations: what they build, on both backends, and older databases."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection

from controller.errors import DatabaseOpenError
from controller.migrate import head_revision
from controller.schema import metadata
from controller.store import Database
from tests.databases import TestDatabase

ROOT = Path(__file__).resolve().parents[1]


def _schema_differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


async def test_migrations_build_exactly_the_schema_the_code_queries(
    database: TestDatabase,
) -> None:
    db = await Database.open(database.url)
    try:
        async with db.engine.connect() as conn:
            differences = await conn.run_sync(_schema_differences)
    finally:
        await db.close()
    assert differences == []
    assert database.fetch("SELECT version_num FROM alembic_version") == [(head_revision(),)]


async def test_opening_twice_migrates_once_and_keeps_the_data(database: TestDatabase) -> None:
    db = await Database.open(database.url)
    await db.close()
    database.execute(
        "INSERT INTO readings (sensor_id, boot_id, seq, payload, timestamp, received_at) "
        "VALUES ('s1', 'b1', 1, 7, 10, 11)"
    )
    db = await Database.open(database.url)
    await db.close()
    assert database.fetch("SELECT sensor_id, seq, payload FROM readings") == [("s1", 1, 7)]
    assert database.fetch("SELECT count(*) FROM alembic_version") == [(1,)]


async def test_a_database_made_before_migrations_is_stamped_not_rebuilt(tmp_path: Path) -> None:
    # Before migrations existed the controller made its tables with create_all.
    path = tmp_path / "old.db"
    engine = create_engine(f"sqlite:///{path}")
    metadata.create_all(engine)
    engine.dispose()
    with sqlite3.connect(path) as old:
        old.execute(
            "INSERT INTO readings (sensor_id, boot_id, seq, payload, timestamp, received_at) "
            "VALUES ('s1', 'b1', 1, 7, 10, 11)"
        )
    db = await Database.open(f"sqlite+aiosqlite:///{path}")
    await db.close()
    with sqlite3.connect(path) as upgraded:
        assert upgraded.execute("SELECT payload FROM readings").fetchall() == [(7,)]
        assert upgraded.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (head_revision(),)
        ]


async def test_a_database_from_a_newer_workcell_is_refused(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'w.db'}"
    db = await Database.open(url)
    await db.close()
    with sqlite3.connect(tmp_path / "w.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(DatabaseOpenError, match="revision 9999, which this version"):
        await Database.open(url)


def test_migrate_command_upgrades_and_prints_the_revision(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "w.db"
    done = subprocess.run(
        [sys.executable, "-m", "controller.migrate", "--database", f"sqlite:///{path}"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == head_revision()
    with sqlite3.connect(path) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    assert {"readings", "commands", "alembic_version"} <= tables


def test_migrate_command_rejects_a_bad_url() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "controller.migrate", "--database", "mysql://h/db"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 2
    assert "unsupported database 'mysql'" in done.stderr


def test_an_unreachable_database_exits_1_with_one_line_and_no_password() -> None:
    done = subprocess.run(
        [
            sys.executable, "-m", "controller",
            "--listen", "127.0.0.1:0",
            # Nothing listens on port 1: the connection is refused at once.
            "--database", "postgresql://workcell:s3cret@127.0.0.1:1/workcell",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )  # fmt: skip
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("python -m controller: error: cannot open the database")
    assert "Connection refused" in last
    assert "s3cret" not in done.stderr
