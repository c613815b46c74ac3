"""The manipulator link against a real manipulator on loopback: origins, refusals, fencing."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from controller.link import ManipulatorLink, command_message
from controller.metrics import PREFIX, ControllerMetrics
from controller.records import CommandRecord
from controller.storage.origin import Origin
from manipulator.journal import Journal, parse_command, read_journal
from manipulator.server import ManipulatorServer
from tests.builders import command_record
from tests.chaos_proxy import ChaosProxy
from tests.processes import free_port
from workcell.flags import Address
from workcell.timeconv import US_PER_SECOND

BASE_US = 1_800_000_000 * US_PER_SECOND
ORIGIN = Origin(str(uuid.uuid4()), BASE_US, 1)


def command(command_id: int, status: str = "up") -> CommandRecord:
    start = BASE_US + command_id * US_PER_SECOND
    return command_record(
        command_id,
        window_start=start,
        period_us=US_PER_SECOND,
        status=status,
        issued_at=start + US_PER_SECOND + 100_000,
    )


class Acks:
    """The link's on_ack: what was recorded, and when it arrived."""

    def __init__(self) -> None:
        self.recorded: dict[int, int] = {}

    async def __call__(self, command_id: int, at_us: int) -> None:
        self.recorded[command_id] = at_us

    async def wait_for(self, ids: list[int], within: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + within
        while not set(ids) <= set(self.recorded):
            assert asyncio.get_running_loop().time() < deadline, self.recorded
            await asyncio.sleep(0.02)


async def test_commands_carry_the_origin_and_older_ones_none(tmp_path: Path) -> None:
    # A database upgraded to origins at command 5: commands 3 and 4 were
    # journaled without one, so they are (re)sent without one.
    origin = Origin(ORIGIN.id, BASE_US, first_command_id=5)
    acks = Acks()
    async with ManipulatorServer(journal=tmp_path / "j.jsonl") as manipulator:
        link = ManipulatorLink(Address("127.0.0.1", manipulator.port), on_ack=acks, origin=origin)
        for command_id in (3, 4, 5, 6):
            link.enqueue(command(command_id))
        await link.start()
        await acks.wait_for([3, 4, 5, 6])
        await link.close()
    journal = read_journal(tmp_path / "j.jsonl")
    assert [(e["command_id"], e["origin"]) for e in journal] == [
        (3, ""),
        (4, ""),
        (5, origin.id),
        (6, origin.id),
    ]
    assert command_message(command(7), origin.id).origin == origin.id


async def test_a_refused_command_stays_pending_and_is_retried_with_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="controller.link")
    # The journal already holds a different command 1 of this origin (as
    # after a database was restored from a backup).
    conflicting = tmp_path / "conflicting.jsonl"
    with Journal(conflicting) as journal:
        payload = command_message(command(1, "down"), ORIGIN.id).SerializeToString()
        journal.append(parse_command(payload, received_at=BASE_US))
    port = free_port()
    acks = Acks()
    metrics = ControllerMetrics()
    link = ManipulatorLink(
        Address("127.0.0.1", port),
        on_ack=acks,
        origin=ORIGIN,
        refused_backoff=0.1,
        max_refused_backoff=0.4,
        metrics=metrics,
    )
    link.enqueue(command(1))
    link.enqueue(command(2))
    try:
        async with ManipulatorServer(journal=conflicting, port=port):
            await link.start()
            await asyncio.sleep(2.0)
        refusals = metrics.registry.get_sample_value(PREFIX + "commands_refused_total")
        # Tried again and again, but backing off (delays from 0.05 s up to
        # 0.4 s): a tight loop would make hundreds of attempts in 2 s.
        assert refusals is not None
        assert 2 <= refusals <= 12, refusals
        assert link.pending == [1, 2]
        assert acks.recorded == {}
        assert [e["status"] for e in read_journal(conflicting)] == ["down"]
        errors = [
            r.getMessage()
            for r in caplog.records
            if r.name == "controller.link" and r.levelno >= logging.ERROR
        ]
        assert len(errors) == 1, errors
        assert "refused command 1" in errors[0]
        assert "--new-origin" in errors[0]

        # A manipulator whose journal does not conflict takes both, in order.
        async with ManipulatorServer(journal=tmp_path / "other.jsonl", port=port):
            await acks.wait_for([1, 2], within=15)
    finally:
        await link.close()
    assert link.pending == []
    assert any("accepted by the manipulator after" in r.getMessage() for r in caplog.records)
    journal_ids = [e["command_id"] for e in read_journal(tmp_path / "other.jsonl")]
    assert journal_ids == [1, 2]


