"""The manipulator: a real server on 127.0.0.1, real sockets, a real journal file."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from manipulator.config import parse_config
from manipulator.errors import (
    BadCommand,
    CommandFenced,
    CommandRefused,
    JournalCorrupt,
    JournalError,
)
from manipulator.journal import RECORD_KEYS, Journal, JournalRecord, parse_command, read_journal
from manipulator.journal_index import JournalIndex, Verdict
from manipulator.server import ManipulatorServer
from tests.processes import ROOT, running, start_manipulator
from workcell.framing import MAX_FRAME_BYTES, FrameDecoder, encode_frame
from workcell.timeconv import US_PER_SECOND, to_iso, to_timestamp
from workcell.v1 import command_pb2

WINDOW_US = 5 * US_PER_SECOND
BASE_US = 1_700_000_000 * US_PER_SECOND
RECEIVED_US = BASE_US + 123_456_789
SMALL_LIMIT = 1024
TIMEOUT = 5.0
ORIGIN_A = "0b8e6c1e-4c55-4f7e-9d0c-3a1f2b7c9e01"
ORIGIN_B = "7d2f0a94-1b3e-4c8a-a6f5-5e9b0c4d2f13"


def make_command(
    command_id: int,
    status: int = command_pb2.STATUS_UP,
    *,
    origin: str = "",
    shift_us: int = 0,
    epoch: int = 0,
) -> command_pb2.Command:
    """A valid command: window k = id, issued 250 ms after the window ends (plus ``shift_us``)."""
    start = BASE_US + command_id * WINDOW_US + shift_us
    return command_pb2.Command(
        id=command_id,
        origin=origin,
        epoch=epoch,
        # Any int, so tests can send statuses the enum does not define.
        status=cast(command_pb2.Status, status),
        window_start=to_timestamp(start),
        window_end=to_timestamp(start + WINDOW_US),
        issued_at=to_timestamp(start + WINDOW_US + 250_000),
    )


def expected_entry(
    command_id: int, status: str = "up", origin: str = "", epoch: int = 0
) -> dict[str, Any]:
    start = BASE_US + command_id * WINDOW_US
    return {
        "command_id": command_id,
        "origin": origin,
        "epoch": epoch,
        "status": status,
        "window_start": to_iso(start),
        "window_end": to_iso(start + WINDOW_US),
        "issued_at": to_iso(start + WINDOW_US + 250_000),
        "received_at": to_iso(RECEIVED_US),
    }


class Client:
    """A controller stand-in over a real TCP connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder()
        self.acks: list[command_pb2.CommandAck] = []
        host, port = writer.get_extra_info("sockname")[:2]
        self.name = f"{host}:{port}"

    @classmethod
    async def connect(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, *frames: command_pb2.Command | bytes) -> None:
        """Send commands (framed) and raw bytes (as they are) in one write."""
        self.writer.write(b"".join(f if isinstance(f, bytes) else encode_frame(f) for f in frames))
        await self.writer.drain()

    async def reply(self) -> command_pb2.CommandAck:
        """The next CommandAck, an acknowledgement or a refusal."""
        while not self.acks:
            data = await asyncio.wait_for(self.reader.read(4096), TIMEOUT)
            assert data, "connection closed while waiting for an ack"
            self.acks += [command_pb2.CommandAck.FromString(p) for p in self.decoder.feed(data)]
        return self.acks.pop(0)

    async def ack(self) -> int:
        """The next acknowledged command id (a refusal fails the test)."""
        reply = await self.reply()
        assert reply.error == "", reply
        return reply.command_id

    async def acks_for(self, count: int) -> list[int]:
        return [await self.ack() for _ in range(count)]

    async def expect_eof(self) -> None:
        """The server closed the connection (after whatever it still had to say)."""
        rest = await asyncio.wait_for(self.reader.read(), TIMEOUT)
        assert rest == b"", f"unexpected bytes before EOF: {rest!r}"

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def fixed_clock() -> int:
    return RECEIVED_US


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "journal.jsonl"


@pytest.fixture
async def server(journal_path: Path) -> AsyncIterator[ManipulatorServer]:
    async with ManipulatorServer(
        journal=journal_path, max_frame_bytes=SMALL_LIMIT, read_timeout=0.3, clock=fixed_clock
    ) as running_server:
        yield running_server


def manipulator_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.startswith("manipulator")
    ]


# --- pure parsing -----------------------------------------------------------------------------


def test_parse_command_makes_the_journal_record() -> None:
    record = parse_command(
        make_command(4, command_pb2.STATUS_DOWN).SerializeToString(), received_at=RECEIVED_US
    )
    assert json.loads(record.to_line()) == expected_entry(4, "down")
    assert tuple(json.loads(record.to_line())) == RECORD_KEYS
    assert record.to_line().endswith(b"\n")
    assert record.to_line().count(b"\n") == 1


def _without(command: command_pb2.Command, field: str) -> command_pb2.Command:
    command.ClearField(field)
    return command


