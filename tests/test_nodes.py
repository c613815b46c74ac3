"""Several controller nodes on one PostgreSQL database (issue 12): real processes.

All nodes store readings and answer History; one leads (decides and drives the
manipulator) for a term (``epoch``); a standby takes over when the leader dies
or is cut off. These tests start the nodes as processes on the throwaway
PostgreSQL server and check what the database and the journal hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy.engine import make_url

from manipulator.journal import read_journal
from tests import processes
from tests.chaos_proxy import ChaosProxy
from tests.controller_harness import Cell, make_reading, running_cell
from tests.databases import PostgresServer, TestDatabase
from tests.processes import Service
from tests.scrape import poll_until, scrape
from tests.test_faults import assert_exactly_once, cleanup, report
from workcell.flags import Address
from workcell.timeconv import now_us
from workcell.v1 import nodes_pb2, nodes_pb2_grpc, telemetry_pb2, telemetry_pb2_grpc

LEADS = r"leadership: this node leads, term (\d+)"
P_US = 1_000_000
GRACE = 0.2


@pytest.fixture
def pg(postgres_server: PostgresServer) -> Iterator[TestDatabase]:
    """A fresh database on the session's PostgreSQL server."""
    with postgres_server.fresh_database() as database:
        yield database


def start_node(
    url: str, *flags: str, manipulator_port: int = processes.NO_MANIPULATOR, port: int = 0
) -> Service:
    """One controller node: a 1-second period, a short grace."""
    timing = ["--period", str(P_US / 1e6), "--grace", str(GRACE), "--shutdown-grace", "2"]
    return processes.start_controller(
        url, *timing, *flags, manipulator_port=manipulator_port, port=port
    )


