"""``python -m sensor --metrics-listen``: a real sensor process, its real ``/metrics`` endpoint.

The sensor streams to the in-test Telemetry server; the test scrapes the endpoint
over HTTP and parses it with ``prometheus_client.parser``.
"""

from __future__ import annotations

import asyncio
import signal
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable

import pytest
from grpc import aio

from sensor.config import parse_config
from tests.scrape import metric_families, poll_until
from tests.test_sensor_delivery import Received, RecordingTelemetry
from tests.test_sensor_process import SensorProcess, final_counts
from workcell.flags import Address
from workcell.v1 import telemetry_pb2, telemetry_pb2_grpc

COUNTERS = ("created", "sent", "acknowledged", "rejected", "dropped", "reconnects")
# No pre-computed rate gauge (issue 13): Prometheus rates created_total itself.
GAUGES = ("buffered", "undelivered")


class HeldTelemetry(RecordingTelemetry):
    """Answers a stream only while ``open`` is set; counts the readings its answers cover."""

    def __init__(self, received: Received) -> None:
        super().__init__(received)
        self.open = asyncio.Event()
        self.open.set()
        self.answered = 0

    async def StreamReadings(
        self,
        request_iterator: AsyncIterator[telemetry_pb2.StreamReadingsRequest],
        context: aio.ServicerContext[
            telemetry_pb2.StreamReadingsRequest, telemetry_pb2.StreamReadingsResponse
        ],
    ) -> telemetry_pb2.StreamReadingsResponse:
        response = await super().StreamReadings(request_iterator, context)
        await self.open.wait()
        self.answered += response.stored + response.duplicates
        return response


async def scrape(port: int, sensor_id: str) -> dict[str, float]:
    """Every ``workcell_sensor_*`` sample of ``sensor_id``, by name without the prefix."""
    values: dict[str, float] = {}
    for family in await asyncio.to_thread(metric_families, port):
        if not family.name.startswith("workcell_sensor_"):
            continue
        expected = (
            "counter" if family.name.removeprefix("workcell_sensor_") in COUNTERS else "gauge"
        )
        assert family.type == expected, family
        for sample in family.samples:
            assert sample.labels == {"sensor_id": sensor_id}, sample
            values[sample.name.removeprefix("workcell_sensor_")] = sample.value
    return values


async def scrape_until(
    port: int, sensor_id: str, done: Callable[[dict[str, float]], bool]
) -> dict[str, float]:
    """Scrape every 50 ms (for up to 20 s) until ``done`` holds for a scrape; that scrape."""
    return await poll_until(lambda: scrape(port, sensor_id), done)