BAD_COMMANDS: dict[str, tuple[bytes, str]] = {
    "undecodable": (b"\xff\xff\xff", "undecodable"),
    "id 0": (make_command(0).SerializeToString(), "id is 0"),
    "status unspecified": (
        make_command(1, command_pb2.STATUS_UNSPECIFIED).SerializeToString(),
        "status 0",
    ),
    "status unknown": (make_command(1, 7).SerializeToString(), "status 7"),
    "no window_start": (
        _without(make_command(1), "window_start").SerializeToString(),
        "window_start is missing",
    ),
    "no window_end": (
        _without(make_command(1), "window_end").SerializeToString(),
        "window_end is missing",
    ),
    "no issued_at": (
        _without(make_command(1), "issued_at").SerializeToString(),
        "issued_at is missing",
    ),
    "time out of range": (
        command_pb2.Command(
            id=1,
            status=command_pb2.STATUS_UP,
            window_start=to_timestamp(BASE_US),
            window_end=to_timestamp(BASE_US + WINDOW_US),
            issued_at=Timestamp(seconds=10**15),
        ).SerializeToString(),
        "issued_at out of range",
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD_COMMANDS))
def test_parse_command_names_the_problem(kind: str) -> None:
    payload, problem = BAD_COMMANDS[kind]
    with pytest.raises(BadCommand, match=problem):
        parse_command(payload, received_at=RECEIVED_US)


def record(
    command_id: int,
    origin: str = "",
    *,
    status: int = command_pb2.STATUS_UP,
    shift_us: int = 0,
    epoch: int = 0,
) -> JournalRecord:
    payload = make_command(command_id, status, origin=origin, shift_us=shift_us, epoch=epoch)
    return parse_command(payload.SerializeToString(), received_at=RECEIVED_US)


def test_parse_command_takes_the_origin_and_refuses_a_bad_one() -> None:
    assert record(4, ORIGIN_A).origin == ORIGIN_A
    assert json.loads(record(4, ORIGIN_A).to_line())["origin"] == ORIGIN_A
    for bad in ("x" * 65, "a b", "é", "{}"):
        with pytest.raises(BadCommand, match="origin"):
            parse_command(make_command(4, origin=bad).SerializeToString(), received_at=RECEIVED_US)


def test_index_judges_new_resend_and_refused_commands() -> None:
    index = JournalIndex()
    for offset, command_id in enumerate((1, 2, 5)):
        index.add(record(command_id, ORIGIN_A), offset)
    assert index.judge(record(6, ORIGIN_A)).verdict is Verdict.NEW
    assert index.judge(record(2, ORIGIN_A)).verdict is Verdict.RESEND
    # A resend is the same content, whenever it was received.
    later = JournalRecord(**{**asdict(record(2, ORIGIN_A)), "received_at": to_iso(BASE_US)})
    assert index.judge(later).verdict is Verdict.RESEND
    different = index.judge(record(2, ORIGIN_A, status=command_pb2.STATUS_DOWN))
    assert different.verdict is Verdict.REFUSED
    assert "status=up" in different.reason
    assert "status=down" in different.reason
    skipped = index.judge(record(3, ORIGIN_A))
    assert skipped.verdict is Verdict.REFUSED
    assert "not journaled" in skipped.reason
    # Another origin is its own sequence; so is the empty one of older controllers.
    assert index.judge(record(1, ORIGIN_B)).verdict is Verdict.NEW
    assert index.judge(record(1)).verdict is Verdict.NEW
    assert index.origins == {ORIGIN_A: 5}
    assert index.last == (ORIGIN_A, 5)


def test_index_keeps_a_bounded_number_of_records_and_says_when_to_look() -> None:
    index = JournalIndex(recent=3)
    for command_id in range(1, 11):
        index.add(record(command_id, ORIGIN_A), command_id * 100)
    index.add(record(4, ORIGIN_B), 1100)
    # Records 9, 10 of A and 4 of B are in memory; older ones of A only in the file.
    assert index.judge(record(10, ORIGIN_A)).verdict is Verdict.RESEND
    assert index.judge(record(9, ORIGIN_A)).verdict is Verdict.RESEND
    assert index.judge(record(8, ORIGIN_A)).verdict is Verdict.LOOK_UP
    assert index.judge(record(1, ORIGIN_A)).verdict is Verdict.LOOK_UP
    # Below B's first id nothing was ever journaled: no need to look.
    assert index.judge(record(2, ORIGIN_B)).verdict is Verdict.REFUSED
    assert index.first_offset_of(ORIGIN_A) == 100
    with pytest.raises(ValueError, match="ids only increase"):
        index.add(record(10, ORIGIN_A), 1200)


def test_journal_refuses_a_different_command_and_writes_nothing(journal_path: Path) -> None:
    with Journal(journal_path) as journal:
        assert journal.append(record(1, ORIGIN_A))
        assert journal.append(record(2, ORIGIN_A))
        assert not journal.append(record(2, ORIGIN_A))
        with pytest.raises(CommandRefused, match="different command 2") as refused:
            journal.append(record(2, ORIGIN_A, shift_us=1))
        assert refused.value.command_id == 2
        assert journal.append(record(1, ORIGIN_B))
        assert journal.last_origin == ORIGIN_B
        assert journal.origins == {ORIGIN_A: 2, ORIGIN_B: 1}
    assert [(e["origin"], e["command_id"]) for e in read_journal(journal_path)] == [
        (ORIGIN_A, 1),
        (ORIGIN_A, 2),
        (ORIGIN_B, 1),
    ]