def leader_of(nodes: list[Service], timeout: float = 20.0) -> Service:
    """The node that says it leads (the latest term), waiting for one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        terms = [
            (max(int(t) for t in re.findall(LEADS, n.output())), n)
            for n in nodes
            if n.process.poll() is None and re.search(LEADS, n.output())
        ]
        if terms:
            return max(terms, key=lambda t: t[0])[1]
        time.sleep(0.1)
    raise AssertionError("no node leads:\n" + "\n".join(n.output() for n in nodes))


async def send_one(
    channel: grpc.aio.Channel, reading: telemetry_pb2.Reading
) -> telemetry_pb2.StreamReadingsResponse:
    stub = telemetry_pb2_grpc.TelemetryStub(channel)
    request = telemetry_pb2.StreamReadingsRequest(readings=[reading])
    return await stub.StreamReadings(iter([request]), timeout=20)


# -- stale across nodes -------------------------------------------------------


async def race_a_deadline(
    ports: list[int], window: int, rng: random.Random
) -> list[tuple[int, telemetry_pb2.StreamReadingsResponse]]:
    """Readings of ``window``, one per stream, round-robin over the nodes, sent from
    0.4 s before its deadline to 0.4 s after; (payload, response) of each."""
    deadline_us = (window + 1) * P_US + round(GRACE * 1e6)
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for port in ports]
    try:
        await asyncio.sleep(max(0.0, (deadline_us - 400_000 - now_us()) / 1e6))
        results: list[tuple[int, telemetry_pb2.StreamReadingsResponse]] = []
        seq = 0
        pending: set[asyncio.Task[None]] = set()

        async def one(channel: grpc.aio.Channel, node: int, seq: int) -> None:
            payload = rng.randrange(-1000, 1000)
            reading = make_reading(
                seq,
                payload,
                window * P_US + seq % P_US,
                sensor_id=f"race-{node}",
                boot_id="b1",
            )
            results.append((payload, await send_one(channel, reading)))

        while now_us() < deadline_us + 400_000:
            seq += 1
            node = seq % len(channels)
            task = asyncio.create_task(one(channels[node], node, seq))
            pending.add(task)
            task.add_done_callback(pending.discard)
            await asyncio.sleep(0.002)
        await asyncio.gather(*pending)
        return results
    finally:
        for channel in channels:
            await channel.close(None)


def test_a_reading_counts_in_its_window_or_is_stale_whichever_node_stores_it(
    pg: TestDatabase,
) -> None:
    services: list[Service] = []
    with cleanup(services):
        nodes = [start_node(pg.url) for _ in range(3)]
        services += nodes
        leader_of(nodes)
        ports = [n.port for n in nodes]
        assert None not in ports
        window = now_us() // P_US + 2
        results = asyncio.run(race_a_deadline(ports, window, random.Random(12)))  # type: ignore[arg-type]
        time.sleep(1.5)  # the window is decided at its deadline; give the leader a moment
        decided = pg.fetch(
            "SELECT window_count, window_mean FROM commands WHERE window_start = :start",
            start=window * P_US,
        )
        for node in nodes:
            assert node.stop() == 0, node.output()

    assert all(r.stored == 1 and r.duplicates == 0 for _, r in results)
    counted = [payload for payload, r in results if r.stale == 0]
    stale = [payload for payload, r in results if r.stale == 1]
    assert counted, "no reading was counted: the race started too late"
    assert stale, "no reading was stale: the race ended too early"
    # Every reading is stored once, whichever node took it.
    stored = pg.fetch(
        "SELECT COUNT(*), COUNT(DISTINCT (run_id, seq)) FROM readings WHERE timestamp >= :a "
        "AND timestamp < :b",
        a=window * P_US,
        b=(window + 1) * P_US,
    )
    assert stored == [(len(results), len(results))]
    # The window was decided once, on exactly the readings the nodes reported counted.
    assert len(decided) == 1, decided
    count, mean = decided[0]
    assert int(count) == len(counted)
    assert float(mean) == pytest.approx(sum(counted) / len(counted), abs=1e-9)
    report(
        "stale across 3 nodes",
        readings=len(results),
        counted=len(counted),
        stale=len(stale),
    )


# -- leader killed ------------------------------------------------------------

KILL_PERIOD = 2.0
KILL_LEASE = 1.5
SENSORS, RATE, SECONDS = 8, 300, 30


def start_sensors(ports: list[int], count: int) -> list[Service]:
    """Sensors at ``RATE``/s, each given every node's address."""
    addresses = ",".join(f"127.0.0.1:{port}" for port in ports)
    return [
        processes.start_service(
            "sensor",
            [
                "--controller", addresses, "--no-progress", "--sensor-id", f"kill-{i}",
                "--rate", str(RATE), "--count", str(count), "--profile", "uniform",
            ],
            name=f"kill-{i}",
            wait_listening=False,
        )
        for i in range(SENSORS)
    ]  # fmt: skip


def commands_of(database: TestDatabase) -> list[tuple[int, int, int, int, bool]]:
    """(id, window_start, epoch, issued_at, acknowledged) of every command, by id."""
    rows = database.fetch(
        "SELECT id, window_start, epoch, issued_at, acknowledged_at IS NOT NULL "
        "FROM commands ORDER BY id"
    )
    return [(int(a), int(b), int(c), int(d), bool(e)) for a, b, c, d, e in rows]