async def serve(telemetry: HeldTelemetry, port: int = 0) -> tuple[aio.Server, int]:
    """A started grpc.aio server for ``telemetry`` on 127.0.0.1 (``port`` 0: any free port)."""
    server = aio.server()
    telemetry_pb2_grpc.add_TelemetryServicer_to_server(telemetry, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    assert bound, f"could not bind 127.0.0.1:{port}"
    await server.start()
    return server, bound


async def start_sensor(port: int, sensor_id: str, *args: str) -> tuple[SensorProcess, int]:
    sensor = await SensorProcess.start(
        "--controller", f"127.0.0.1:{port}", "--sensor-id", sensor_id,
        "--metrics-listen", "127.0.0.1:0", "--no-progress", *args,
    )  # fmt: skip
    match = await sensor.wait_for_line(r"metrics on 127\.0\.0\.1:(\d+)")
    return sensor, int(match.group(1))


def test_metrics_are_off_unless_asked_for() -> None:
    assert parse_config(["--sensor-id", "s1"], environ={}).metrics_listen is None
    assert parse_config([], environ={"WORKCELL_METRICS_LISTEN": ""}).metrics_listen is None
    from_env = parse_config([], environ={"WORKCELL_METRICS_LISTEN": "127.0.0.1:0"})
    assert from_env.metrics_listen == Address("127.0.0.1", 0)
    flag = parse_config(["--metrics-listen", "0.0.0.0:9101"], environ={})
    assert flag.metrics_listen == Address("0.0.0.0", 9101)


def test_bad_metrics_address_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_config(["--metrics-listen", "nope"], environ={})
    assert exited.value.code == 2
    assert "--metrics-listen" in capsys.readouterr().err


async def test_count_run_every_metric_and_endpoint_closed_on_exit() -> None:
    received = Received()
    telemetry = HeldTelemetry(received)
    telemetry.open.clear()  # hold every answer: nothing is acknowledged yet
    server, port = await serve(telemetry)
    try:
        sensor, metrics_port = await start_sensor(
            port, "metrics-1", "--count", "200", "--rate", "1000", "--stream-seconds", "0.2"
        )
        values = await scrape_until(metrics_port, "metrics-1", lambda v: v["sent_total"] == 200)
        assert values["acknowledged_total"] == 0
        assert values["buffered"] == values["undelivered"] == 200
        assert values["created_total"] == 200
        assert values["dropped_total"] == values["rejected_total"] == 0
        assert values["reconnects_total"] == 0
        assert set(values) == {f"{name}_total" for name in COUNTERS} | set(GAUGES)
        telemetry.open.set()  # answer: the sensor gets everything acknowledged and exits
        code = await sensor.finish()
    finally:
        await server.stop(None)
    assert code == 0, sensor.output
    assert final_counts(sensor.output)["acked"] == telemetry.answered == 200
    with pytest.raises(urllib.error.URLError):  # the endpoint stopped with the sensor
        await asyncio.to_thread(metric_families, metrics_port)


async def test_counts_follow_acknowledgements_through_an_outage() -> None:
    received = Received()
    telemetry = HeldTelemetry(received)
    server, port = await serve(telemetry)
    sensor, metrics_port = await start_sensor(
        port, "metrics-2", "--rate", "400", "--stream-seconds", "0.2"
    )
    try:
        before = await scrape_until(
            metrics_port, "metrics-2", lambda v: v["acknowledged_total"] >= 200
        )
        assert before["reconnects_total"] == 0
        telemetry.open.clear()  # answers stop: acknowledged settles at what was answered
        held = await scrape_until(
            metrics_port, "metrics-2", lambda v: v["acknowledged_total"] == telemetry.answered
        )
        assert held["sent_total"] > held["acknowledged_total"]
        assert held["buffered"] >= held["sent_total"] - held["acknowledged_total"]
        await server.stop(None)  # the held streams fail: the sensor reconnects and keeps all
        down = await scrape_until(metrics_port, "metrics-2", lambda v: v["reconnects_total"] >= 2)
        assert down["acknowledged_total"] == telemetry.answered
        assert down["dropped_total"] == 0
        await scrape_until(metrics_port, "metrics-2", lambda v: v["reconnects_total"] >= 4)
        still_down = await scrape(metrics_port, "metrics-2")
        # Nothing reaches a controller: nothing more is sent (it used to rise).
        assert still_down["sent_total"] == down["sent_total"]
        assert still_down["created_total"] > down["created_total"]

        telemetry.open.set()
        server, _ = await serve(telemetry, port)  # back: the held readings are resent
        await scrape_until(
            metrics_port,
            "metrics-2",
            lambda v: v["acknowledged_total"] > down["acknowledged_total"],
        )
        sensor.process.send_signal(signal.SIGTERM)
        code = await sensor.finish()
    finally:
        if sensor.process.returncode is None:
            sensor.process.kill()
            await sensor.process.wait()
        await server.stop(None)
    assert code == 0, sensor.output
    counts = final_counts(sensor.output)
    assert counts["acked"] == counts["created"] == counts["sent"]
    assert counts["dropped"] == counts["rejected"] == counts["undelivered"] == 0