def test_reopened_journal_knows_every_origin_and_old_resends(journal_path: Path) -> None:
    # Lines older than origins (no "origin" key) read as origin "".
    old = [
        json.dumps(
            {k: v for k, v in expected_entry(i).items() if k not in ("origin", "epoch")}
        ).encode()
        + b"\n"
        for i in (1, 2, 3)
    ]
    _write_journal(journal_path, b"".join(old))
    with Journal(journal_path, recent=2) as journal:
        assert journal.origins == {"": 3}
        for command_id in range(1, 8):
            assert journal.append(record(command_id, ORIGIN_A))
        assert journal.append(record(4))
    before = journal_path.read_bytes()

    with Journal(journal_path, recent=2) as journal:
        assert journal.origins == {"": 4, ORIGIN_A: 7}
        assert (journal.last_origin, journal.last_id) == ("", 4)
        # Older than what is kept in memory: looked up in the file.
        assert not journal.append(record(2, ORIGIN_A))
        assert not journal.append(record(1))
        with pytest.raises(CommandRefused, match="different command 3"):
            journal.append(record(3, ORIGIN_A, status=command_pb2.STATUS_DOWN))
        with pytest.raises(CommandRefused, match="different command 2"):
            journal.append(record(2, shift_us=5))
        assert not journal.append(record(7, ORIGIN_A))
    assert journal_path.read_bytes() == before


def test_journal_with_ids_going_back_within_an_origin_is_refused(journal_path: Path) -> None:
    lines = [json.dumps(expected_entry(i, origin=ORIGIN_A)).encode() + b"\n" for i in (1, 3, 2)]
    _write_journal(journal_path, b"".join(lines))
    with pytest.raises(JournalCorrupt, match=r"line 3: command 2 .* follows command 3"):
        Journal(journal_path)
    # Whether the line is among the ones kept in memory or not.
    with pytest.raises(JournalCorrupt, match="line 3: command 2"):
        Journal(journal_path, recent=1)


# --- journaling and acks ----------------------------------------------------------------------


async def test_commands_are_journaled_and_acked(
    server: ManipulatorServer, journal_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="manipulator")
    client = await Client.connect(server.port)
    await client.send(make_command(1))
    assert await client.ack() == 1
    # Two frames in one write, acked in order.
    await client.send(make_command(2, command_pb2.STATUS_DOWN), make_command(3))
    assert await client.acks_for(2) == [2, 3]
    await client.close()

    entries = read_journal(journal_path)
    assert entries == [expected_entry(1), expected_entry(2, "down"), expected_entry(3)]
    assert all(tuple(entry) == RECORD_KEYS for entry in entries)
    assert server.journal.last_id == 3
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("command 2: status=down window=[") for line in lines)


async def test_resend_is_acked_but_not_journaled_twice(
    server: ManipulatorServer, journal_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="manipulator")
    client = await Client.connect(server.port)
    await client.send(make_command(1), make_command(2))
    assert await client.acks_for(2) == [1, 2]
    await client.send(make_command(2), make_command(1))
    assert await client.acks_for(2) == [2, 1]
    await client.close()
    # A reconnecting controller resends on a new connection.
    again = await Client.connect(server.port)
    await again.send(make_command(2), make_command(3))
    assert await again.acks_for(2) == [2, 3]
    await again.close()

    assert [e["command_id"] for e in read_journal(journal_path)] == [1, 2, 3]
    duplicates = [r for r in caplog.records if "duplicate" in r.getMessage()]
    assert len(duplicates) == 3
    assert all(r.levelno == logging.INFO for r in duplicates)


async def test_a_different_command_with_a_journaled_id_is_refused(
    server: ManipulatorServer, journal_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="manipulator")
    client = await Client.connect(server.port)
    down = make_command(11, command_pb2.STATUS_DOWN, origin=ORIGIN_A)
    await client.send(down)
    assert await client.ack() == 11

    # Another command 11 of the same origin, and the one after it in the same
    # write: both refused (12 waits behind 11), neither journaled.
    up = make_command(11, command_pb2.STATUS_UP, origin=ORIGIN_A, shift_us=WINDOW_US)
    await client.send(up, make_command(12, origin=ORIGIN_A))
    refused, behind = await client.reply(), await client.reply()
    assert refused.command_id == 11
    assert "refused" in refused.error
    assert behind.command_id == 12
    assert "11" in behind.error
    assert [e["status"] for e in read_journal(journal_path)] == ["down"]
    errors = manipulator_errors(caplog)
    assert len(errors) == 1, errors
    # Both versions named: the one journaled and the one refused.
    assert "status=down" in errors[0]
    assert "status=up" in errors[0]
    assert down.window_start.ToJsonString().replace("Z", "") in errors[0]
    assert up.window_start.ToJsonString().replace("Z", "") in errors[0]

    # The connection is still served: the same command 11 again is a resend,
    # after which 12 goes in.
    await client.send(down, make_command(12, origin=ORIGIN_A))
    assert await client.acks_for(2) == [11, 12]
    await client.close()
    assert [(e["command_id"], e["status"]) for e in read_journal(journal_path)] == [
        (11, "down"),
        (12, "up"),
    ]


async def test_an_id_below_the_last_that_is_not_journaled_is_refused(
    server: ManipulatorServer, journal_path: Path
) -> None:
    client = await Client.connect(server.port)
    await client.send(*(make_command(i, origin=ORIGIN_A) for i in (1, 2, 5)))
    assert await client.acks_for(3) == [1, 2, 5]
    await client.send(make_command(3, origin=ORIGIN_A))
    reply = await client.reply()
    assert reply.command_id == 3
    assert "not journaled" in reply.error
    await client.close()
    assert [e["command_id"] for e in read_journal(journal_path)] == [1, 2, 5]


