"""Alembic migrations: what they build, on both backends, and older databases."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from controller.decision.rule import WindowSummary
from controller.errors import DatabaseOpenError
from controller.records import CommandRecord
from controller.storage.database import Database
from controller.storage.migrate import alembic_config, head_revision, upgrade
from controller.storage.origin import Origin
from controller.storage.rows import command_values
from controller.storage.schema import metadata
from tests.databases import READINGS_WITH_RUNS, TestDatabase, sqlite_database

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
    database.execute("INSERT INTO sensor_runs (sensor_id, boot_id) VALUES ('s1', 'b1')")
    database.execute(
        "INSERT INTO readings (run_id, seq, payload, timestamp, received_at) "
        "SELECT id, 1, 7, 10, 11 FROM sensor_runs"
    )
    db = await Database.open(database.url)
    await db.close()
    assert database.fetch(f"SELECT sensor_id, seq, payload FROM {READINGS_WITH_RUNS}") == [
        ("s1", 1, 7)
    ]
    assert database.fetch("SELECT count(*) FROM alembic_version") == [(1,)]


async def database_at(database: TestDatabase, revision: str) -> None:
    """Bring ``database`` to an older ``revision``, as an older workcell left it."""
    engine = create_async_engine(database.url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(upgrade, revision)
    finally:
        await engine.dispose()


# Two sensor runs in the layout of revision 0001 (names in every row); the
# ids are out of run order on purpose.
OLD_READINGS = [
    (1, "sensor-a", "boot-1", 1, 10),
    (2, "sensor-b", "boot-9", 1, 20),
    (3, "sensor-a", "boot-1", 2, 11),
    (5, "sensor-a", "boot-2", 1, 12),
]


def insert_old_readings(database: TestDatabase) -> None:
    for id_, sensor_id, boot_id, seq, payload in OLD_READINGS:
        database.execute(
            "INSERT INTO readings (id, sensor_id, boot_id, seq, payload, timestamp, received_at) "
            "VALUES (:id, :sensor_id, :boot_id, :seq, :payload, :t, :t)",
            id=id_,
            sensor_id=sensor_id,
            boot_id=boot_id,
            seq=seq,
            payload=payload,
            t=1_000 * id_,
        )


def readings_with_names(database: TestDatabase) -> list[tuple[object, ...]]:
    """Readings in the shape of OLD_READINGS, from the current layout."""
    return database.fetch(
        f"SELECT readings.id, sensor_id, boot_id, seq, payload FROM {READINGS_WITH_RUNS} "
        "ORDER BY readings.id"
    )


async def test_upgrading_from_0001_keeps_every_reading_and_id(database: TestDatabase) -> None:
    await database_at(database, "0001")
    insert_old_readings(database)

    db = await Database.open(database.url)
    await db.close()

    assert readings_with_names(database) == OLD_READINGS
    # Runs are numbered in the order they first sent a reading.
    assert database.fetch("SELECT id, sensor_id, boot_id FROM sensor_runs ORDER BY id") == [
        (1, "sensor-a", "boot-1"),
        (2, "sensor-b", "boot-9"),
        (3, "sensor-a", "boot-2"),
    ]
    # New readings get ids after the copied ones (PostgreSQL's sequence moved on).
    database.execute(
        "INSERT INTO readings (run_id, seq, payload, timestamp, received_at) "
        "VALUES (1, 3, 13, 6000, 6000)"
    )
    assert database.fetch("SELECT MAX(id) FROM readings") == [(6,)]
    db = await Database.open(database.url)
    try:
        async with db.engine.connect() as conn:
            assert await conn.run_sync(_schema_differences) == []
    finally:
        await db.close()


async def test_downgrading_to_0001_puts_the_names_back(database: TestDatabase) -> None:
    await database_at(database, "0001")
    insert_old_readings(database)
    db = await Database.open(database.url)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(lambda sync: command.downgrade(alembic_config(sync), "0001"))
    finally:
        await db.close()
    assert (
        database.fetch("SELECT id, sensor_id, boot_id, seq, payload FROM readings ORDER BY id")
        == OLD_READINGS
    )


async def test_a_database_made_before_migrations_is_stamped_then_upgraded(
    tmp_path: Path,
) -> None:
    # Before migrations existed the controller made the tables of revision
    # 0001 with create_all: the same tables, no alembic_version.
    database = sqlite_database(tmp_path)
    await database_at(database, "0001")
    database.execute("DROP TABLE alembic_version")
    insert_old_readings(database)

    db = await Database.open(database.url)
    await db.close()

    assert readings_with_names(database) == OLD_READINGS
    assert database.fetch("SELECT version_num FROM alembic_version") == [(head_revision(),)]


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


def test_the_migration_time_script_runs() -> None:
    done = subprocess.run(
        [sys.executable, "scripts/migration_time.py", "--readings", "2000"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("2,000 readings: migrated 0001 -> head in ")


# -- revision 0004: the database's origin ---------------------------------------


COLUMNS_OF_0004 = (
    "id", "status", "window_start", "window_end", "issued_at", "acknowledged_at", "outcome",
    "changed", "p_value", "alpha", "window_count", "window_mean", "window_std",
    "previous_count", "previous_mean", "previous_std",
)  # fmt: skip


def insert_command(database: TestDatabase, command_id: int) -> None:
    record = CommandRecord(
        id=command_id,
        status="up",
        window_start=1_000,
        window_end=2_000,
        issued_at=2_500,
        outcome="too_few_readings",
        changed=False,
        p_value=None,
        alpha=0.05,
        window=WindowSummary(0, 0.0, 0.0),
        previous=WindowSummary(0, 0.0, 0.0),
    )
    # Only the columns of revision 0004: epoch (0005) and the decision's effect, policy,
    # streak and sums (0006) came later, and these databases are older.
    values = {k: v for k, v in command_values(record).items() if k in COLUMNS_OF_0004}
    database.execute(
        f"INSERT INTO commands ({', '.join(values)}) VALUES ({', '.join(':' + k for k in values)})",
        **values,
    )


async def test_a_new_database_gets_an_origin_of_its_own(
    database: TestDatabase, tmp_path: Path
) -> None:
    db = await Database.open(database.url)
    await db.close()
    rows = database.fetch("SELECT origin, created_at, first_command_id FROM database_origin")
    assert len(rows) == 1
    origin, created_at, first_command_id = rows[0]
    assert uuid.UUID(origin).version == 4
    assert created_at > 0
    assert first_command_id == 1
    assert db.origin == Origin(origin, created_at, 1)
    # Opening again keeps it; another database has another one.
    again = await Database.open(database.url)
    await again.close()
    assert again.origin == db.origin
    other = await Database.open(sqlite_database(tmp_path / "other").url)
    await other.close()
    assert other.origin.id != db.origin.id


async def test_upgrading_from_0002_keeps_the_earlier_commands_without_an_origin(
    database: TestDatabase,
) -> None:
    await database_at(database, "0002")
    for command_id in (1, 2, 3):
        insert_command(database, command_id)
    db = await Database.open(database.url)
    await db.close()
    assert db.origin.first_command_id == 4
    # Commands 1..3 were journaled without an origin: resends carry none.
    assert [db.origin.of_command(i) for i in (1, 3, 4, 9)] == ["", "", db.origin.id, db.origin.id]


async def test_a_new_origin_replaces_the_old_one_for_every_command(
    database: TestDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    await database_at(database, "0002")
    insert_command(database, 1)
    first = await Database.open(database.url)
    await first.close()
    caplog.set_level(logging.INFO, logger="controller")
    renewed = await Database.open(database.url, new_origin=True)
    await renewed.close()
    assert renewed.origin.id != first.origin.id
    assert renewed.origin.first_command_id == 1
    assert renewed.origin.of_command(1) == renewed.origin.id
    assert database.fetch("SELECT origin FROM database_origin") == [(renewed.origin.id,)]
    assert any(
        f"origin {first.origin.id} -> {renewed.origin.id}" in r.getMessage() for r in caplog.records
    )


async def test_a_database_without_its_origin_row_is_refused_until_given_one(
    database: TestDatabase,
) -> None:
    db = await Database.open(database.url)
    await db.close()
    database.execute("DELETE FROM database_origin")
    with pytest.raises(DatabaseOpenError, match="--new-origin"):
        await Database.open(database.url)
    renewed = await Database.open(database.url, new_origin=True)
    await renewed.close()
    assert database.fetch("SELECT origin FROM database_origin") == [(renewed.origin.id,)]
