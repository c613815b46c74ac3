"""A journal deleted, moved or replaced while the manipulator runs (issue 10, item 3).

The manipulator used to go on fsyncing and acknowledging into the file it had
open: after ``rm`` into an unlinked file (lost at the next start, where a
resend was then journaled a second time), after ``mv`` into the renamed one;
and a second manipulator could start on the path, its lock being on the old
inode. Real servers on 127.0.0.1, real files, real ``rm``/``mv`` (os calls).
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
from pathlib import Path

import pytest

from controller.link import ManipulatorLink
from manipulator.errors import JournalDisplaced, JournalError, JournalMissing
from manipulator.journal import Journal, JournalRecord, parse_command, read_journal
from manipulator.server import ManipulatorServer
from tests.test_dispatch import ORIGIN, Acks, command
from tests.test_manipulator import Client, _run_manipulator, make_command, manipulator_errors
from workcell.flags import Address
from workcell.timeconv import now_us


def record(command_id: int) -> JournalRecord:
    return parse_command(make_command(command_id).SerializeToString(), received_at=now_us())


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "journal.jsonl"


async def refused_without_ack(port: int, command_id: int) -> None:
    """Send command ``command_id``: the manipulator closes the connection, no ack."""
    client = await Client.connect(port)
    try:
        await client.send(make_command(command_id))
        await client.expect_eof()
    finally:
        await client.close()


async def test_a_deleted_journal_acknowledges_nothing_and_says_so_once(
    journal_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="manipulator")
    async with ManipulatorServer(journal=journal_path) as server:
        client = await Client.connect(server.port)
        await client.send(make_command(1))
        assert await client.ack() == 1
        await client.close()
        await asyncio.to_thread(journal_path.unlink)  # rm journal.jsonl
        for _ in range(3):  # the controller retrying
            await refused_without_ack(server.port, 2)
        errors = manipulator_errors(caplog)
        assert len(errors) == 1, errors
        assert "was deleted" in errors[0]
        # What to do, with the way to get the deleted file's contents back.
        proc_path = re.search(r"cp (/proc/\d+/fd/\d+) ", errors[0])
        assert proc_path is not None, errors[0]
        assert f"{journal_path}.lock" in errors[0]
        # Nothing went into the unlinked file either.
        assert [e["command_id"] for e in read_journal(proc_path[1])] == [1]
        assert not await asyncio.to_thread(journal_path.exists)


async def test_a_moved_journal_acknowledges_again_once_it_is_back(
    journal_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="manipulator")
    moved = journal_path.with_name("moved.jsonl")
    async with ManipulatorServer(journal=journal_path) as server:
        client = await Client.connect(server.port)
        await client.send(make_command(1))
        assert await client.ack() == 1
        await client.close()

        await asyncio.to_thread(journal_path.rename, moved)  # mv journal.jsonl moved.jsonl
        await refused_without_ack(server.port, 2)
        await refused_without_ack(server.port, 2)
        (error,) = manipulator_errors(caplog)
        assert "was moved" in error, error
        assert [e["command_id"] for e in read_journal(moved)] == [1]

        await asyncio.to_thread(moved.rename, journal_path)  # and back
        client = await Client.connect(server.port)
        await client.send(make_command(2))
        assert await client.ack() == 2
        await client.close()
    assert [e["command_id"] for e in read_journal(journal_path)] == [1, 2]
    assert len(manipulator_errors(caplog)) == 1
    assert any("acknowledging again" in r.getMessage() for r in caplog.records)


async def test_a_journal_replaced_by_another_file_acknowledges_nothing(
    journal_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="manipulator")
    async with ManipulatorServer(journal=journal_path) as server:
        client = await Client.connect(server.port)
        await client.send(make_command(1))
        assert await client.ack() == 1
        await client.close()
        # An editor's "save": a copy written beside it, renamed over it.
        shutil.copy(journal_path, journal_path.with_name("copy"))
        journal_path.with_name("copy").replace(journal_path)
        await refused_without_ack(server.port, 2)
    (error,) = manipulator_errors(caplog)
    assert "another file" in error, error
    assert [e["command_id"] for e in read_journal(journal_path)] == [1]


def test_a_second_journal_on_the_path_of_a_deleted_one_does_not_take_over(
    journal_path: Path,
) -> None:
    first = Journal(journal_path)
    assert first.append(record(1))
    journal_path.unlink()
    # The first manipulator still runs: the lock is beside the journal, not on it.
    with pytest.raises(JournalError, match="in use by another manipulator"):
        Journal(journal_path)
    with pytest.raises(JournalDisplaced, match="deleted"):
        first.append(record(2))
    first.close()
    # Stopped: still no silent fresh journal where one was.
    with pytest.raises(JournalMissing, match="missing") as missing:
        Journal(journal_path)
    assert f"{journal_path}.lock" in str(missing.value)
    assert not journal_path.exists()
    # Starting empty has to be asked for: the lock file removed.
    Path(f"{journal_path}.lock").unlink()
    with Journal(journal_path) as fresh:
        assert fresh.last_id == 0


def test_a_moved_journal_is_refused_at_start_until_it_is_back(journal_path: Path) -> None:
    with Journal(journal_path) as journal:
        assert journal.append(record(1))
    moved = journal_path.with_name("elsewhere.jsonl")
    journal_path.rename(moved)
    with pytest.raises(JournalMissing):
        Journal(journal_path)
    moved.rename(journal_path)
    with Journal(journal_path) as journal:
        assert journal.last_id == 1


def test_a_journal_older_than_lock_files_opens_and_gets_one(journal_path: Path) -> None:
    with Journal(journal_path) as journal:
        assert journal.append(record(1))
    Path(f"{journal_path}.lock").unlink()  # as written by a manipulator before issue 10
    with Journal(journal_path) as journal:
        assert journal.last_id == 1
    assert Path(f"{journal_path}.lock").exists()


async def test_the_deleted_journal_copied_back_from_proc_keeps_resends_once(
    journal_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The remedy the error line gives after ``rm``: copy it back, restart."""
    caplog.set_level(logging.INFO, logger="manipulator")
    async with ManipulatorServer(journal=journal_path) as server:
        client = await Client.connect(server.port)
        await client.send(make_command(1), make_command(2))
        assert await client.acks_for(2) == [1, 2]
        await client.close()
        await asyncio.to_thread(journal_path.unlink)
        await refused_without_ack(server.port, 3)
        (error,) = manipulator_errors(caplog)
        command = re.search(r"`cp (/proc/\d+/fd/\d+) ([^`]+)`", error)
        assert command is not None, error
        assert command[2] == str(journal_path)
        shutil.copyfile(command[1], command[2])
    async with ManipulatorServer(journal=journal_path) as server:
        client = await Client.connect(server.port)
        # 2's ack was lost, say: a resend, acknowledged and not journaled again.
        await client.send(make_command(2), make_command(3))
        assert await client.acks_for(2) == [2, 3]
        await client.close()
    assert [e["command_id"] for e in read_journal(journal_path)] == [1, 2, 3]


