"""Commands carry the identity of the database that issued them (issue 9, item 1).

A controller database gets an origin when it is created; the manipulator's
journal identifies a command by (origin, id). Real processes on loopback: a
controller on a fresh database after another one, and a database restored
from a backup, refused until ``python -m controller.migrate --new-origin``.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from manipulator.journal import read_journal
from tests.databases import TestDatabase, sqlite_database
from tests.processes import ROOT, Service
from tests.test_faults import (
    cleanup,
    start_controller,
    start_manipulator,
    wait_all_acknowledged,
)

PERIOD = 1.0


def wait_journal(path: Path, lines: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Poll the journal until it holds at least ``lines`` records."""
    deadline = time.monotonic() + timeout
    while True:
        entries = read_journal(path) if path.exists() else []
        if len(entries) >= lines:
            return entries
        if time.monotonic() > deadline:
            raise AssertionError(f"the journal holds {len(entries)} lines, not {lines}: {entries}")
        time.sleep(0.2)


def origin_of(database: TestDatabase) -> str:
    rows = database.fetch("SELECT origin FROM database_origin")
    assert len(rows) == 1, rows
    return str(rows[0][0])


def recorded_ids(database: TestDatabase) -> list[int]:
    return [int(i) for (i,) in database.fetch("SELECT id FROM commands ORDER BY id")]


def unacknowledged_ids(database: TestDatabase) -> list[int]:
    rows = database.fetch("SELECT id FROM commands WHERE acknowledged_at IS NULL ORDER BY id")
    return [int(i) for (i,) in rows]


def wait_count(service: Service, pattern: str, count: int, timeout: float = 30.0) -> None:
    """Poll until ``count`` lines of ``service`` match ``pattern``."""
    deadline = time.monotonic() + timeout
    while len(re.findall(pattern, service.output())) < count:
        assert time.monotonic() < deadline, f"fewer than {count} {pattern!r}:\n{service.output()}"
        time.sleep(0.2)


def stop(service: Service) -> None:
    assert service.stop() == 0, service.output()


def test_a_controller_on_a_fresh_database_has_its_commands_journaled(
    tmp_path: Path, database: TestDatabase
) -> None:
    # The report: a controller on a.db until the journal holds a few commands,
    # then one on a fresh database (here b: SQLite, or PostgreSQL as when a
    # cell moves to it). Its ids start at 1 again.
    journal = tmp_path / "journal.jsonl"
    first_db = sqlite_database(tmp_path / "a")
    (tmp_path / "a").mkdir()
    services: list[Service] = []
    with cleanup(services):
        manipulator = start_manipulator(tmp_path)
        services.append(manipulator)
        assert manipulator.port is not None
        first = start_controller(first_db, manipulator.port, period=PERIOD)
        services.append(first)
        wait_journal(journal, 4)
        stop(first)
        before = read_journal(journal)

        second = start_controller(database, manipulator.port, period=PERIOD)
        services.append(second)
        assert second.port is not None
        entries = wait_all_acknowledged(second.port, at_least=3)
        stop(second)
        stop(manipulator)

    after = read_journal(journal)[len(before) :]
    listed = [e.command_id for e in entries]
    assert [e["command_id"] for e in after][: len(listed)] == listed
    assert [e["command_id"] for e in after] in (recorded_ids(database), recorded_ids(database)[:-1])
    assert "acknowledged again" not in manipulator.output()
    assert {e["origin"] for e in before} == {origin_of(first_db)}
    assert {e["origin"] for e in after} == {origin_of(database)}
    assert origin_of(database) != origin_of(first_db)
    assert (
        f"commands now come from origin {origin_of(database)} "
        f"(last journaled origin {origin_of(first_db)}): a new controller database"
    ) in manipulator.output()


def sqlite_backup(source: Path, target: Path) -> None:
    """What an operator's ``sqlite3 source ".backup target"`` does."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def test_a_restored_backup_is_refused_until_it_gets_a_new_origin(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    live = sqlite_database(tmp_path / "live")
    (tmp_path / "live").mkdir()
    restored = sqlite_database(tmp_path / "restored")
    (tmp_path / "restored").mkdir()
    services: list[Service] = []
    with cleanup(services):
        manipulator = start_manipulator(tmp_path)
        services.append(manipulator)
        assert manipulator.port is not None
        controller = start_controller(live, manipulator.port, period=PERIOD)
        services.append(controller)
        wait_journal(journal, 2)
        stop(controller)
        assert live.sqlite_path is not None
        assert restored.sqlite_path is not None
        sqlite_backup(live.sqlite_path, restored.sqlite_path)
        # The live database goes on for a while after the backup...
        controller = start_controller(live, manipulator.port, period=PERIOD)
        services.append(controller)
        wait_journal(journal, len(recorded_ids(restored)) + 4)
        stop(controller)
        before = read_journal(journal)

        # ... then is lost, and the backup is restored: same origin, and ids
        # the journal already holds for other commands.
        controller = start_controller(restored, manipulator.port, period=PERIOD)
        services.append(controller)
        refused = int(controller.wait_for_line(r"the manipulator refused command (\d+)").group(1))
        # It keeps trying, backing off (the command cannot be skipped), with
        # one error line; the manipulator refuses each attempt.
        wait_count(manipulator, rf"ERROR .*command {refused} .*refused", 2)
        stop(controller)
        assert read_journal(journal) == before
        refusals = [line for line in controller.output().splitlines() if "refused command" in line]
        assert len(refusals) == 1, controller.output()
        assert "ERROR" in refusals[0]
        assert "--new-origin" in refusals[0]
        # Everything before the refused command was the same command the
        # journal holds (acknowledged again); it and everything after wait.
        pending = unacknowledged_ids(restored)
        assert pending[0] == refused
        old_origin = origin_of(restored)

        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "controller.migrate",
                "--database",
                restored.url,
                "--new-origin",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        new_origin = origin_of(restored)
        assert new_origin != old_origin
        assert f"{old_origin} -> {new_origin}" in done.stderr

        controller = start_controller(restored, manipulator.port, period=PERIOD)
        services.append(controller)
        assert controller.port is not None
        wait_all_acknowledged(controller.port, at_least=len(recorded_ids(restored)) + 2)
        stop(controller)
        stop(manipulator)

    # The old origin's lines are untouched; the restored database's pending
    # commands and its new ones follow, in order, as the new origin's sequence.
    journal_now = read_journal(journal)
    assert journal_now[: len(before)] == before
    after = journal_now[len(before) :]
    assert {e["origin"] for e in after} == {new_origin}
    recorded = recorded_ids(restored)
    journaled = [e["command_id"] for e in after]
    assert journaled in (
        recorded[recorded.index(refused) :],
        recorded[recorded.index(refused) : -1],
    )
    assert f"commands now come from origin {new_origin}" in manipulator.output()