async def test_a_new_origin_starts_its_own_sequence(
    server: ManipulatorServer, journal_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="manipulator")
    client = await Client.connect(server.port)
    await client.send(*(make_command(i, origin=ORIGIN_A) for i in (1, 2, 3)))
    assert await client.acks_for(3) == [1, 2, 3]
    # A controller on a fresh database: ids from 1 again, a different origin.
    await client.send(*(make_command(i, origin=ORIGIN_B, shift_us=7) for i in (1, 2)))
    assert await client.acks_for(2) == [1, 2]
    await client.close()
    entries = read_journal(journal_path)
    assert [(e["origin"], e["command_id"]) for e in entries] == [
        (ORIGIN_A, 1),
        (ORIGIN_A, 2),
        (ORIGIN_A, 3),
        (ORIGIN_B, 1),
        (ORIGIN_B, 2),
    ]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"commands now come from origin {ORIGIN_B} (last journaled origin {ORIGIN_A}): "
        "a new controller database"
    ]
    assert not any("acknowledged again" in r.getMessage() for r in caplog.records)


async def test_restart_recovers_the_last_id(journal_path: Path) -> None:
    async with ManipulatorServer(journal=journal_path, clock=fixed_clock) as first:
        client = await Client.connect(first.port)
        await client.send(make_command(1), make_command(2), make_command(3))
        assert await client.acks_for(3) == [1, 2, 3]
        await client.close()

    async with ManipulatorServer(journal=journal_path, clock=fixed_clock) as second:
        assert second.journal.last_id == 3
        client = await Client.connect(second.port)
        await client.send(make_command(3), make_command(4))
        assert await client.acks_for(2) == [3, 4]
        await client.close()

    assert [e["command_id"] for e in read_journal(journal_path)] == [1, 2, 3, 4]


async def test_restart_with_an_existing_journal_object(journal_path: Path) -> None:
    with Journal(journal_path) as journal:
        async with ManipulatorServer(journal=journal, clock=fixed_clock) as server:
            client = await Client.connect(server.port)
            await client.send(make_command(1))
            assert await client.ack() == 1
            await client.close()
        # The caller owns a journal it passed in: still open.
        assert journal.last_id == 1
        assert journal.is_duplicate(1)
    assert read_journal(journal_path) == [expected_entry(1)]


# --- fencing: the epoch of a deposed leader ----------------------------------------------------


def fenced_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
        and r.name.startswith("manipulator")
        and "deposed" in r.getMessage()
    ]


def journaled_epochs(path: Path) -> list[tuple[str, int, int]]:
    return [(e["origin"], e["command_id"], e["epoch"]) for e in read_journal(path)]


def test_index_fences_a_lower_epoch_within_its_origin() -> None:
    index = JournalIndex()
    index.add(record(1, ORIGIN_A, epoch=3), 0)
    assert index.epoch_of(ORIGIN_A) == 3
    fenced = index.judge(record(2, ORIGIN_A, epoch=2))
    assert fenced.verdict is Verdict.FENCED
    assert fenced.fence == 3
    assert "epoch 2" in fenced.reason
    assert "epoch 3" in fenced.reason
    # Even a resend of the very command journaled: its sender was deposed.
    assert index.judge(record(1, ORIGIN_A, epoch=2)).verdict is Verdict.FENCED
    assert index.judge(record(2, ORIGIN_A, epoch=3)).verdict is Verdict.NEW
    # A resend is the same content whatever epoch sends it.
    assert index.judge(record(1, ORIGIN_A, epoch=4)).verdict is Verdict.RESEND
    # Epochs are terms of one database: another origin has its own.
    assert index.judge(record(1, ORIGIN_B, epoch=1)).verdict is Verdict.NEW
    assert index.epoch_of(ORIGIN_B) == 0


async def test_a_lower_epoch_is_refused_and_nothing_journaled(
    server: ManipulatorServer, journal_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="manipulator")
    client = await Client.connect(server.port)
    await client.send(make_command(1, origin=ORIGIN_A, epoch=4))
    assert await client.ack() == 1
    # The deposed leader of epoch 3: a new command, then a resend of a journaled one.
    await client.send(
        make_command(2, origin=ORIGIN_A, epoch=3), make_command(1, origin=ORIGIN_A, epoch=3)
    )
    refusals = [await client.reply(), await client.reply()]
    assert [r.command_id for r in refusals] == [2, 1]
    for refusal in refusals:
        assert refusal.superseded_by_epoch == 4
        assert "from epoch 3" in refusal.error
        assert "epoch 4" in refusal.error
        assert "deposed" in refusal.error
    # The same epoch and a higher one are taken, on the same connection.
    await client.send(
        make_command(2, origin=ORIGIN_A, epoch=4), make_command(3, origin=ORIGIN_A, epoch=5)
    )
    assert await client.acks_for(2) == [2, 3]
    # Now epoch 4 is the deposed one.
    await client.send(make_command(4, origin=ORIGIN_A, epoch=4))
    refused = await client.reply()
    assert (refused.command_id, refused.superseded_by_epoch) == (4, 5)
    await client.close()

    assert journaled_epochs(journal_path) == [(ORIGIN_A, 1, 4), (ORIGIN_A, 2, 4), (ORIGIN_A, 3, 5)]
    # One warning per deposed epoch, not one per frame; not an error.
    warnings = fenced_warnings(caplog)
    assert len(warnings) == 2, warnings
    assert "epoch 3" in warnings[0]
    assert "epoch 4" in warnings[1]
    assert manipulator_errors(caplog) == []
    # Each new epoch once, in words a search for refusals does not match.
    new_epochs = [r.getMessage() for r in caplog.records if "now come from epoch" in r.getMessage()]
    assert [line.split(": a new leader")[0] for line in new_epochs] == [
        f"commands of origin {ORIGIN_A} now come from epoch 4 (before: 0)",
        f"commands of origin {ORIGIN_A} now come from epoch 5 (before: 4)",
    ]
    assert not any("refused" in line for line in new_epochs)


