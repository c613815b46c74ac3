"""``python -m sensor``: create readings on an absolute schedule, stream them to the controller."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import secrets
import signal
import sys
import time
import uuid
from collections.abc import Mapping, Sequence

import uvloop

from sensor.config import SensorConfig, default_sensor_id, sensor_id, step_at
from sensor.delivery import Delivery
from sensor.metrics import SensorCollector, sensor_registry
from sensor.pacing import Pacer, Schedule
from sensor.profiles import PROFILE_NAMES, Profile, make_profile
from sensor.progress import Counters, ProgressReporter
from workcell.flags import (
    FlagParser,
    address,
    duration_seconds,
    positive_float,
    positive_int,
)
from workcell.logs import add_log_flags, configure_logging
from workcell.metrics_http import MetricsEndpoint, add_metrics_flag
from workcell.timeconv import Clock, now_us, to_timestamp
from workcell.tls import add_tls_flags, parse_tls
from workcell.v1 import telemetry_pb2

log = logging.getLogger("sensor")

# After SIGTERM/SIGINT, how long to keep trying to deliver what is held.
STOP_FLUSH_SECONDS = 5.0

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def _profile_name(text: str) -> str:
    if text not in PROFILE_NAMES:
        raise argparse.ArgumentTypeError(
            f"expected one of {', '.join(PROFILE_NAMES)}, got {text!r}"
        )
    return text


def _positive_duration(text: str) -> float:
    seconds = duration_seconds(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration > 0, got {text!r}")
    return seconds


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def build_parser(environ: Mapping[str, str] | None = None) -> FlagParser:
    """The sensor's flags, each also read from its ``WORKCELL_*`` variable."""
    parser = FlagParser(
        prog="python -m sensor",
        description="Stream readings to the controller at a steady rate.",
        environ=environ,
    )
    parser.flag(
        "--controller",
        env="WORKCELL_CONTROLLER_ADDRESS",
        default="127.0.0.1:50051",
        type=address,
        help="controller gRPC address HOST:PORT",
    )
    parser.flag(
        "--sensor-id",
        env="WORKCELL_SENSOR_ID",
        default=default_sensor_id(),
        type=sensor_id,
        help="this sensor's id: 1-64 characters from [A-Za-z0-9._-]",
    )
    parser.flag(
        "--rate",
        env="WORKCELL_SENSOR_RATE",
        default="300",
        type=positive_float,
        help="readings per second",
    )
    parser.flag(
        "--count",
        env="WORKCELL_SENSOR_COUNT",
        type=positive_int,
        help="send this many readings, wait until all are acknowledged, exit",
    )
    parser.flag(
        "--duration",
        env="WORKCELL_SENSOR_DURATION",
        type=_positive_duration,
        help="generate for this long (5, 500ms, 10m), deliver what is held, exit",
    )
    parser.flag(
        "--profile",
        env="WORKCELL_SENSOR_PROFILE",
        default="regime",
        type=_profile_name,
        help=f"payload signal: {', '.join(PROFILE_NAMES)}",
    )
    parser.flag(
        "--seed",
        env="WORKCELL_SENSOR_SEED",
        type=_seed,
        help="random seed of the profile (default: random, logged at start)",
    )
    parser.flag(
        "--step-at",
        env="WORKCELL_SENSOR_STEP_AT",
        default="+10",
        type=step_at,
        help="step profile: Unix time in seconds, or +S seconds after start",
    )
    parser.flag(
        "--batch",
        env="WORKCELL_SENSOR_BATCH",
        default="1",
        type=positive_int,
        help="readings per message",
    )
    parser.flag(
        "--stream-seconds",
        env="WORKCELL_SENSOR_STREAM_SECONDS",
        default="1.0",
        type=positive_float,
        help="end each stream (and get it acknowledged) after this long",
    )
    parser.flag(
        "--buffer",
        env="WORKCELL_SENSOR_BUFFER",
        default="100000",
        type=positive_int,
        help="most unacknowledged readings kept (then the oldest are dropped)",
    )
    parser.flag(
        "--no-progress",
        env="WORKCELL_SENSOR_NO_PROGRESS",
        action="store_true",
        help="no progress bar (the progress log line every 5 s stays)",
    )
    add_log_flags(parser)
    add_metrics_flag(parser)
    add_tls_flags(parser, side="client", what="controller: ")
    return parser


def parse_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> SensorConfig:
    """Flags and environment to a :class:`SensorConfig` (exit 2 with one line on a bad value)."""
    parser = build_parser(environ)
    args = parser.parse_args(argv)
    no_progress = args.no_progress
    if isinstance(no_progress, str):  # from the environment: store_true leaves it as text
        if no_progress.strip().lower() not in _TRUE + _FALSE:
            parser.error(
                f"argument --no-progress: expected a boolean (1/0, true/false), got {no_progress!r}"
            )
        no_progress = no_progress.strip().lower() in _TRUE
    if args.buffer < args.batch:
        parser.error(
            f"argument --buffer: must be at least --batch ({args.batch}), got {args.buffer}"
        )
    tls = parse_tls(parser, args, side="client")
    return SensorConfig(
        controller=args.controller,
        sensor_id=args.sensor_id,
        rate=args.rate,
        count=args.count,
        duration=args.duration,
        profile=args.profile,
        seed=secrets.randbelow(2**32) if args.seed is None else args.seed,
        step_at=args.step_at,
        batch=args.batch,
        stream_seconds=args.stream_seconds,
        buffer=args.buffer,
        progress=not no_progress,
        log_level=args.log_level,
        log_format=args.log_format,
        tls=tls,
        metrics_listen=args.metrics_listen,
    )


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
        str(config.controller),
        batch=config.batch,
        capacity=config.buffer,
        stream_seconds=config.stream_seconds,
        tls=config.tls,
    )

    def counters() -> Counters:
        return Counters(
            created=make_reading.created,
            sent=delivery.sent,
            acked=delivery.acked,
            buffered=delivery.buffered,
            dropped=delivery.dropped,
            reconnects=delivery.reconnects,
        )

    reporter = ProgressReporter(
        config.sensor_id,
        counters,
        bar=config.progress and sys.stderr.isatty(),
        total=limit,
    )
    metrics: MetricsEndpoint | None = None
    if config.metrics_listen is not None:
        collector = SensorCollector(config.sensor_id, counters, lambda: reporter.rate)
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
            if delivery.buffered:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(delivery.drain(), STOP_FLUSH_SECONDS)
        finally:
            for task in (generator, reporting, stopped):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if delivery.buffered:
            log.warning(
                "sensor %s: %d readings left undelivered", config.sensor_id, delivery.buffered
            )
    log.info(
        "sensor %s: stopped: created=%d sent=%d acked=%d dropped=%d undelivered=%d",
        config.sensor_id,
        make_reading.created,
        delivery.sent,
        delivery.acked,
        delivery.dropped,
        delivery.buffered,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, set up logging, run the sensor; the exit status."""
    config = parse_config(argv)
    configure_logging(config.log_level, config.log_format)
    return uvloop.run(run_sensor(config))


if __name__ == "__main__":
    sys.exit(main())
