"""Faults injected for real (issue 3): kills, restarts, outages, cut connections, SIGTERM.

Every test runs the real services as child processes on 127.0.0.1 and audits
what they left behind: the database with plain SQL (every reading a sensor
generated is stored exactly once), the manipulator's journal with
:func:`~manipulator.journal.read_journal`, and History over gRPC. The tests
with a controller run twice, on SQLite and on PostgreSQL (the ``database``
fixture). Numbers are small (periods of 0.5-1 s, a few thousand readings) so
the file runs in a few minutes on two cores; waits have generous bounds and
nothing asserts on speed.

Each test prints one ``FAULT ...`` line with what it did and what it found
(shown with ``pytest -s``), the figures behind docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from manipulator.journal import Journal, parse_command, read_journal
from tests import processes
from tests.chaos_proxy import ChaosProxy
from tests.databases import READINGS_WITH_RUNS, TestDatabase, sqlite_database
from tests.processes import Service, running
from workcell.framing import FrameDecoder, encode_frame
from workcell.timeconv import from_timestamp, now_us, to_timestamp
from workcell.v1 import command_pb2, history_pb2, history_pb2_grpc

RATE = 200
PERIOD = 0.5
STOPPED_LINE = (
    r"sensor (?P<id>\S+): stopped: created=(?P<created>\d+) sent=(?P<sent>\d+) "
    r"acked=(?P<acked>\d+) dropped=(?P<dropped>\d+) undelivered=(?P<undelivered>\d+)"
)
ACK_LINE = r"stream \d+ acknowledged: \d+ readings \(stored=\d+ duplicates=(\d+)"


# -- services -----------------------------------------------------------------


# The fault suite's settings on top of the one toolkit (tests/processes.py).


def start_manipulator(tmp_path: Path, port: int = 0) -> Service:
    return processes.start_manipulator(tmp_path / "journal.jsonl", port=port)


def start_controller(
    database: TestDatabase,
    manipulator_port: int,
    *,
    port: int = 0,
    period: float = PERIOD,
    grace: float = 0.3,
    shutdown_grace: float = 3.0,
) -> Service:
    timing = [
        "--period",
        str(period),
        "--grace",
        str(grace),
        "--shutdown-grace",
        str(shutdown_grace),
    ]
    return processes.start_controller(
        database.url, *timing, manipulator_port=manipulator_port, port=port
    )


def start_sensor(
    sensor_id: str, controller_port: int, *extra: str, count: int | None = None
) -> Service:
    # DEBUG shows each stream's response, so resends stored as duplicates can be counted.
    flags = ["--rate", str(RATE), "--profile", "uniform", "--log-level", "DEBUG"]
    if count is not None:
        flags += ["--count", str(count)]
    return processes.start_sensor(controller_port, *flags, *extra, sensor_id=sensor_id)


def boot_id_of(sensor: Service) -> str:
    return sensor.wait_for_line(r"boot_id=(\w+)").group(1)


def wait_streaming(sensors: list[Service]) -> None:
    """Block until every sensor has had a stream acknowledged (they start slowly on 2 cores)."""
    for sensor in sensors:
        sensor.wait_for_line(r"stream \d+ acknowledged", 60)


def wait_all_exit(sensors: list[Service], timeout: float = 60) -> None:
    """Every sensor exits 0 within ``timeout`` seconds in all (their output shown if not)."""
    deadline = time.monotonic() + timeout
    for sensor in sensors:
        code = sensor.wait(max(1.0, deadline - time.monotonic()))
        assert code == 0, f"{sensor.name} exited {code}:\n{sensor.output()}"


def recoveries(sensor: Service) -> int:
    """How many failure episodes ``sensor`` has come out of so far."""
    return sensor.output().count(" again after ")


def wait_recovered(sensors: list[Service], before: dict[str, int], timeout: float = 60) -> None:
    """Block until each running sensor has recovered once more than ``before`` says."""
    deadline = time.monotonic() + timeout
    for sensor in sensors:
        while sensor.process.poll() is None and recoveries(sensor) <= before[sensor.name]:
            assert time.monotonic() < deadline, f"{sensor.name} did not recover:\n{sensor.output()}"
            time.sleep(0.1)


def duplicates_reported(sensors: list[Service]) -> int:
    """Readings the controller answered as already stored (resends), summed over ``sensors``."""
    return sum(int(m.group(1)) for s in sensors for m in re.finditer(ACK_LINE, s.output()))


@contextlib.contextmanager
def cleanup(services: list[Service]) -> Iterator[None]:
    """Kill whatever is left of ``services`` (a list that may grow) on exit."""
    try:
        yield
    finally:
        with running(*services):
            pass


def report(fault: str, **figures: object) -> None:
    print(f"\nFAULT {fault}: " + " ".join(f"{k}={v}" for k, v in figures.items()))


# -- audits -------------------------------------------------------------------


def runs_by_sensor(database: TestDatabase) -> dict[str, list[tuple[str, int, int, int, int]]]:
    """Per sensor: (boot_id, COUNT, COUNT DISTINCT seq, MIN seq, MAX seq) for each run."""
    rows = database.fetch(
        "SELECT sensor_id, boot_id, COUNT(*), COUNT(DISTINCT seq), MIN(seq), MAX(seq) "
        f"FROM {READINGS_WITH_RUNS} GROUP BY sensor_id, boot_id "
        "ORDER BY sensor_id, MIN(readings.id)"
    )
    runs: dict[str, list[tuple[str, int, int, int, int]]] = {}
    for sensor_id, boot_id, *figures in rows:
        count, distinct, lowest, highest = (int(f) for f in figures)
        runs.setdefault(str(sensor_id), []).append((str(boot_id), count, distinct, lowest, highest))
    return runs


def assert_exactly_once(database: TestDatabase, expected: dict[str, int]) -> int:
    """Each sensor of ``expected`` has one run holding seq 1..N exactly once; the total."""
    runs = runs_by_sensor(database)
    assert set(runs) == set(expected)
    for sensor_id, count in expected.items():
        assert len(runs[sensor_id]) == 1, runs[sensor_id]
        _, stored, distinct, lowest, highest = runs[sensor_id][0]
        assert (stored, distinct, lowest, highest) == (count, count, 1, count), sensor_id
    return sum(expected.values())


def history_entries(port: int) -> list[history_pb2.HistoryEntry]:
    """Every command History lists, oldest first."""
    entries: list[history_pb2.HistoryEntry] = []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = history_pb2_grpc.HistoryStub(channel)
        token = ""
        while True:
            reply = stub.Query(
                history_pb2.QueryRequest(page_size=500, page_token=token), timeout=10
            )
            entries.extend(reply.entries)
            token = reply.next_page_token
            if not token:
                return entries


def wait_all_acknowledged(
    port: int, *, at_least: int, timeout: float = 30.0
) -> list[history_pb2.HistoryEntry]:
    """Poll History until it lists ``at_least`` commands and every one is acknowledged."""
    deadline = time.monotonic() + timeout
    while True:
        entries = history_entries(port)
        if len(entries) >= at_least and all(e.HasField("acknowledged_at") for e in entries):
            return entries
        if time.monotonic() > deadline:
            pending = [e.command_id for e in entries if not e.HasField("acknowledged_at")]
            raise AssertionError(f"{len(entries)} commands, unacknowledged: {pending}")
        time.sleep(0.3)


def assert_journal_matches(
    journal: Path, entries: list[history_pb2.HistoryEntry], database: TestDatabase
) -> list[int]:
    """The journal holds every command recorded, each once, in id order, every line complete.

    Checked after the controller stopped. ``entries`` (History, all acknowledged) was read
    a moment before the stop, and a decision may have come in between: the journal starts
    with them and then holds every later command, except one decided as the controller
    stopped, before it was sent (the next start would resend it).
    """
    data = journal.read_bytes()
    assert data.endswith(b"\n")
    ids = [int(r["command_id"]) for r in read_journal(journal)]
    assert ids == list(range(1, len(ids) + 1))
    listed = [e.command_id for e in entries]
    assert ids[: len(listed)] == listed
    recorded = [int(i) for (i,) in database.fetch("SELECT id FROM commands ORDER BY id")]
    assert ids in (recorded, recorded[:-1]), (ids, recorded)
    return ids


# -- 1. controller killed -----------------------------------------------------


def test_controller_sigkilled_three_times_loses_and_doubles_nothing(
    tmp_path: Path, database: TestDatabase
) -> None:
    sensors_n, count = 6, 1600
    rng = random.Random(20240501)
    services: list[Service] = []
    with cleanup(services):
        manipulator = start_manipulator(tmp_path)
        controller = start_controller(database, manipulator.port, period=1.0)  # type: ignore[arg-type]
        services += [manipulator, controller]
        port = controller.port
        assert port is not None
        sensors = [start_sensor(f"kill-{i}", port, count=count) for i in range(sensors_n)]
        services += sensors
        wait_streaming(sensors)
        kills = 0
        for _ in range(3):
            # A random moment while every sensor is streaming to this controller.
            time.sleep(rng.uniform(0.2, 1.5))
            before = {s.name: recoveries(s) for s in sensors}
            controller.signal(signal.SIGKILL)
            assert controller.wait(10) == -signal.SIGKILL
            kills += 1
            time.sleep(rng.uniform(0.1, 0.8))
            # Same port and database: the sensors reconnect to it and resend.
            controller = start_controller(database, manipulator.port, port=port, period=1.0)  # type: ignore[arg-type]
            services.append(controller)
            assert controller.port == port
            wait_recovered(sensors, before)
        wait_all_exit(sensors, 75)
        entries = wait_all_acknowledged(port, at_least=1)
        assert controller.stop() == 0, controller.output()
        assert manipulator.stop() == 0, manipulator.output()

    stored = assert_exactly_once(database, {s.name: count for s in sensors})
    # Across the kills no command id was reused and each reached the journal once.
    commands = assert_journal_matches(tmp_path / "journal.jsonl", entries, database)
    report(
        "1 controller SIGKILL",
        sensors=sensors_n,
        kills=kills,
        commands=len(commands),
        generated=sensors_n * count,
        stored=stored,
        duplicates_in_db=0,
        resends_answered_as_duplicates=duplicates_reported(sensors),
    )


# -- 3. manipulator down ------------------------------------------------------


def test_manipulator_down_for_periods_then_every_command_is_journaled_once_in_order(
    tmp_path: Path,
    database: TestDatabase,
) -> None:
    services: list[Service] = []
    outages: list[tuple[int, int]] = []  # (down, back) in µs since the epoch
    with cleanup(services):
        manipulator = start_manipulator(tmp_path)
        mport = manipulator.port
        assert mport is not None
        controller = start_controller(database, mport)
        services += [manipulator, controller]
        assert controller.port is not None
        sensors = [start_sensor(f"down-{i}", controller.port, count=1600) for i in range(2)]
        services += sensors
        controller.wait_for_line(r"command 2 acknowledged")
        # Two outages of several periods each: one graceful stop, one kill.
        for how, seconds in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 1.6)):
            manipulator.signal(how)
            manipulator.wait(15)
            down = now_us()
            time.sleep(seconds)
            back = now_us()
            manipulator = start_manipulator(tmp_path, mport)
            services.append(manipulator)
            outages.append((down, back))
            controller.wait_for_line(r"connected to the manipulator .*\([1-9]\d* pending\)")
        wait_all_exit(sensors)
        entries = wait_all_acknowledged(controller.port, at_least=1)
        assert controller.stop() == 0, controller.output()
        assert manipulator.stop() == 0, manipulator.output()

    ids = assert_journal_matches(tmp_path / "journal.jsonl", entries, database)
    issued_in_outage = 0
    for down, back in outages:
        during = [e for e in entries if down <= from_timestamp(e.issued_at) < back]
        # The controller kept deciding: about one command per period while the manipulator was away.
        assert len(during) >= 2, [(e.command_id, from_timestamp(e.issued_at)) for e in entries]
        for entry in during:
            acknowledged = from_timestamp(entry.acknowledged_at)
            assert acknowledged > from_timestamp(entry.issued_at)
            assert acknowledged >= back  # only the manipulator that came back could ack it
        issued_in_outage += len(during)
    for entry in entries:
        assert from_timestamp(entry.acknowledged_at) >= from_timestamp(entry.issued_at)
    report(
        "3 manipulator down",
        outages=len(outages),
        seconds_down="2.0+1.6",
        commands=len(ids),
        issued_while_down=issued_in_outage,
        journaled_once_in_order=len(ids),
        acknowledged=sum(e.HasField("acknowledged_at") for e in entries),
    )


# -- 4. manipulator killed between journal write and ack ----------------------


async def test_command_journaled_but_not_acknowledged_is_resent_and_not_journaled_twice(
    tmp_path: Path,
    database: TestDatabase,
) -> None:
    journal_path = tmp_path / "journal.jsonl"
    journaled: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    journal = Journal(journal_path)

    async def journal_then_vanish(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # What the real manipulator does up to the ack, then a crash: the
        # line is durable, the ack never leaves.
        decoder = FrameDecoder()
        payloads: list[bytes] = []
        while not payloads and (data := await reader.read(65536)):
            payloads = decoder.feed(data)
        if journaled.done() or not payloads:
            writer.transport.abort()
            return
        record = parse_command(payloads[0], received_at=now_us())
        command_pb2.Command.FromString(payloads[0])  # a real Command, as the controller sent it
        assert journal.append(record)
        fake.close()
        writer.transport.abort()
        journaled.set_result(record.command_id)

    fake = await asyncio.start_server(journal_then_vanish, "127.0.0.1", 0)
    mport = int(fake.sockets[0].getsockname()[1])
    services: list[Service] = []
    with cleanup(services):
        controller = await asyncio.to_thread(start_controller, database, mport)
        services.append(controller)
        command_id = await asyncio.wait_for(journaled, 30)
        await fake.wait_closed()
        journal.close()  # releases the journal's lock for the real manipulator
        manipulator = await asyncio.to_thread(start_manipulator, tmp_path, mport)
        services.append(manipulator)
        await asyncio.to_thread(
            manipulator.wait_for_line,
            rf"command {command_id}: duplicate \(already journaled\), acknowledged again",
        )
        await asyncio.to_thread(controller.wait_for_line, rf"command {command_id} acknowledged")
        # A few more commands go through the same link afterwards.
        await asyncio.to_thread(controller.wait_for_line, rf"command {command_id + 2} acknowledged")
        assert controller.port is not None
        entries = await asyncio.to_thread(wait_all_acknowledged, controller.port, at_least=3)
        assert await asyncio.to_thread(controller.stop) == 0, controller.output()
        assert await asyncio.to_thread(manipulator.stop) == 0, manipulator.output()

    ids = assert_journal_matches(journal_path, entries, database)
    assert ids.count(command_id) == 1
    resent = next(e for e in entries if e.command_id == command_id)
    assert from_timestamp(resent.acknowledged_at) > from_timestamp(resent.issued_at)
    report(
        "4 killed between journal and ack",
        command=command_id,
        times_journaled=ids.count(command_id),
        duplicate_acks=manipulator.output().count("duplicate (already journaled)"),
        commands=len(ids),
        acknowledged=sum(e.HasField("acknowledged_at") for e in entries),
    )


# -- 5. sensor killed and restarted -------------------------------------------


def test_sensor_killed_and_restarted_gets_a_new_boot_and_the_cell_keeps_deciding(
    tmp_path: Path,
    database: TestDatabase,
) -> None:
    steady_count, second_count = 1800, 300
    services: list[Service] = []
    with cleanup(services):
        manipulator = start_manipulator(tmp_path)
        controller = start_controller(database, manipulator.port)  # type: ignore[arg-type]
        services += [manipulator, controller]
        port = controller.port
        assert port is not None
        steady = [start_sensor(f"steady-{i}", port, count=steady_count) for i in range(2)]
        victim = start_sensor("victim", port, count=100_000)
        services += [*steady, victim]
        first_boot = boot_id_of(victim)
        wait_streaming([*steady, victim])
        time.sleep(1.0)
        victim.signal(signal.SIGKILL)
        assert victim.wait(10) == -signal.SIGKILL
        killed = now_us()
        time.sleep(2.5)
        restarted = now_us()
        again = start_sensor("victim", port, count=second_count)
        services.append(again)
        second_boot = boot_id_of(again)
        wait_all_exit([*steady, again])
        entries = wait_all_acknowledged(port, at_least=1)
        assert controller.stop() == 0, controller.output()
        assert manipulator.stop() == 0, manipulator.output()

    assert first_boot != second_boot
    runs = runs_by_sensor(database)
    assert set(runs) == {"steady-0", "steady-1", "victim"}
    for name in ("steady-0", "steady-1"):
        assert [r[1:] for r in runs[name]] == [(steady_count,) * 2 + (1, steady_count)]
    # Two runs of "victim", each with its own seq range from 1: no collision.
    (boot1, n1, distinct1, low1, high1), (boot2, *second) = runs["victim"]
    assert (boot1, boot2) == (first_boot, second_boot)
    assert n1 > 0
    assert (distinct1, low1, high1) == (n1, 1, n1)
    assert second == [second_count, second_count, 1, second_count]
    # While the victim was down the controller decided on the two others.
    gap = [
        e
        for e in entries
        if killed <= from_timestamp(e.from_datetime) and from_timestamp(e.to_datetime) <= restarted
    ]
    assert len(gap) >= 2, [(e.command_id, e.window.count) for e in entries]
    assert all(e.window.count > 0 for e in gap)
    report(
        "5 sensor SIGKILL + restart",
        first_run_stored=n1,
        second_run_stored=second[0],
        boot_ids=len(runs["victim"]),
        windows_decided_while_down=len(gap),
        readings_in_those_windows=sum(e.window.count for e in gap),
    )


# -- 6. connection cut between sensor and controller -------------------------


async def test_connections_dropped_and_stalled_by_a_proxy_lose_and_double_nothing(
    tmp_path: Path,
    database: TestDatabase,
) -> None:
    sensors_n, count = 4, 1400
    services: list[Service] = []
    with cleanup(services):
        manipulator = await asyncio.to_thread(start_manipulator, tmp_path)
        controller = await asyncio.to_thread(start_controller, database, manipulator.port)  # type: ignore[arg-type]
        services += [manipulator, controller]
        assert controller.port is not None
        async with ChaosProxy(controller.port) as proxy:
            sensors = [start_sensor(f"cut-{i}", proxy.port, count=count) for i in range(sensors_n)]
            services += sensors
            await asyncio.to_thread(wait_streaming, sensors)
            cuts: list[int] = []
            for pause in (1.0, 0.7):
                cuts.append(proxy.drop_all())
                await asyncio.sleep(pause)
            await proxy.stall_for(2.0)
            await asyncio.sleep(0.5)
            cuts.append(proxy.drop_all())
            try:
                await asyncio.to_thread(wait_all_exit, sensors)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\ncontroller:\n{controller.output()}") from None
            accepted = proxy.accepted
        assert await asyncio.to_thread(controller.stop) == 0, controller.output()
        assert await asyncio.to_thread(manipulator.stop) == 0, manipulator.output()

    assert all(cut > 0 for cut in cuts), cuts
    stored = assert_exactly_once(database, {s.name: count for s in sensors})
    report(
        "6 connections cut/stalled",
        sensors=sensors_n,
        drops=len(cuts),
        connections_cut=sum(cuts),
        stall_seconds=2.0,
        connections_accepted=accepted,
        generated=sensors_n * count,
        stored=stored,
        duplicates_in_db=0,
        resends_answered_as_duplicates=duplicates_reported(sensors),
    )


async def test_chaos_proxy_forwards_stalls_and_drops() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    async with server, ChaosProxy(int(server.sockets[0].getsockname()[1])) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"one")
        assert await asyncio.wait_for(reader.read(3), 5) == b"one"
        proxy.stall()
        writer.write(b"two")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(
                asyncio.shield(read := asyncio.ensure_future(reader.read(3))), 0.3
            )
        proxy.resume()
        assert await asyncio.wait_for(read, 5) == b"two"
        assert proxy.drop_all() == 1
        with contextlib.suppress(ConnectionError):
            assert await asyncio.wait_for(reader.read(3), 5) == b""
        writer.close()
        assert (proxy.accepted, proxy.dropped) == (1, 1)


# -- 9. graceful stop ----------------------------------------------------------


def test_controller_sigterm_under_load_exits_0_and_keeps_every_acknowledged_reading(
    tmp_path: Path,
    database: TestDatabase,
) -> None:
    sensors_n, count = 4, 1400
    services: list[Service] = []
    with cleanup(services):
        manipulator = start_manipulator(tmp_path)
        # A generous grace: the streams open at SIGTERM must be answered, not cut.
        controller = start_controller(database, manipulator.port, shutdown_grace=15)  # type: ignore[arg-type]
        services += [manipulator, controller]
        port = controller.port
        assert port is not None
        sensors = [start_sensor(f"term-{i}", port, count=count) for i in range(sensors_n)]
        services += sensors
        wait_streaming(sensors)
        time.sleep(1.0)
        assert controller.stop(20) == 0, controller.output()
        stored_before = int(controller.wait_for_line(r"stopped: (\d+) readings stored").group(1))
        streaming_at_stop = sum(sensor.process.poll() is None for sensor in sensors)
        controller = start_controller(database, manipulator.port, port=port)  # type: ignore[arg-type]
        services.append(controller)
        wait_all_exit(sensors)
        assert controller.stop() == 0, controller.output()
        assert manipulator.stop() == 0, manipulator.output()

    stored = assert_exactly_once(database, {s.name: count for s in sensors})
    # Every stream open at SIGTERM was answered: nothing stored went unacknowledged,
    # so nothing had to be resent and come back as a duplicate.
    assert duplicates_reported(sensors) == 0
    report(
        "9 controller SIGTERM",
        sensors=sensors_n,
        sensors_streaming_at_stop=streaming_at_stop,
        stored_before_stop=stored_before,
        generated=sensors_n * count,
        stored=stored,
        duplicates_in_db=0,
        resends_answered_as_duplicates=duplicates_reported(sensors),
    )


def test_sensor_sigterm_with_duration_exits_0_and_says_what_was_delivered(
    tmp_path: Path, database: TestDatabase
) -> None:
    services: list[Service] = []
    with cleanup(services):
        manipulator = start_manipulator(tmp_path)
        controller = start_controller(database, manipulator.port)  # type: ignore[arg-type]
        services += [manipulator, controller]
        assert controller.port is not None
        sensor = start_sensor("duration", controller.port, "--duration", "30")
        services.append(sensor)
        boot = boot_id_of(sensor)
        wait_streaming([sensor])
        time.sleep(1.0)
        assert sensor.stop(30) == 0, sensor.output()
        assert controller.stop() == 0, controller.output()
        assert manipulator.stop() == 0, manipulator.output()

    final = re.search(STOPPED_LINE, sensor.output().splitlines()[-1])
    assert final is not None, sensor.output()
    created, sent, acked, dropped, undelivered = (
        int(final[k]) for k in ("created", "sent", "acked", "dropped", "undelivered")
    )
    assert final["id"] == "duration"
    assert created < RATE * 30  # it stopped when told, not at the end of --duration
    assert created == acked + undelivered + dropped
    (run,) = runs_by_sensor(database)["duration"]
    assert run[0] == boot
    # What the sensor counts as acknowledged is stored, once each, from seq 1.
    assert acked <= run[1] <= sent
    assert run[1:] == (run[1], run[1], 1, run[1])
    report(
        "9 sensor SIGTERM",
        created=created,
        sent=sent,
        acked=acked,
        undelivered=undelivered,
        stored=run[1],
    )


async def test_manipulator_sigterm_under_load_exits_0_and_leaves_no_partial_line(
    tmp_path: Path,
) -> None:
    journal_path = tmp_path / "journal.jsonl"
    acked: list[int] = []
    busy = asyncio.Event()
    services: list[Service] = []
    with cleanup(services):
        manipulator = await asyncio.to_thread(start_manipulator, tmp_path)
        services.append(manipulator)
        reader, writer = await asyncio.open_connection("127.0.0.1", manipulator.port)

        async def send_commands() -> None:
            # As fast as the socket takes them: the manipulator is always mid-command.
            start = now_us()
            for command_id in range(1, 100_000):
                command = command_pb2.Command(
                    id=command_id,
                    status=command_pb2.STATUS_UP if command_id % 2 else command_pb2.STATUS_DOWN,
                    window_start=to_timestamp(start),
                    window_end=to_timestamp(start + 500_000),
                    issued_at=to_timestamp(start + 600_000),
                )
                writer.write(encode_frame(command))
                await writer.drain()

        async def read_acks() -> None:
            decoder = FrameDecoder()
            while data := await reader.read(65536):
                acked.extend(
                    command_pb2.CommandAck.FromString(p).command_id for p in decoder.feed(data)
                )
                if len(acked) >= 200:
                    busy.set()  # well into the stream of commands: time to stop it

        sending = asyncio.create_task(send_commands())
        reading = asyncio.create_task(read_acks())
        await asyncio.wait_for(busy.wait(), 30)
        manipulator.signal(signal.SIGTERM)
        assert await asyncio.to_thread(manipulator.wait, 30) == 0, manipulator.output()
        with contextlib.suppress(ConnectionError):
            await asyncio.wait_for(reading, 10)
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sending
        writer.transport.abort()

    data = journal_path.read_bytes()
    assert data.endswith(b"\n")
    lines = data.split(b"\n")[:-1]
    records = [json.loads(line) for line in lines]  # every line is complete JSON
    ids = [r["command_id"] for r in records]
    assert ids == list(range(1, len(ids) + 1))
    assert read_journal(journal_path) == records
    # Every ack the client got is for a journaled command.
    assert acked == list(range(1, len(acked) + 1))
    assert len(acked) <= len(ids)
    assert "stopped" in manipulator.output()
    report(
        "9 manipulator SIGTERM",
        commands_acked_before_stop=len(acked),
        journal_lines=len(ids),
        partial_lines=0,
    )


# -- 10. the database deleted under the controller -------------------------------


def health_of(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        return int(reply.status)


def test_sqlite_folder_deleted_while_running_stops_acknowledging(tmp_path: Path) -> None:
    # SQLite only: a PostgreSQL database has no file to take away. What the
    # issue found: health stayed SERVING, nothing was logged, the sensor had
    # everything acknowledged, and after a restart the database held nothing.
    folder = tmp_path / "data"
    database = sqlite_database(folder)
    services: list[Service] = []
    with cleanup(services):
        manipulator = start_manipulator(tmp_path)
        controller = start_controller(database, manipulator.port)  # type: ignore[arg-type]
        services += [manipulator, controller]
        assert controller.port is not None
        sensor = start_sensor("orphaned", controller.port, "--duration", "60")
        services.append(sensor)
        wait_streaming([sensor])
        shutil.rmtree(folder)  # rm -rf, the database file and its WAL with it
        failed = controller.wait_for_line(r"database write failed: (.*)", 20)
        assert str(database.sqlite_path) in failed.group(1)
        assert health_of(controller.port) == health_pb2.HealthCheckResponse.NOT_SERVING
        # Responses to streams committed before the deletion may still be on
        # their way; after that, nothing more is acknowledged.
        time.sleep(1.0)
        acks_then = len(re.findall(r"stream \d+ acknowledged", sensor.output()))
        time.sleep(3.0)
        acks_now = len(re.findall(r"stream \d+ acknowledged", sensor.output()))
        assert sensor.stop(30) == 0, sensor.output()
        assert health_of(controller.port) == health_pb2.HealthCheckResponse.NOT_SERVING
        controller_output = controller.output()
    assert acks_now == acks_then, sensor.output()
    # One error line for the episode, however many writes failed.
    writer_errors = re.findall(
        r"ERROR controller\.storage\.writer: database write failed", controller_output
    )
    assert len(writer_errors) == 1, controller_output
    final = re.search(STOPPED_LINE, sensor.output().splitlines()[-1])
    assert final is not None, sensor.output()
    created, acked, dropped, undelivered = (
        int(final[k]) for k in ("created", "acked", "dropped", "undelivered")
    )
    # The sensor still holds what was not acknowledged: nothing counted as delivered.
    assert undelivered > 0
    assert created == acked + undelivered + dropped
    report(
        "10 SQLite folder deleted",
        created=created,
        acked=acked,
        undelivered=undelivered,
        acks_after_detection=acks_now - acks_then,
    )
