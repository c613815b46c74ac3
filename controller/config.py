"""The controller's settings: flags, each also read from a ``WORKCELL_*`` variable."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from controller.api.admission import StreamLimits
from controller.storage.writer import DEFAULT_COMMIT_INTERVAL
from workcell.flags import (
    Address,
    FlagParser,
    address,
    database_url,
    duration_between,
    float_between,
    int_between,
    probability,
)
from workcell.logs import add_log_flags
from workcell.metrics_http import add_metrics_flag
from workcell.tls import PLAINTEXT, TlsConfig, add_tls_flags, parse_tls

__all__ = ["DEFAULT_DATABASE", "ControllerConfig", "parse_config"]

DEFAULT_DATABASE = "sqlite+aiosqlite:///data/workcell.db"
DEFAULT_LISTEN = Address("127.0.0.1", 50051)
DEFAULT_MANIPULATOR = Address("127.0.0.1", 7700)
DEFAULT_STREAM_LIMITS = StreamLimits()
# The bounds of the numeric flags: outside them the controller cannot keep its
# promises (a period of 1 µs divides by zero, one of 1 ms falls behind at
# once; a retention of 1e300 s breaks every sweep), so they exit 2 at start.
DAY = 24 * 3600.0
# As users write it (README, compose); the dataclass holds it in seconds.
DEFAULT_RETAIN_READINGS = "24h"
MIN_PERIOD = 0.1
MAX_READINGS_BUFFER = 10_000_000
MAX_STREAMS = 100_000
# Payloads are int64: no difference of two means exceeds 2**64.
MAX_MIN_EFFECT = 2.0**64
MAX_CONFIRM = 1000


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    """Everything the controller is told at start; see ``--help`` for meanings."""

    listen: Address = DEFAULT_LISTEN
    manipulator: Address = DEFAULT_MANIPULATOR
    database: str = DEFAULT_DATABASE
    period: float = 5.0
    alpha: float = 0.05
    min_effect: float = 0.0
    """Guard: the least |difference of the means| that moves the status (0: off)."""
    confirm: int = 1
    """Guard: consecutive significant decisions one way before the status moves (1: off)."""
    grace: float = 3.0
    """The most a window waits past its end (or past the term's start) for the live
    sensors' readings (controller.decision.watermarks)."""
    sensor_idle: float = 2.0
    """Seconds of silence after which a sensor run stops holding windows back."""
    initial_status: str = "down"
    lease: float = 2.0
    """Seconds a leader's lease lasts without renewal (PostgreSQL; see controller.leadership)."""
    max_skew: float = 5.0
    shutdown_grace: float = 5.0
    ingest_buffer: int = 50_000
    commit_interval: float = DEFAULT_COMMIT_INTERVAL
    """The least seconds between two commit groups (controller.storage.writer)."""
    busy_timeout: float = 10.0
    retain_readings: float = 24 * 3600.0
    """Seconds raw readings are kept; 0 keeps them forever."""
    log_level: str = "INFO"
    log_format: str = "text"
    tls: TlsConfig = PLAINTEXT
    """The gRPC server's certificate, key and client CA (see :mod:`workcell.tls`)."""
    manipulator_tls: TlsConfig = PLAINTEXT
    """The manipulator link's CA, client certificate and key."""
    metrics_listen: Address | None = None
    """Where to serve Prometheus ``/metrics`` over HTTP; None: no endpoint."""
    stream_limits: StreamLimits = DEFAULT_STREAM_LIMITS
    """How many Telemetry streams may be open, and how long (``--max-streams`` ...)."""


def _status(text: str) -> str:
    value = text.strip().lower()
    if value not in ("up", "down"):
        raise argparse.ArgumentTypeError(f"expected 'up' or 'down', got {text!r}")
    return value


def parse_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> ControllerConfig:
    """Build the config from ``argv`` and ``environ``; bad values exit with status 2."""
    d = ControllerConfig()
    parser = FlagParser(
        prog="python -m controller",
        description="Stores sensor readings, decides the manipulator status every period, "
        "drives the manipulator and serves the command history over gRPC.",
        environ=environ,
    )
    parser.flag(
        "--listen",
        env="WORKCELL_CONTROLLER_LISTEN",
        default=str(d.listen),
        type=address,
        metavar="HOST:PORT",
        help="gRPC address to serve on (port 0 picks a free port)",
    )
    parser.flag(
        "--manipulator",
        env="WORKCELL_MANIPULATOR_ADDRESS",
        default=str(d.manipulator),
        type=address,
        metavar="HOST:PORT",
        help="the manipulator's TCP address",
    )
    parser.flag(
        "--database",
        env="WORKCELL_DATABASE",
        default=d.database,
        type=database_url,
        metavar="URL",
        help="sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DB",
    )
    parser.flag(
        "--retain-readings",
        env="WORKCELL_RETAIN_READINGS",
        default=DEFAULT_RETAIN_READINGS,
        type=duration_between(1, 3650 * DAY, zero=True),
        metavar="DURATION",
        help="raw readings older than this are deleted (commands and their window "
        "statistics are kept); e.g. 24h, 7d, 90m; 0 keeps readings forever",
    )
    parser.flag(
        "--period",
        env="WORKCELL_PERIOD",
        default=str(d.period),
        type=float_between(MIN_PERIOD, DAY),
        metavar="SECONDS",
        help="decision period in seconds",
    )
    parser.flag(
        "--alpha",
        env="WORKCELL_ALPHA",
        default=str(d.alpha),
        type=probability,
        help="significance level of the t-test",
    )
    parser.flag(
        "--min-effect",
        env="WORKCELL_MIN_EFFECT",
        default=str(d.min_effect),
        type=float_between(0, MAX_MIN_EFFECT),
        metavar="X",
        help="guard: a significant change moves the status only if the means differ by at "
        "least X payload units (0: off, the plain rule)",
    )
    parser.flag(
        "--confirm",
        env="WORKCELL_CONFIRM",
        default=str(d.confirm),
        type=int_between(1, MAX_CONFIRM),
        metavar="K",
        help="guard: the status moves only after K consecutive significant decisions in the "
        "same direction (1: off, the plain rule)",
    )
    parser.flag(
        "--grace",
        env="WORKCELL_GRACE",
        default=str(d.grace),
        type=float_between(0, 3600),
        metavar="SECONDS",
        help="the most seconds a window waits past its end for the readings of live "
        "sensors: it is decided as soon as every live sensor's committed readings have "
        "passed its end, at the latest this long after",
    )
    parser.flag(
        "--sensor-idle",
        env="WORKCELL_SENSOR_IDLE",
        default=str(d.sensor_idle),
        type=float_between(0, 3600),
        metavar="SECONDS",
        help="a sensor silent this long stops holding decisions back",
    )
    parser.flag(
        "--initial-status",
        env="WORKCELL_INITIAL_STATUS",
        default=d.initial_status,
        type=_status,
        metavar="up|down",
        help="status before the first decision on an empty database",
    )
    parser.flag(
        "--lease",
        env="WORKCELL_LEASE",
        default=str(d.lease),
        type=float_between(0.2, 60),
        metavar="SECONDS",
        help="PostgreSQL with several nodes: how long a leader's term lasts unrenewed; "
        "a standby takes over within about this after the leader dies or is cut off",
    )
    parser.flag(
        "--max-skew",
        env="WORKCELL_MAX_SKEW",
        default=str(d.max_skew),
        type=float_between(0, 3600),
        metavar="SECONDS",
        help="how far in the future (seconds) a reading's timestamp may be",
    )
    parser.flag(
        "--shutdown-grace",
        env="WORKCELL_SHUTDOWN_GRACE",
        default=str(d.shutdown_grace),
        type=float_between(0, 600),
        metavar="SECONDS",
        help="seconds open streams get to finish on SIGTERM/SIGINT",
    )
    parser.flag(
        "--ingest-buffer",
        env="WORKCELL_INGEST_BUFFER",
        default=str(d.ingest_buffer),
        type=int_between(1, MAX_READINGS_BUFFER),
        metavar="READINGS",
        help="readings waiting for the database writer before streams are slowed",
    )
    parser.flag(
        "--commit-interval",
        env="WORKCELL_COMMIT_INTERVAL",
        default=str(d.commit_interval),
        type=float_between(0, 1),
        metavar="SECONDS",
        help="the least time between two commits of the readings received: longer "
        "batches more readings a commit (less CPU and disk) and delays each "
        "acknowledgement and decision by up to this much more",
    )
    parser.flag(
        "--busy-timeout",
        env="WORKCELL_BUSY_TIMEOUT",
        default=str(d.busy_timeout),
        type=float_between(0, 3600),
        metavar="SECONDS",
        help="how long a database write waits for a lock held elsewhere before it fails",
    )
    limits = d.stream_limits
    parser.flag(
        "--max-streams",
        env="WORKCELL_MAX_STREAMS",
        default=str(limits.max_streams),
        type=int_between(1, MAX_STREAMS),
        metavar="N",
        help="Telemetry streams open at once, in all; more are refused (RESOURCE_EXHAUSTED)",
    )
    parser.flag(
        "--max-streams-per-peer",
        env="WORKCELL_MAX_STREAMS_PER_PEER",
        default=str(limits.max_per_peer),
        type=int_between(1, MAX_STREAMS),
        metavar="N",
        help="Telemetry streams open at once from one host",
    )
    parser.flag(
        "--stream-idle-timeout",
        env="WORKCELL_STREAM_IDLE_TIMEOUT",
        default=str(limits.idle_timeout),
        type=duration_between(1, DAY),
        metavar="DURATION",
        help="end a Telemetry stream that sends nothing for this long (DEADLINE_EXCEEDED)",
    )
    parser.flag(
        "--stream-max-age",
        env="WORKCELL_STREAM_MAX_AGE",
        default=str(limits.max_age),
        type=duration_between(1, DAY),
        metavar="DURATION",
        help="end a Telemetry stream open longer than this (sensors end theirs every second)",
    )
    add_log_flags(parser)
    add_metrics_flag(parser)
    add_tls_flags(parser, side="server", what="gRPC server: ")
    add_tls_flags(parser, side="client", role="manipulator", what="manipulator link: ")
    ns = parser.parse_args(argv)
    tls = parse_tls(parser, ns, side="server")
    manipulator_tls = parse_tls(parser, ns, side="client", role="manipulator")
    return ControllerConfig(
        listen=ns.listen,
        manipulator=ns.manipulator,
        database=ns.database,
        period=ns.period,
        alpha=ns.alpha,
        min_effect=ns.min_effect,
        confirm=ns.confirm,
        grace=ns.grace,
        sensor_idle=ns.sensor_idle,
        initial_status=ns.initial_status,
        lease=ns.lease,
        max_skew=ns.max_skew,
        shutdown_grace=ns.shutdown_grace,
        ingest_buffer=ns.ingest_buffer,
        commit_interval=ns.commit_interval,
        busy_timeout=ns.busy_timeout,
        retain_readings=ns.retain_readings,
        log_level=ns.log_level,
        log_format=ns.log_format,
        tls=tls,
        manipulator_tls=manipulator_tls,
        metrics_listen=ns.metrics_listen,
        stream_limits=StreamLimits(
            max_streams=ns.max_streams,
            max_per_peer=ns.max_streams_per_peer,
            idle_timeout=ns.stream_idle_timeout,
            max_age=ns.stream_max_age,
        ),
    )