# --- fencing: a link of a deposed leader's epoch ----------------------------------------------


async def wait_until(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def journaled_epochs(path: Path) -> list[tuple[int, int]]:
    return [(e["command_id"], e["epoch"]) for e in read_journal(path)]


def manipulator_connections(caplog: pytest.LogCaptureFixture) -> int:
    return sum(
        1
        for r in caplog.records
        if r.name == "manipulator.server" and r.getMessage().endswith(": connected")
    )


async def test_a_link_of_an_older_epoch_is_fenced_and_stops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    journal = tmp_path / "j.jsonl"
    leader_acks, deposed_acks = Acks(), Acks()
    fenced: list[str] = []
    async with ManipulatorServer(journal=journal) as manipulator:
        address = Address("127.0.0.1", manipulator.port)
        leader = ManipulatorLink(address, on_ack=leader_acks, origin=ORIGIN, epoch=3)
        deposed = ManipulatorLink(
            address,
            on_ack=deposed_acks,
            origin=ORIGIN,
            epoch=2,
            on_fenced=fenced.append,
            # Were the fence an ordinary refusal, it would be retried fast.
            refused_backoff=0.05,
            max_refused_backoff=0.05,
        )
        try:
            for command_id in (1, 2):
                leader.enqueue(command(command_id))
            await leader.start()
            await leader_acks.wait_for([1, 2])
            # The older epoch: a resend of 2 and a command 3.
            for command_id in (2, 3):
                deposed.enqueue(command(command_id))
            await deposed.start()
            await wait_until(lambda: bool(fenced))
            connections = manipulator_connections(caplog)
            await asyncio.sleep(1.0)
            # It stopped: no reconnect, nothing kept, nothing queued from now on.
            assert manipulator_connections(caplog) == connections
            assert not deposed.connected
            assert deposed.pending == []
            deposed.enqueue(command(4))
            assert deposed.pending == []
            assert deposed_acks.recorded == {}
            assert deposed.fenced == fenced[0]
            # The leader goes on.
            leader.enqueue(command(3))
            await leader_acks.wait_for([3])
        finally:
            await deposed.close()
            await leader.close()
    assert len(fenced) == 1
    assert "epoch 2" in fenced[0]
    assert "epoch 3" in fenced[0]
    assert journaled_epochs(journal) == [(1, 3), (2, 3), (3, 3)]
    link_lines = [r for r in caplog.records if r.name == "controller.link"]
    assert [r.levelno for r in link_lines if "deposed" in r.getMessage()] == [logging.WARNING]
    assert not [r.getMessage() for r in link_lines if r.levelno >= logging.ERROR]


async def test_a_stalled_leader_that_resumes_after_its_successor_took_over_is_fenced(
    tmp_path: Path,
) -> None:
    # Issue 12's "leader cut off", at the link: the leader of epoch 3 sends
    # command 2 into a stalled path; the leader of epoch 4 resends it (it is
    # unacknowledged in the shared database) and issues 3; then the stalled
    # path delivers epoch 3's frame, after epoch 4's first.
    journal = tmp_path / "j.jsonl"
    old_acks, new_acks = Acks(), Acks()
    fenced: list[str] = []
    async with (
        ManipulatorServer(journal=journal) as manipulator,
        ChaosProxy(manipulator.port) as proxy,
    ):
        old = ManipulatorLink(
            Address("127.0.0.1", proxy.port),
            on_ack=old_acks,
            origin=ORIGIN,
            epoch=3,
            on_fenced=fenced.append,
        )
        new = ManipulatorLink(
            Address("127.0.0.1", manipulator.port), on_ack=new_acks, origin=ORIGIN, epoch=4
        )
        try:
            old.enqueue(command(1))
            await old.start()
            await old_acks.wait_for([1])
            proxy.stall()
            old.enqueue(command(2))
            await asyncio.sleep(0.2)  # written into the stalled path
            for command_id in (2, 3):
                new.enqueue(command(command_id))
            await new.start()
            await new_acks.wait_for([2, 3])
            proxy.resume()
            await wait_until(lambda: bool(fenced))
            assert old.pending == []
            assert list(old_acks.recorded) == [1]
        finally:
            await old.close()
            await new.close()
    assert "epoch 3" in fenced[0]
    assert "epoch 4" in fenced[0]
    assert journaled_epochs(journal) == [(1, 3), (2, 4), (3, 4)]
