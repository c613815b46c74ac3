"""``python -m manipulator --metrics-listen``: a real manipulator process, its real ``/metrics``.

The test talks to the process as a controller would (framed commands over TCP,
``tests.test_manipulator.Client``) and scrapes the endpoint over HTTP after
each step: every command received is counted once, as journaled, a duplicate
(acknowledged again), refused (by reason) or failed (the journal could not
take it: no ack, connection closed).
"""

from __future__ import annotations

import asyncio
import socket
import urllib.error
from pathlib import Path

import pytest

from manipulator.config import parse_config
from tests.processes import running, start_manipulator
from tests.scrape import Samples, scrape, scrape_until
from tests.test_manipulator import ORIGIN_A, Client, make_command
from workcell.flags import Address
from workcell.framing import encode_frame
from workcell.v1 import command_pb2

P = "workcell_manipulator_"
REASONS = ("conflict", "skipped_id", "fenced", "behind_refused")


def refused(reason: str) -> str:
    return f'{P}commands_refused_total{{reason="{reason}"}}'


def failed(reason: str) -> str:
    return f'{P}commands_failed_total{{reason="{reason}"}}'


def outcomes(samples: Samples) -> float:
    """Every received command ends in exactly one of these."""
    return (
        samples[f"{P}commands_journaled_total"]
        + samples[f"{P}commands_duplicate_total"]
        + sum(v for k, v in samples.items() if k.startswith(f"{P}commands_refused_total{{"))
        + sum(v for k, v in samples.items() if k.startswith(f"{P}commands_failed_total{{"))
    )


def test_the_flag_and_its_variable() -> None:
    assert parse_config([], environ={}).metrics_listen is None
    flag = parse_config(["--metrics-listen", "0.0.0.0:9100"], environ={})
    assert flag.metrics_listen == Address("0.0.0.0", 9100)
    env = {"WORKCELL_METRICS_LISTEN": "127.0.0.1:0"}
    assert parse_config([], environ=env).metrics_listen == Address("127.0.0.1", 0)
    assert parse_config([], environ={"WORKCELL_METRICS_LISTEN": ""}).metrics_listen is None


async def test_every_command_is_counted_once_by_its_outcome(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    manipulator = start_manipulator(journal, "--metrics-listen=127.0.0.1:0")
    with running(manipulator):
        port = int(manipulator.wait_for_line(r"metrics on 127\.0\.0\.1:(\d+)").group(1))
        assert manipulator.port is not None
        start = await scrape(port)
        assert start[f"{P}open_connections"] == 0
        assert start[f"{P}connections_total"] == 0
        # Every reason is exported from the start (at 0): rules need no absent().
        assert all(start[refused(reason)] == 0 for reason in REASONS)
        assert start[failed("journal_displaced")] == start[failed("journal_error")] == 0
        assert start[f"{P}journal_fsync_seconds_count"] == 0

        client = await Client.connect(manipulator.port)
        await client.send(*(make_command(i, origin=ORIGIN_A, epoch=2) for i in (1, 2, 3, 5)))
        assert await client.acks_for(4) == [1, 2, 3, 5]
        await client.send(make_command(2, origin=ORIGIN_A, epoch=2))  # a resend
        assert await client.ack() == 2
        samples = await scrape(port)
        assert samples[f"{P}open_connections"] == 1
        assert samples[f"{P}connections_total"] == 1
        assert samples[f"{P}commands_received_total"] == 5
        assert samples[f"{P}commands_journaled_total"] == 4
        assert samples[f"{P}commands_duplicate_total"] == 1
        # One fsync per line journaled, none for the resend.
        assert samples[f"{P}journal_fsync_seconds_count"] == 4
        assert samples[f'{P}journal_fsync_seconds_bucket{{le="+Inf"}}'] == 4
        assert samples[f"{P}journal_fsync_seconds_sum"] > 0

        # A different command 5 (conflict), and 6 behind it on the same connection.
        other = make_command(5, command_pb2.STATUS_DOWN, origin=ORIGIN_A, epoch=2)
        await client.send(other, make_command(6, origin=ORIGIN_A, epoch=2))
        assert [(await client.reply()).error != "" for _ in range(2)] == [True, True]
        await client.send(make_command(4, origin=ORIGIN_A, epoch=2))  # skipped: below 5
        assert (await client.reply()).error
        await client.send(make_command(6, origin=ORIGIN_A, epoch=1))  # a deposed leader
        assert (await client.reply()).superseded_by_epoch == 2
        samples = await scrape(port)
        assert {reason: samples[refused(reason)] for reason in REASONS} == {
            "conflict": 1,
            "behind_refused": 1,
            "skipped_id": 1,
            "fenced": 1,
        }
        assert samples[f"{P}commands_received_total"] == 9 == outcomes(samples)
        assert samples[f"{P}commands_journaled_total"] == 4

        # A second connection; a bad frame closes it.
        second = await Client.connect(manipulator.port)
        await scrape_until(port, lambda s: s[f"{P}open_connections"] == 2)
        await second.send(encode_frame(command_pb2.CommandAck(command_id=1)))  # not a Command
        await second.expect_eof()
        await second.close()
        samples = await scrape_until(port, lambda s: s[f"{P}open_connections"] == 1)
        assert samples[f"{P}connections_total"] == 2
        assert samples[f"{P}bad_frames_total"] == 1
        assert samples[f"{P}commands_received_total"] == 9

        # The journal deleted under the running manipulator: nothing is
        # acknowledged, the connection is closed, the command counted as failed.
        # (On a new connection: on this one 6 would still wait behind the refused 4.)
        await client.close()
        third = await Client.connect(manipulator.port)
        await asyncio.to_thread(journal.unlink)
        await third.send(make_command(6, origin=ORIGIN_A, epoch=2))
        await third.expect_eof()
        await third.close()
        samples = await scrape_until(port, lambda s: s[f"{P}open_connections"] == 0)
        assert samples[f"{P}connections_total"] == 3
        assert samples[failed("journal_displaced")] == 1
        assert samples[f"{P}commands_received_total"] == 10 == outcomes(samples)
        assert samples[f"{P}journal_fsync_seconds_count"] == 4
        assert manipulator.stop() == 0, manipulator.output()
    with pytest.raises(urllib.error.URLError):  # the endpoint stopped with the process
        await scrape(port)


def test_a_metrics_port_in_use_fails_the_start_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        manipulator = start_manipulator(
            tmp_path / "journal.jsonl", f"--metrics-listen=127.0.0.1:{port}", wait_listening=False
        )
        with running(manipulator):
            assert manipulator.wait() == 1
    output = manipulator.output()
    assert f"cannot serve metrics on 127.0.0.1:{port}" in output
    assert len(output.splitlines()) <= 2, output  # the journal's line, then this one
    assert "listening on" not in output
    assert "Traceback" not in output
