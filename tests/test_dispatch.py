"""The manipulator link against a real manipulator on loopback: origins and refusals."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import pytest

from controller.link import ManipulatorLink, command_message
from controller.metrics import PREFIX, ControllerMetrics
from controller.records import CommandRecord
from controller.storage.origin import Origin
from manipulator.journal import Journal, parse_command, read_journal
from manipulator.server import ManipulatorServer
from tests.builders import command_record
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
