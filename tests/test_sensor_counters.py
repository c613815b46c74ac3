"""The sensor's counters against what the controller's database holds (issue 10, item 7).

A real sensor process streams to a real controller process, which is stopped
long enough for the sensor's small ``--buffer`` to overflow, then started
again on the same port and database. The sensor's ``stopped:`` line must add
up (created = acked + rejected + dropped + undelivered) and agree with the
readings stored: every acknowledged reading stored, every dropped one missing.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from tests import processes
from tests.databases import sqlite_database
from tests.processes import Service
from tests.test_faults import boot_id_of, cleanup, runs_by_sensor, start_controller

STOPPED = re.compile(
    r"stopped: created=(?P<created>\d+) sent=(?P<sent>\d+) acked=(?P<acked>\d+) "
    r"dropped=(?P<dropped>\d+) undelivered=(?P<undelivered>\d+) rejected=(?P<rejected>\d+)"
)
NO_MANIPULATOR = 1  # nothing listens there: the controller keeps retrying its link


def test_counters_add_up_against_the_database_through_an_outage(tmp_path: Path) -> None:
    database = sqlite_database(tmp_path)
    services: list[Service] = []
    with cleanup(services):
        controller = start_controller(database, NO_MANIPULATOR)
        services.append(controller)
        port = controller.port
        assert port is not None
        # Streams of 0.5 s at 500/s hold about 250 readings in flight, more than
        # the buffer: in-flight readings are evicted all the time, and stored.
        sensor = processes.start_sensor(
            port,
            "--rate", "500",
            "--count", "3000",
            "--buffer", "50",
            "--stream-seconds", "0.5",
            "--profile", "uniform",
            "--log-level", "DEBUG",
            sensor_id="counted",
            name="sensor",
        )  # fmt: skip
        services.append(sensor)
        boot = boot_id_of(sensor)
        sensor.wait_for_line(r"stream \d+ acknowledged", 60)
        time.sleep(1.0)
        # A graceful stop answers the open streams: every stored reading is
        # acknowledged, so "dropped" can be checked exactly against the database.
        assert controller.stop() == 0, controller.output()
        time.sleep(1.5)  # ~750 readings made meanwhile, for a buffer of 50
        controller = start_controller(database, NO_MANIPULATOR, port=port)
        services.append(controller)
        assert sensor.wait(60) == 0, sensor.output()
        assert controller.stop() == 0, controller.output()

    final = STOPPED.search(sensor.output())
    assert final is not None, sensor.output()
    created, sent, acked, dropped, undelivered, rejected = (
        int(final[k]) for k in ("created", "sent", "acked", "dropped", "undelivered", "rejected")
    )
    ((run_boot, stored, distinct, _, _),) = runs_by_sensor(database)["counted"]
    assert run_boot == boot
    assert stored == distinct  # once each
    assert created == 3000
    assert (undelivered, rejected) == (0, 0)
    assert created == acked + dropped
    # Before: in-flight readings the buffer evicted were counted dropped when
    # their stream was then acknowledged (1,743 dropped of 1,744 stored with --buffer 1).
    assert acked == stored
    assert dropped == created - stored
    assert dropped > 0, sensor.output()  # the outage did overflow the buffer
    assert acked <= sent <= created
    print(f"\nCOUNTERS created={created} sent={sent} acked={acked} dropped={dropped}", end="")
    print(f" stored={stored}")
