"""``python -m sensor``: create readings on an absolute schedule, stream them to the controller."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import sys
import time
import uuid
from collections.abc import Sequence

import uvloop

from sensor.config import SensorConfig, parse_config
from sensor.delivery import Delivery
from sensor.metrics import SensorCollector, sensor_registry
from sensor.pacing import Pacer, Schedule
from sensor.profiles import Profile, make_profile
from sensor.progress import Counters, ProgressReporter
from workcell.logs import configure_logging
from workcell.metrics_http import MetricsEndpoint
from workcell.timeconv import Clock, now_us, to_timestamp
from workcell.v1 import telemetry_pb2

log = logging.getLogger("sensor")

# After SIGTERM/SIGINT, how long to keep trying to deliver what is held.
STOP_FLUSH_SECONDS = 5.0


class ReadingFactory:
    """Makes reading number ``seq`` of this run, stamped with its creation time."""

    def __init__(
        self, sensor_id: str, boot_id: str, profile: Profile, clock: Clock = now_us
    ) -> None:
        self.sensor_id = sensor_id
        self.boot_id = boot_id
        self._profile = profile
        self._clock = clock
        self.created = 0

    def __call__(self, seq: int) -> telemetry_pb2.Reading:
        created_us = self._clock()
        self.created += 1
        return telemetry_pb2.Reading(
            sensor_id=self.sensor_id,
            boot_id=self.boot_id,
            seq=seq,
            payload=self._profile(created_us),
            timestamp=to_timestamp(created_us),
        )


# The event loop's timers have a resolution of 1 ms (uvloop/libuv) and may fire
# that much early; a reading due within it is taken on that wakeup rather than
# after a run of zero-delay sleeps (about ten wakeups per reading at 300/s).
TIMER_SLACK_SECONDS = 0.001


async def generate(pacer: Pacer, make_reading: ReadingFactory, delivery: Delivery) -> None:
    """Create each reading in its schedule slot (all overdue ones at once) until the pacer ends.

    A reading is created at most :data:`TIMER_SLACK_SECONDS` before its slot;
    the schedule itself stays absolute, so the rate does not drift. The work
    runs in a timer callback, not a task that sleeps: one wakeup per reading
    costs less that way, which is most of a sensor's CPU at its nominal rate.
    """
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()
    timer: asyncio.TimerHandle | None = None

    def tick() -> None:
        nonlocal timer
        try:
            for index in pacer.take_due(time.monotonic() + TIMER_SLACK_SECONDS):
                delivery.add(make_reading(index + 1))
            delay = pacer.delay(time.monotonic())
        except Exception as exc:  # surfaces from the await below, as in a task
            finished.set_exception(exc)
            return
        if math.isinf(delay):
            finished.set_result(None)
        else:
            timer = loop.call_later(delay, tick)

    tick()
    try:
        await finished
    finally:
        if timer is not None:
            timer.cancel()


def reading_limit(config: SensorConfig) -> int | None:
    """How many readings to create: ``--count``, those due within ``--duration``, or no end."""
    limit = config.count
    if config.duration is not None:
        in_duration = Schedule(config.rate, 0.0).due_before(config.duration)
        limit = in_duration if limit is None else min(limit, in_duration)
    return limit


async def _until_first(*aws: asyncio.Future[object] | asyncio.Task[object]) -> None:
    await asyncio.wait(aws, return_when=asyncio.FIRST_COMPLETED)


async def run_sensor(config: SensorConfig) -> int:
    """Run one sensor until its count or duration is done, or until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    boot_id = uuid.uuid4().hex
    limit = reading_limit(config)
    profile = make_profile(
        config.profile, seed=config.seed, step_at_us=config.step_at.resolve(now_us())
    )
    make_reading = ReadingFactory(config.sensor_id, boot_id, profile)
    log.info(
        "sensor %s starting: controller=%s (%s) rate=%g/s profile=%s seed=%d batch=%d boot_id=%s",
        config.sensor_id,
        config.controller,
        config.tls.describe("client"),
        config.rate,
        config.profile,
        config.seed,
        config.batch,
        boot_id,
    )

    delivery = Delivery(
        config.controller.uri,
        batch=config.batch,
        capacity=config.buffer,
        stream_seconds=config.stream_seconds,
        tls=config.tls,
        # round_robin over the nodes: a stream on a node that dies fails, and
        # its readings are resent on the next stream, which gRPC gives to a live node.
        channel_options=config.controller.options,
    )

    def counters() -> Counters:
        return Counters(
            created=make_reading.created,
            sent=delivery.sent,
            acked=delivery.acked,
            buffered=delivery.buffered,
            dropped=delivery.dropped,
            reconnects=delivery.reconnects,
            stale=delivery.stale,
            rejected=delivery.rejected,
            undelivered=delivery.undelivered,
        )

    reporter = ProgressReporter(
        config.sensor_id,
        counters,
        bar=config.progress and sys.stderr.isatty(),
        total=limit,
    )
    metrics: MetricsEndpoint | None = None
    if config.metrics_listen is not None:
        collector = SensorCollector(config.sensor_id, counters)
        metrics = MetricsEndpoint(sensor_registry(collector))
        try:
            metrics.start(config.metrics_listen)
        except OSError as exc:
            log.error("%s", exc)
            return 1
    try:
        return await _run(config, make_reading, delivery, reporter, limit, stop)
    finally:
        if metrics is not None:
            await metrics.close()


async def _run(
    config: SensorConfig,
    make_reading: ReadingFactory,
    delivery: Delivery,
    reporter: ProgressReporter,
    limit: int | None,
    stop: asyncio.Event,
) -> int:
    async with delivery:
        stopped = asyncio.create_task(stop.wait())
        # The schedule starts now, after the set-up, so it starts without a backlog.
        pacer = Pacer(Schedule(config.rate, time.monotonic()), limit)
        generator = asyncio.create_task(generate(pacer, make_reading, delivery))
        reporting = asyncio.create_task(reporter.run())
        try:
            await _until_first(generator, stopped)
            if generator.done():
                generator.result()
            else:
                generator.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await generator
            delivery.flush()
            if not stop.is_set():
                # --count/--duration: wait for every acknowledgement, unless told to stop.
                draining = asyncio.create_task(delivery.drain())
                await _until_first(draining, stopped)
                draining.cancel()
            if delivery.undelivered:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(delivery.drain(), STOP_FLUSH_SECONDS)
        finally:
            for task in (generator, reporting, stopped):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if delivery.undelivered:
            log.warning(
                "sensor %s: %d readings left undelivered", config.sensor_id, delivery.undelivered
            )
    # created = acked + rejected + dropped + undelivered (docs/services.md: the sensor's counters)
    log.info(
        "sensor %s: stopped: created=%d sent=%d acked=%d dropped=%d undelivered=%d rejected=%d",
        config.sensor_id,
        make_reading.created,
        delivery.sent,
        delivery.acked,
        delivery.dropped,
        delivery.undelivered,
        delivery.rejected,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, set up logging, run the sensor; the exit status."""
    config = parse_config(argv)
    configure_logging(config.log_level, config.log_format, native_stderr=True)
    return uvloop.run(run_sensor(config))


if __name__ == "__main__":
    sys.exit(main())
