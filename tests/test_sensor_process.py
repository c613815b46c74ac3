"""``python -m sensor`` as a real process against the in-test Telemetry server."""

from __future__ import annotations

import asyncio
import re
import signal
import sys

from tests.processes import ROOT
from tests.test_sensor_delivery import Received, telemetry_server


class SensorProcess:
    """A ``python -m sensor`` child of this event loop (so the in-test server keeps serving)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []

    @classmethod
    async def start(cls, *args: str) -> SensorProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sensor",
            *args,
            cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def wait_for_line(self, pattern: str) -> re.Match[str]:
        """Read stderr until a line matches ``pattern``."""
        assert self.process.stderr is not None
        regex = re.compile(pattern)
        async with asyncio.timeout(30):
            while line := await self.process.stderr.readline():
                self.lines.append(line.decode().rstrip("\n"))
                if match := regex.search(self.lines[-1]):
                    return match
        raise AssertionError(f"no line matching {pattern!r}:\n{self.output}")

    async def finish(self) -> int:
        """Read the rest of stderr and return the exit code."""
        assert self.process.stderr is not None
        try:
            async with asyncio.timeout(60):
                rest = await self.process.stderr.read()
                self.lines.extend(rest.decode().splitlines())
                return await self.process.wait()
        except BaseException:
            self.process.kill()
            await self.process.wait()
            raise

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


def final_counts(output: str) -> dict[str, int]:
    match = re.search(
        r"stopped: created=(\d+) sent=(\d+) acked=(\d+) dropped=(\d+) undelivered=(\d+) "
        r"rejected=(\d+)",
        output,
    )
    assert match, output
    names = ("created", "sent", "acked", "dropped", "undelivered", "rejected")
    counts = dict(zip(names, map(int, match.groups()), strict=True))
    # Every reading made is exactly one of these.
    assert counts["created"] == sum(
        counts[k] for k in ("acked", "rejected", "dropped", "undelivered")
    ), counts
    return counts


async def test_count_run_delivers_every_seq_and_exits_0() -> None:
    received = Received()
    async with telemetry_server(received) as (_, port):
        sensor = await SensorProcess.start(
            "--controller", f"127.0.0.1:{port}", "--sensor-id", "proc-1",
            "--count", "300", "--rate", "1000", "--no-progress",
        )  # fmt: skip
        code = await sensor.finish()
    assert code == 0, sensor.output
    assert received.seqs("proc-1") == list(range(1, 301))
    assert len({boot for (sid, boot, _) in received.stored if sid == "proc-1"}) == 1
    assert final_counts(sensor.output) == {
        "created": 300, "sent": 300, "acked": 300, "dropped": 0, "undelivered": 0, "rejected": 0,
    }  # fmt: skip


async def test_duration_run_with_batches_and_step_profile() -> None:
    received = Received()
    async with telemetry_server(received) as (_, port):
        sensor = await SensorProcess.start(
            "--controller", f"127.0.0.1:{port}", "--sensor-id", "proc-2",
            "--duration", "1", "--rate", "200", "--batch", "7", "--profile", "step",
            "--step-at", "+0.5", "--seed", "3", "--no-progress",
        )  # fmt: skip
        code = await sensor.finish()
    assert code == 0, sensor.output
    assert received.seqs("proc-2") == list(range(1, 201))
    payloads = [received.stored[key] for key in sorted(received.stored, key=lambda k: k[2])]
    assert max(payloads[:90]) < 150 < min(payloads[110:])  # low, then high after +0.5 s
    assert received.messages == 29  # 28 full batches of 7 and the flushed 4


async def test_sigterm_delivers_what_was_created_and_exits_0() -> None:
    received = Received()
    async with telemetry_server(received) as (_, port):
        sensor = await SensorProcess.start(
            "--controller", f"127.0.0.1:{port}", "--sensor-id", "proc-3",
            "--rate", "500", "--no-progress",
        )  # fmt: skip
        await sensor.wait_for_line("starting")
        while len(received.stored) < 200:
            received.changed.clear()
            await asyncio.wait_for(received.changed.wait(), 20)
        sensor.process.send_signal(signal.SIGTERM)
        code = await sensor.finish()
    assert code == 0, sensor.output
    counts = final_counts(sensor.output)
    assert counts["created"] >= 200
    assert counts["acked"] == counts["created"]
    assert received.seqs("proc-3") == list(range(1, counts["created"] + 1))


async def test_sigterm_with_controller_down_gives_up_after_a_while() -> None:
    received = Received()
    async with telemetry_server(received) as (server, port):
        await server.stop(None)  # a port where nobody listens any more
    sensor = await SensorProcess.start(
        "--controller", f"127.0.0.1:{port}", "--sensor-id", "proc-4",
        "--rate", "100", "--no-progress",
    )  # fmt: skip
    await sensor.wait_for_line("delivery to .* failed")
    sensor.process.send_signal(signal.SIGTERM)
    code = await sensor.finish()
    assert code == 0, sensor.output
    counts = final_counts(sensor.output)
    assert counts["acked"] == 0
    assert counts["undelivered"] == counts["created"] > 0
    assert re.search(rf"{counts['created']} readings left undelivered", sensor.output)