def wait_acknowledged(database: TestDatabase, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(c[4] for c in commands_of(database)):
        assert time.monotonic() < deadline, commands_of(database)
        time.sleep(0.2)


def test_leader_sigkilled_twice_a_standby_takes_over_and_nothing_is_lost_or_doubled(
    tmp_path: Path, pg: TestDatabase
) -> None:
    rng = random.Random(20261202)
    journal = tmp_path / "journal.jsonl"
    count = RATE * SECONDS
    kills: list[tuple[int, int]] = []  # (when, the epoch killed)
    services: list[Service] = []
    period_us = round(KILL_PERIOD * 1e6)
    with cleanup(services):
        manipulator = processes.start_manipulator(journal)
        services.append(manipulator)
        ports = [processes.free_port() for _ in range(3)]
        flags = ["--period", str(KILL_PERIOD), "--lease", str(KILL_LEASE)]

        arm = manipulator.port
        assert arm is not None

        def node(port: int) -> Service:
            return processes.start_controller(
                pg.url, *flags, "--grace", "0.3", manipulator_port=arm, port=port
            )

        nodes = [node(port) for port in ports]
        services += nodes
        sensors = start_sensors(ports, count)
        services += sensors
        for sensor in sensors:
            sensor.wait_for_line(r"acked=[1-9]", 60)
        for _ in range(2):
            time.sleep(rng.uniform(3, 7))
            leader = leader_of(nodes)
            epoch = max(int(t) for t in re.findall(LEADS, leader.output()))
            kills.append((now_us(), epoch))
            leader.signal(9)
            leader.wait(10)
            time.sleep(rng.uniform(0.5, 2.0))
            restarted = node(ports[nodes.index(leader)])
            nodes[nodes.index(leader)] = restarted
            services.append(restarted)
        for sensor in sensors:
            assert sensor.wait(SECONDS + 60) == 0, sensor.output()
        wait_acknowledged(pg)
        for n in nodes:
            assert n.stop() == 0, n.output()
        assert manipulator.stop() == 0, manipulator.output()

    stored = assert_exactly_once(pg, {f"kill-{i}": count for i in range(SENSORS)})
    commands = commands_of(pg)
    ids = [c[0] for c in commands]
    windows = [c[1] for c in commands]
    epochs = [c[2] for c in commands]
    assert ids == list(range(1, len(ids) + 1))  # strictly increasing, never reused
    assert windows == sorted(set(windows))  # each window decided at most once
    assert epochs == sorted(epochs)
    journaled = read_journal(journal)
    assert [int(r["command_id"]) for r in journaled] == ids  # journal = History
    # Each kill: the next term's first command within one period plus 2 s.
    takeovers = []
    for killed_at, epoch in kills:
        first = min(c for c in commands if c[2] > epoch)
        takeovers.append((first[3] - killed_at) / 1e6)
        assert first[3] - killed_at <= period_us + 2_000_000, (killed_at, first)
    # A takeover skips the windows whose deadlines passed while nobody led, but the
    # latest: with a lease shorter than a period, at most one window in a row.
    gaps = [(b - a) // period_us - 1 for a, b in itertools.pairwise(windows)]
    assert max(gaps) <= 1, gaps
    report(
        "leader SIGKILL x2",
        stored=stored,
        commands=len(ids),
        epochs=len(set(epochs)),
        takeover_seconds=",".join(f"{t:.2f}" for t in takeovers),
        windows_skipped=sum(gaps),
    )


# -- leader cut off -------------------------------------------------------------

CUT_LEASE = 1.5


def journal_of(path: Path) -> list[tuple[int, int]]:
    """(command_id, epoch) of every journaled command."""
    if not path.exists():
        return []
    return [(int(r["command_id"]), int(r.get("epoch", 0))) for r in read_journal(path)]


async def until(condition: Callable[[], object], what: str) -> None:
    """Poll ``condition`` for up to 30 s (without blocking the event loop the proxies run on)."""
    deadline = time.monotonic() + 30
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_leader_cut_off_from_the_database_steps_down_and_its_late_frames_are_refused(
    tmp_path: Path, pg: TestDatabase
) -> None:
    journal = tmp_path / "journal.jsonl"
    services: list[Service] = []
    with cleanup(services):
        manipulator = processes.start_manipulator(journal)
        services.append(manipulator)
        assert manipulator.port is not None
        pg_url = make_url(pg.url)
        assert pg_url.port is not None
        flags = ["--lease", str(CUT_LEASE)]
        async with ChaosProxy(pg_url.port) as to_db, ChaosProxy(manipulator.port) as to_arm:
            through = pg_url.set(port=to_db.port).render_as_string(hide_password=False)
            # Started from a thread: the proxies forward on this event loop meanwhile.
            first = await asyncio.to_thread(
                start_node, through, *flags, manipulator_port=to_arm.port
            )
            services.append(first)
            await asyncio.to_thread(first.wait_for_line, LEADS)
            others = [
                await asyncio.to_thread(
                    start_node, pg.url, *flags, manipulator_port=manipulator.port
                )
                for _ in "bc"
            ]
            services += others
            await until(lambda: len(journal_of(journal)) >= 2, "the first leader's commands")

            # Its link stalls first: the next command's frame is held in the proxy...
            to_arm.stall()
            journaled = len(journal_of(journal))
            await until(
                lambda: len(pg.fetch("SELECT id FROM commands")) > journaled + 1,
                "a command decided while the link is stalled",
            )
            # ...then the path to the database: no close, nothing answers.
            to_db.stall()
            cut_at = time.monotonic()
            await asyncio.to_thread(first.wait_for_line, r"term 1 is over", 10)
            stepped_down = time.monotonic() - cut_at
            await asyncio.to_thread(leader_of, others)
            await until(
                lambda: any(epoch > 1 for _, epoch in journal_of(journal)),
                "a command of the new term journaled",
            )
            # The deposed leader's held frames arrive after the new term's: refused.
            to_arm.resume()
            await asyncio.to_thread(
                manipulator.wait_for_line, r"epoch 1\b.*(refused|superseded|deposed)", 15
            )
            to_db.resume()
            await until(
                lambda: all(
                    a is not None for (a,) in pg.fetch("SELECT acknowledged_at FROM commands")
                ),
                "every command acknowledged",
            )
            for service in [first, *others, manipulator]:
                assert await asyncio.to_thread(service.stop) == 0, service.output()

    commands = commands_of(pg)
    ids = [c[0] for c in commands]
    windows = [c[1] for c in commands]
    epochs = [c[2] for c in commands]
    assert ids == list(range(1, len(ids) + 1))
    assert windows == sorted(set(windows))  # nothing decided twice
    assert epochs == sorted(epochs)
    assert (epochs[0], epochs[-1] >= 2) == (1, True)
    entries = journal_of(journal)
    assert [i for i, _ in entries] == ids  # journal = History
    assert [e for _, e in entries] == sorted(e for _, e in entries)
    # The lease's bound: a leader stops within 3/4 of a lease after its last renewal.
    assert stepped_down <= CUT_LEASE + 0.5, stepped_down
    report("leader cut off", commands=len(ids), stepped_down_seconds=f"{stepped_down:.2f}")


# -- roles ------------------------------------------------------------------------


async def leadership_of(cell: Cell) -> nodes_pb2.GetLeadershipResponse:
    stub = nodes_pb2_grpc.NodesStub(cell.channel)
    return await stub.GetLeadership(nodes_pb2.GetLeadershipRequest(), timeout=10)


async def test_every_node_names_the_same_leader_and_a_clean_stop_hands_over_at_once(
    tmp_path: Path, pg: TestDatabase
) -> None:
    metrics = Address("127.0.0.1", 0)
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(
            running_cell(tmp_path / "a", database_url=pg.url, metrics_listen=metrics)
        )
        second = await stack.enter_async_context(
            running_cell(tmp_path / "b", database_url=pg.url, metrics_listen=metrics)
        )
        roles = [await leadership_of(cell) for cell in (first, second)]
        assert [r.leading for r in roles] == [True, False]  # the first node took the lease
        assert {(r.epoch, r.leader_node, r.leader_address) for r in roles} == {
            (1, roles[0].node, f"127.0.0.1:{first.controller.port}")
        }
        assert roles[0].node != roles[1].node
        assert roles[0].HasField("lease_expires_at")
        for cell, leading in ((first, 1), (second, 0)):
            samples = await scrape(cell.controller.metrics_port)
            assert samples["workcell_controller_leader"] == leading
            assert samples["workcell_controller_epoch"] == (1 if leading else 0)
        # A clean stop releases the lease: the standby leads within its next look
        # (a quarter of a lease), not after the lease runs out.
        stopped = time.monotonic()
        await first.controller.stop()
        await poll_until(lambda: leadership_of(second), lambda r: r.leading, within=5)
        assert time.monotonic() - stopped < first.controller.config.lease
        role = await leadership_of(second)
        assert (role.epoch, role.leader_address) == (2, f"127.0.0.1:{second.controller.port}")
        samples = await scrape(second.controller.metrics_port)
        assert (samples["workcell_controller_leader"], samples["workcell_controller_epoch"]) == (
            1,
            2,
        )
