"""``workcell.v1.Sensors``: the sensor runs this node stores readings of, from memory."""

from __future__ import annotations

from typing import Protocol

import grpc
from google.protobuf.duration_pb2 import Duration

from controller.sensor_runs import RunStatus
from workcell.timeconv import Clock, now_us, to_timestamp
from workcell.v1 import sensors_pb2, sensors_pb2_grpc

__all__ = ["REUSE_US", "RunSource", "SensorsServicer", "run_message"]

REUSE_US = 500_000
"""An answer is given again to whoever asks within this long (µs): a snapshot costs in
proportion to the runs (tens of ms at 10,000), watchers ask every second."""


class RunSource(Protocol):
    """The node's per-run tallies (the writer's :class:`~controller.sensor_runs.SensorRuns`)."""

    period_us: int

    def snapshot(self, now_us: int) -> list[RunStatus]: ...

    def current_window_start(self, now_us: int) -> int: ...


def run_message(run: RunStatus) -> sensors_pb2.SensorRun:
    """The wire form of one run's status."""
    return sensors_pb2.SensorRun(
        sensor_id=run.sensor_id,
        boot_id=run.boot_id,
        first_received_at=to_timestamp(run.first_received_at),
        last_received_at=to_timestamp(run.last_received_at),
        last_reading_at=to_timestamp(run.last_reading_at),
        current_window_readings=run.current_window,
        last_window_readings=run.last_window,
        stored=run.stored,
        stale=run.stale,
        duplicates=run.duplicates,
        live=run.live,
    )


class SensorsServicer(sensors_pb2_grpc.SensorsServicer):
    """Answers ListRuns from the tallies the writer keeps as its groups settle."""

    def __init__(
        self, runs: RunSource, *, node: str, clock: Clock = now_us, reuse_us: int = REUSE_US
    ) -> None:
        self._runs = runs
        self._node = node
        self._clock = clock
        self._reuse_us = reuse_us
        self._answer: tuple[int, sensors_pb2.ListRunsResponse] | None = None

    async def ListRuns(
        self,
        request: sensors_pb2.ListRunsRequest,
        context: grpc.aio.ServicerContext[
            sensors_pb2.ListRunsRequest, sensors_pb2.ListRunsResponse
        ],
    ) -> sensors_pb2.ListRunsResponse:
        now = self._clock()
        if self._answer is not None and 0 <= now - self._answer[0] < self._reuse_us:
            # Many watchers asking every second cost one snapshot per REUSE_US.
            return self._answer[1]
        period = Duration()
        period.FromMicroseconds(self._runs.period_us)
        answer = sensors_pb2.ListRunsResponse(
            node=self._node,
            observed_at=to_timestamp(now),
            period=period,
            current_window_start=to_timestamp(self._runs.current_window_start(now)),
            runs=[run_message(run) for run in self._runs.snapshot(now)],
        )
        self._answer = (now, answer)
        return answer