async def test_a_resend_with_a_higher_epoch_raises_the_bar_without_a_journal_line(
    server: ManipulatorServer, journal_path: Path
) -> None:
    deposed = await Client.connect(server.port)
    await deposed.send(*(make_command(i, origin=ORIGIN_A, epoch=3) for i in (1, 2)))
    assert await deposed.acks_for(2) == [1, 2]
    # The new leader resends command 2, whose ack it never saw, stamped with its epoch.
    leader = await Client.connect(server.port)
    await leader.send(make_command(2, origin=ORIGIN_A, epoch=4))
    assert await leader.ack() == 2
    assert journaled_epochs(journal_path) == [(ORIGIN_A, 1, 3), (ORIGIN_A, 2, 3)]
    # The deposed leader's link comes back and delivers its resend of 2 and a command 3.
    await deposed.send(
        make_command(2, origin=ORIGIN_A, epoch=3), make_command(3, origin=ORIGIN_A, epoch=3)
    )
    refusals = [await deposed.reply(), await deposed.reply()]
    assert [(r.command_id, r.superseded_by_epoch) for r in refusals] == [(2, 4), (3, 4)]
    await leader.send(make_command(3, origin=ORIGIN_A, epoch=4))
    assert await leader.ack() == 3
    await deposed.close()
    await leader.close()
    assert journaled_epochs(journal_path) == [(ORIGIN_A, 1, 3), (ORIGIN_A, 2, 3), (ORIGIN_A, 3, 4)]


async def test_restart_learns_each_origins_highest_epoch_from_the_journal(
    journal_path: Path,
) -> None:
    async with ManipulatorServer(journal=journal_path, clock=fixed_clock) as first:
        client = await Client.connect(first.port)
        await client.send(
            make_command(1, origin=ORIGIN_A, epoch=2),
            make_command(2, origin=ORIGIN_A, epoch=5),
            *(make_command(i, origin=ORIGIN_B, epoch=1) for i in (1, 2, 3)),
        )
        assert await client.acks_for(5) == [1, 2, 1, 2, 3]
        await client.close()

    # Origin A's lines are no longer among the records kept in memory.
    with Journal(journal_path, recent=1) as journal:
        assert (journal.epoch_of(ORIGIN_A), journal.epoch_of(ORIGIN_B)) == (5, 1)
        async with ManipulatorServer(journal=journal, clock=fixed_clock) as second:
            client = await Client.connect(second.port)
            await client.send(
                make_command(2, origin=ORIGIN_A, epoch=4),
                make_command(3, origin=ORIGIN_A, epoch=4),
                make_command(4, origin=ORIGIN_B, epoch=0),
            )
            refusals = [await client.reply() for _ in range(3)]
            assert [(r.command_id, r.superseded_by_epoch) for r in refusals] == [
                (2, 5),
                (3, 5),
                (4, 1),
            ]
            await client.send(
                make_command(3, origin=ORIGIN_A, epoch=5), make_command(4, origin=ORIGIN_B, epoch=1)
            )
            assert await client.acks_for(2) == [3, 4]
            await client.close()
    assert journaled_epochs(journal_path)[-2:] == [(ORIGIN_A, 3, 5), (ORIGIN_B, 4, 1)]


async def test_a_fresh_database_starts_its_own_epochs(
    server: ManipulatorServer, journal_path: Path
) -> None:
    # Epochs are counted per database: a cell moved to a fresh database (a
    # new origin) starts again at epoch 1, and is not fenced by the old one's.
    client = await Client.connect(server.port)
    await client.send(*(make_command(i, origin=ORIGIN_A, epoch=7) for i in (1, 2)))
    assert await client.acks_for(2) == [1, 2]
    await client.send(*(make_command(i, origin=ORIGIN_B, epoch=1, shift_us=7) for i in (1, 2)))
    assert await client.acks_for(2) == [1, 2]
    # The old database's deposed epochs are still refused.
    await client.send(make_command(3, origin=ORIGIN_A, epoch=6))
    assert (await client.reply()).superseded_by_epoch == 7
    await client.close()
    assert [epoch for _, _, epoch in journaled_epochs(journal_path)] == [7, 7, 1, 1]


def _line_without(entry: dict[str, Any], *keys: str) -> bytes:
    return json.dumps({k: v for k, v in entry.items() if k not in keys}).encode() + b"\n"


