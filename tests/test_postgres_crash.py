"""PostgreSQL crashing under the cell loses nothing acknowledged (issue 10, the tests' PostgreSQL).

The suite's shared PostgreSQL runs without fsync, for speed: stopped like a crash, it loses
commits it confirmed, which would hide (or fake) a durability defect of the controller. This
test starts a durable server of its own (fsync and synchronous commits on), stops it in
immediate mode while a sensor streams and commands are issued, and starts it again: every
reading the sensor had acknowledged is stored once, and every command the manipulator journaled
is in the database.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from manipulator.journal import read_journal
from tests.databases import PostgresServer, TestDatabase, running_postgres
from tests.processes import Service
from tests.test_faults import (
    assert_exactly_once,
    cleanup,
    report,
    start_controller,
    start_manipulator,
    start_sensor,
    wait_all_exit,
    wait_streaming,
)
from tests.test_stall import DECISION, wait_decisions

COUNT = 1600  # 8 s at the fault suite's 200 readings/s
DOWN = 2.0


@pytest.fixture(scope="module")
def durable_server() -> Iterator[PostgresServer]:
    with running_postgres(durable=True) as server:
        yield server


def test_a_crashed_postgres_loses_nothing_acknowledged(
    tmp_path: Path, durable_server: PostgresServer
) -> None:
    services: list[Service] = []
    with durable_server.fresh_database() as database, cleanup(services):
        manipulator = start_manipulator(tmp_path)
        assert manipulator.port is not None
        controller = start_controller(database, manipulator.port)
        services += [manipulator, controller]
        assert controller.port is not None
        sensor = start_sensor("crash-1", controller.port, count=COUNT)
        services.append(sensor)
        wait_streaming([sensor])
        wait_decisions(controller, 3)
        durable_server.crash()
        time.sleep(DOWN)
        durable_server.restart()
        wait_all_exit([sensor], timeout=90)
        decided = len(DECISION.findall(controller.output()))
        wait_decisions(controller, decided + 2)
        assert controller.stop() == 0, controller.output()
        assert manipulator.stop() == 0, manipulator.output()
        _check(database, tmp_path / "journal.jsonl", sensor)


def _check(database: TestDatabase, journal: Path, sensor: Service) -> None:
    try:
        assert_exactly_once(database, {"crash-1": COUNT})
    except AssertionError as exc:
        # What the sensor says became of its readings tells a loss from a drop.
        counters = [line for line in sensor.lines if "stopped:" in line or "dropped" in line]
        raise AssertionError(f"{exc}; the sensor said: {counters}") from exc
    ids = [int(i) for (i,) in database.fetch("SELECT id FROM commands ORDER BY id")]
    assert ids == list(range(1, len(ids) + 1))
    journaled = [int(r["command_id"]) for r in read_journal(journal)]
    # Every command journaled is in the database; the last one recorded may have been
    # decided as the controller stopped, before it was sent.
    assert journaled in (ids, ids[:-1]), (journaled, ids)
    report("PostgreSQL crash", down_s=DOWN, readings=COUNT, commands=len(ids))