async def test_the_link_keeps_the_command_pending_until_the_journal_is_back(
    journal_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    moved = journal_path.with_name("moved.jsonl")
    acks = Acks()
    async with ManipulatorServer(journal=journal_path) as server:
        link = ManipulatorLink(Address("127.0.0.1", server.port), on_ack=acks, origin=ORIGIN)
        try:
            link.enqueue(command(1))
            await link.start()
            await acks.wait_for([1])
            await asyncio.to_thread(journal_path.rename, moved)
            link.enqueue(command(2))
            await asyncio.sleep(2.0)
            assert link.pending == [2]
            assert 2 not in acks.recorded
            await asyncio.to_thread(moved.rename, journal_path)
            await acks.wait_for([2], within=15)
        finally:
            await link.close()
    assert [e["command_id"] for e in read_journal(journal_path)] == [1, 2]
    # One error line in the manipulator for the episode, however often the link tried.
    assert len(manipulator_errors(caplog)) == 1


def test_process_refuses_to_start_where_its_journal_went_missing(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    with Journal(journal) as opened:
        assert opened.append(record(1))
    journal.unlink()
    result = _run_manipulator("--listen", "127.0.0.1:0", "--journal", str(journal))
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    assert "missing" in line
    assert not journal.exists()


class MovedWhileWriting(Journal):
    """A journal moved away by the operator right between a line's fsync and its ack."""

    moved_to: Path | None = None

    def _write(self, fd: int, record: JournalRecord) -> None:
        super()._write(fd, record)
        if self.moved_to is not None:
            self.path.rename(self.moved_to)


def test_a_journal_moved_between_write_and_ack_is_not_acknowledged(journal_path: Path) -> None:
    moved = journal_path.with_name("moved.jsonl")
    with MovedWhileWriting(journal_path) as journal:
        assert journal.append(record(1))
        journal.moved_to = moved
        second = record(2)
        with pytest.raises(JournalDisplaced, match="moved"):
            journal.append(second)
        journal.moved_to = None
        # The line is in the moved file; once it is back, the resend is
        # recognised, not journaled a second time.
        moved.rename(journal_path)
        assert journal.append(second) is False
    assert [e["command_id"] for e in read_journal(journal_path)] == [1, 2]