def test_journal_lines_without_an_epoch_read_as_epoch_0(journal_path: Path) -> None:
    _write_journal(
        journal_path,
        _line_without(expected_entry(1), "origin", "epoch")  # before origins
        + _line_without(expected_entry(1, origin=ORIGIN_A), "epoch")  # before epochs
        + _line_without(expected_entry(2, origin=ORIGIN_A), "epoch"),
    )
    with Journal(journal_path, recent=1) as journal:
        assert journal.origins == {"": 1, ORIGIN_A: 2}
        assert (journal.epoch_of(""), journal.epoch_of(ORIGIN_A)) == (0, 0)
        # Looked up in the file (older than the records in memory): a resend.
        assert not journal.append(record(1, ORIGIN_A))
        assert journal.append(record(3, ORIGIN_A))
        assert journal.append(record(4, ORIGIN_A, epoch=1))  # the first leader
        with pytest.raises(CommandFenced, match="from epoch 0") as fenced:
            journal.append(record(5, ORIGIN_A))
        assert fenced.value.highest_epoch == 1
    assert [e.get("epoch") for e in read_journal(journal_path)] == [None, None, None, 0, 1]


def test_journal_opens_with_the_highest_epoch_of_each_origin(journal_path: Path) -> None:
    # Over a megabyte, so the lines after the first block are read by the
    # fast path. An epoch going back (lines appended by a manipulator that
    # predates epochs, after a downgrade) does not lower what was reached.
    epochs = [1] * 4000 + [7] + [6] * 499
    _write_journal(
        journal_path,
        b"".join(
            json.dumps(expected_entry(i, origin=ORIGIN_A, epoch=epoch)).encode() + b"\n"
            for i, epoch in enumerate(epochs, 1)
        )
        + _line_without(expected_entry(len(epochs) + 1, origin=ORIGIN_A), "epoch"),
    )
    assert journal_path.stat().st_size > 1024 * 1024
    with Journal(journal_path, recent=1) as journal:
        assert journal.epoch_of(ORIGIN_A) == 7
        assert journal.last_id == len(epochs) + 1
        with pytest.raises(CommandFenced):
            journal.append(record(len(epochs) + 2, ORIGIN_A, epoch=6))


@pytest.mark.parametrize("epoch", ['"3"', "-1", "true", "1.5", str(2**64)])
def test_journal_with_a_bad_epoch_is_refused(journal_path: Path, epoch: str) -> None:
    line = json.dumps(expected_entry(1, origin=ORIGIN_A, epoch=0)).replace(
        '"epoch": 0', f'"epoch": {epoch}'
    )
    _write_journal(journal_path, line.encode() + b"\n")
    with pytest.raises(JournalCorrupt, match="epoch"):
        Journal(journal_path)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([ORIGIN_A, ORIGIN_B]),
            st.integers(1, 6),  # id
            st.integers(0, 4),  # epoch
            st.integers(0, 1),  # which version of the command (content)
        ),
        max_size=25,
    )
)
def test_journaled_epochs_never_go_back_within_an_origin(
    tmp_path_factory: pytest.TempPathFactory, frames: list[tuple[str, int, int, int]]
) -> None:
    path = tmp_path_factory.mktemp("epochs") / "journal.jsonl"
    accepted: dict[str, int] = {}  # per origin, the highest epoch accepted
    with Journal(path) as journal:
        for origin, command_id, epoch, version in frames:
            bar = accepted.get(origin, 0)
            if epoch < bar:
                with pytest.raises(CommandFenced, match=f"from epoch {epoch}, but epoch {bar} "):
                    journal.append(record(command_id, origin, epoch=epoch, shift_us=version))
                continue
            try:
                journal.append(record(command_id, origin, epoch=epoch, shift_us=version))
            except CommandFenced:
                raise  # its epoch is not below its origin's: it must not be fenced
            except CommandRefused:
                continue  # for its content or id
            accepted[origin] = epoch  # journaled, or acknowledged again as a resend
    journaled: dict[str, list[int]] = {}
    for origin, _, epoch in journaled_epochs(path):
        journaled.setdefault(origin, []).append(epoch)
    for epochs in journaled.values():
        assert epochs == sorted(epochs)
    with Journal(path) as reopened:
        for origin, epochs in journaled.items():
            assert reopened.epoch_of(origin) == epochs[-1]


def _write_journal(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


async def test_partial_trailing_line_is_removed(
    journal_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lines = [json.dumps(expected_entry(i)).encode() + b"\n" for i in (1, 2)]
    _write_journal(journal_path, b"".join(lines) + b'{"command_id": 3, "sta')
    caplog.set_level(logging.INFO, logger="manipulator")

    async with ManipulatorServer(journal=journal_path, clock=fixed_clock) as server:
        assert server.journal.last_id == 2
        assert await asyncio.to_thread(journal_path.read_bytes) == b"".join(lines)
        client = await Client.connect(server.port)
        await client.send(make_command(2), make_command(3))
        assert await client.acks_for(2) == [2, 3]
        await client.close()

    assert read_journal(journal_path) == [expected_entry(1), expected_entry(2), expected_entry(3)]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "incomplete last line" in warnings[0].getMessage()


@pytest.mark.parametrize(
    "tail",
    [b"{", b"\x00" * 10, b"x" * 200_000],
    ids=["brace", "zero-fill", "long"],
)
def test_journal_of_only_a_partial_line_starts_empty(journal_path: Path, tail: bytes) -> None:
    _write_journal(journal_path, tail)
    with Journal(journal_path) as journal:
        assert journal.last_id == 0
    assert journal_path.read_bytes() == b""


def test_journal_recovers_across_a_long_last_line(journal_path: Path) -> None:
    # The last complete line straddles the backwards-read block boundary.
    first = json.dumps(expected_entry(1)).encode() + b"\n"
    second = json.dumps({**expected_entry(2), "note": "y" * 100_000}).encode() + b"\n"
    _write_journal(journal_path, first + second + b'{"comm')
    with Journal(journal_path) as journal:
        assert journal.last_id == 2
    assert journal_path.read_bytes() == first + second


def test_journal_with_a_damaged_complete_line_is_refused(journal_path: Path) -> None:
    _write_journal(journal_path, b"not json\n")
    with pytest.raises(JournalCorrupt, match="not JSON"):
        Journal(journal_path)
    _write_journal(journal_path, b'{"status": "up"}\n')
    with pytest.raises(JournalCorrupt, match="command_id"):
        Journal(journal_path)


def test_journal_is_used_by_one_manipulator_at_a_time(journal_path: Path) -> None:
    with Journal(journal_path), pytest.raises(JournalError, match="in use"):
        Journal(journal_path)
    # Released on close.
    Journal(journal_path).close()


def test_appending_to_a_closed_journal_fails(journal_path: Path) -> None:
    journal = Journal(journal_path)
    journal.close()
    journal.close()  # idempotent
    record = parse_command(make_command(1).SerializeToString(), received_at=RECEIVED_US)
    with pytest.raises(JournalError, match="closed"):
        journal.append(record)


# --- bad frames ---------------------------------------------------------------------------------

BAD_FRAMES: dict[str, tuple[bytes, str]] = {
    "zero length": (b"\x00\x00\x00\x00", "length 0"),
    "oversize": (struct.pack(">I", SMALL_LIMIT + 1), "exceeds"),
    "huge header": (b"\xff\xff\xff\xff", "exceeds"),
    **{kind: (encode_frame(payload), problem) for kind, (payload, problem) in BAD_COMMANDS.items()},
}


@pytest.mark.parametrize("kind", sorted(BAD_FRAMES))
async def test_bad_frame_closes_only_that_connection(
    server: ManipulatorServer, journal_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    frame, problem = BAD_FRAMES[kind]
    caplog.set_level(logging.INFO, logger="manipulator")
    bystander = await Client.connect(server.port)
    await bystander.send(make_command(1))
    assert await bystander.ack() == 1

    bad = await Client.connect(server.port)
    await bad.send(frame)
    await bad.expect_eof()
    errors = manipulator_errors(caplog)
    assert len(errors) == 1, errors
    assert bad.name in errors[0]
    assert problem in errors[0]
    await bad.close()

    # The connection open during the error and a new one are both served.
    await bystander.send(make_command(2))
    assert await bystander.ack() == 2
    later = await Client.connect(server.port)
    await later.send(make_command(3))
    assert await later.ack() == 3
    await bystander.close()
    await later.close()
    assert [e["command_id"] for e in read_journal(journal_path)] == [1, 2, 3]


async def test_frames_before_a_bad_frame_in_the_same_read_are_handled(
    server: ManipulatorServer, journal_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = await Client.connect(server.port)
    await client.send(make_command(1), make_command(2), b"\x00\x00\x00\x00", make_command(3))
    assert await client.acks_for(2) == [1, 2]
    await client.expect_eof()
    await client.close()
    assert [e["command_id"] for e in read_journal(journal_path)] == [1, 2]
    assert len(manipulator_errors(caplog)) == 1


async def test_a_bad_command_stops_the_frames_after_it(
    server: ManipulatorServer, journal_path: Path
) -> None:
    client = await Client.connect(server.port)
    await client.send(make_command(1), make_command(0), make_command(2))
    assert await client.ack() == 1
    await client.expect_eof()
    await client.close()
    assert [e["command_id"] for e in read_journal(journal_path)] == [1]


async def test_frame_of_exactly_the_limit_is_read(server: ManipulatorServer) -> None:
    # A valid command padded with an unknown field up to the limit: decoded, accepted.
    payload = make_command(1).SerializeToString()
    filler_len = SMALL_LIMIT - len(payload) - 3  # tag (1) + length varint (2)
    filler = b"\x7a" + bytes([0x80 | (filler_len & 0x7F), filler_len >> 7]) + b"f" * filler_len
    assert len(payload + filler) == SMALL_LIMIT
    client = await Client.connect(server.port)
    await client.send(encode_frame(payload + filler, max_bytes=SMALL_LIMIT))
    assert await client.ack() == 1
    await client.close()


async def test_partial_frame_then_silence_is_closed_after_the_read_timeout(
    server: ManipulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="manipulator")
    client = await Client.connect(server.port)
    await client.send(encode_frame(make_command(1))[:6])
    await client.expect_eof()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(client.name in w and "unfinished frame" in w for w in warnings), warnings
    await client.close()


async def test_idle_connection_between_frames_is_kept(server: ManipulatorServer) -> None:
    client = await Client.connect(server.port)
    await client.send(make_command(1))
    assert await client.ack() == 1
    # Idle for well over the 0.3 s read timeout, as the controller is between periods.
    await asyncio.sleep(1.0)
    await client.send(make_command(2))
    assert await client.ack() == 2
    await client.close()


async def test_bytes_trickling_in_reset_the_read_timeout(journal_path: Path) -> None:
    frame = encode_frame(make_command(1))
    gap = 0.03
    # The whole frame takes longer than the timeout; each gap is far shorter.
    async with ManipulatorServer(journal=journal_path, read_timeout=len(frame) * gap / 2) as server:
        client = await Client.connect(server.port)
        for i in range(len(frame) - 1):
            await client.send(frame[i : i + 1])
            await asyncio.sleep(gap)
        await client.send(frame[-1:])
        assert await client.ack() == 1
        await client.close()


# --- lifecycle -----------------------------------------------------------------------------------


async def test_close_ends_connections_and_is_idempotent(journal_path: Path) -> None:
    server = ManipulatorServer(journal=journal_path)
    with pytest.raises(RuntimeError):
        _ = server.port
    await server.start()
    client = await Client.connect(server.port)
    await client.send(make_command(1))
    assert await client.ack() == 1
    await asyncio.gather(server.close(), server.close())
    await client.expect_eof()
    await client.close()
    await server.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", server.port)
    # The journal was released: a new server can open it.
    async with ManipulatorServer(journal=journal_path) as again:
        assert again.journal.last_id == 1


class SlowJournal(Journal):
    """A journal whose appends take a while, to catch a shutdown in the middle of one."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.writing = threading.Event()

    def append(self, record: JournalRecord) -> bool:
        self.writing.set()
        time.sleep(0.3)
        return super().append(record)


async def test_close_finishes_the_command_in_progress(journal_path: Path) -> None:
    journal = SlowJournal(journal_path)
    server = ManipulatorServer(journal=journal, clock=fixed_clock)
    await server.start()
    client = await Client.connect(server.port)
    await client.send(make_command(1))
    assert await asyncio.to_thread(journal.writing.wait, TIMEOUT)
    await server.close()
    # The line was written whole and acknowledged before the connection closed.
    assert await client.ack() == 1
    await client.expect_eof()
    await client.close()
    journal.close()
    assert read_journal(journal_path) == [expected_entry(1)]


async def test_start_fails_cleanly_when_the_port_is_taken(journal_path: Path) -> None:
    async with ManipulatorServer(journal=journal_path) as first:
        second = ManipulatorServer(journal=journal_path.with_name("other.jsonl"), port=first.port)
        with pytest.raises(OSError, match="in use"):
            await second.start()
        await second.close()
        # The second server's journal was closed again.
        Journal(journal_path.with_name("other.jsonl")).close()


# --- configuration and the process ---------------------------------------------------------------


def test_config_defaults() -> None:
    config = parse_config([], environ={})
    assert str(config.listen) == "127.0.0.1:7700"
    assert config.journal == Path("data/journal.jsonl")
    assert config.max_frame_bytes == MAX_FRAME_BYTES
    assert config.read_timeout == 10.0
    assert config.log_level == "INFO"


def test_config_from_environment_and_flags() -> None:
    environ = {
        "WORKCELL_MANIPULATOR_LISTEN": "0.0.0.0:7800",
        "WORKCELL_JOURNAL": "/var/j.jsonl",
        "WORKCELL_MAX_FRAME": "2048",
        "WORKCELL_READ_TIMEOUT": "2.5",
        "WORKCELL_LOG_LEVEL": "debug",
    }
    config = parse_config([], environ=environ)
    assert (config.listen.host, config.listen.port) == ("0.0.0.0", 7800)
    assert config.journal == Path("/var/j.jsonl")
    assert config.max_frame_bytes == 2048
    assert config.read_timeout == 2.5
    assert config.log_level == "DEBUG"
    # A flag beats its variable.
    assert parse_config(["--max-frame", "4096"], environ=environ).max_frame_bytes == 4096


def _run_manipulator(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "manipulator", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "env", "names"),
    [
        (["--listen", "nope"], {}, ["--listen"]),
        (["--read-timeout", "0"], {}, ["--read-timeout"]),
        ([], {"WORKCELL_MAX_FRAME": "-1"}, ["--max-frame", "WORKCELL_MAX_FRAME"]),
        # Smaller than a command: every command refused, the controller redialling (issue 10).
        (["--max-frame", "99"], {}, ["--max-frame"]),
    ],
    ids=["listen", "read-timeout", "env max-frame", "max-frame below a command"],
)
def test_bad_flag_exits_2_with_one_line(
    args: list[str], env: dict[str, str], names: list[str]
) -> None:
    result = _run_manipulator(*args, env=env)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for name in names:
        assert name in lines[0]


def test_process_acks_then_exits_0_on_sigterm(tmp_path: Path) -> None:
    journal = tmp_path / "nested" / "journal.jsonl"
    service = start_manipulator(journal)
    with running(service):
        assert service.port is not None
        with socket.create_connection(("127.0.0.1", service.port), timeout=TIMEOUT) as sock:
            sock.sendall(encode_frame(make_command(1)))
            decoder = FrameDecoder()
            payloads: list[bytes] = []
            while not payloads:
                data = sock.recv(4096)
                assert data, service.output()
                payloads = decoder.feed(data)
            assert command_pb2.CommandAck.FromString(payloads[0]).command_id == 1
            assert service.stop() == 0
    assert [e["command_id"] for e in read_journal(journal)] == [1]
    assert "command 1: status=up window=[" in service.output()


def test_process_refuses_a_damaged_journal(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    journal.write_text("garbage\n")
    result = _run_manipulator("--listen", "127.0.0.1:0", "--journal", str(journal))
    assert result.returncode == 1
    assert "not JSON" in result.stderr


def test_the_journal_open_time_script_runs() -> None:
    done = subprocess.run(
        [sys.executable, "scripts/journal_open_time.py", "--lines", "30"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("30 lines (")
    assert "opened in" in done.stdout
