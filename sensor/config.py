"""The sensor's configuration: its flags, read once at start, and the checks on their values."""

from __future__ import annotations

import argparse
import re
import secrets
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sensor.profiles import PROFILE_NAMES
from workcell.flags import (
    Address,
    FlagParser,
    duration_between,
    float_between,
    int_between,
)
from workcell.logs import add_log_flags
from workcell.metrics_http import add_metrics_flag
from workcell.targets import (
    GrpcTarget,
    Resolver,
    TargetError,
    grpc_target,
    parse_addresses,
    resolve_host,
)
from workcell.timeconv import US_PER_SECOND
from workcell.tls import PLAINTEXT, TlsConfig, add_tls_flags, parse_tls

__all__ = [
    "SENSOR_ID_PATTERN",
    "SensorConfig",
    "StepAt",
    "build_parser",
    "default_sensor_id",
    "parse_config",
    "sanitize_sensor_id",
    "sensor_id",
    "step_at",
]

# The controller rejects any other sensor id, so the sensor checks it at start.
SENSOR_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9._-]+")
MAX_SENSOR_ID = 64
# Bounds that keep a sensor workable. Above MAX_RATE one process cannot pace
# readings one per message (it spun at 100 % and missed SIGTERM at 1e6/s); a
# batch of MAX_BATCH readings of the longest ids is about 1.4 MB, well inside
# the controller's 4 MiB message limit (100,000 made 5.9 MB messages that were
# always refused); streams must end well before the controller's
# --stream-max-age (600 s by default).
MIN_RATE = 0.01
MAX_RATE = 10_000.0
MAX_COUNT = 10**12
MAX_DURATION = 3650 * 86400.0
MAX_BATCH = 10_000
MAX_STREAM_SECONDS = 300.0
MAX_BUFFER = 10_000_000


@dataclass(frozen=True)
class StepAt:
    """When the step profile steps: a Unix time, or ``seconds`` after the sensor starts."""

    seconds: float
    relative: bool

    def resolve(self, start_us: int) -> int:
        """The step time in microseconds since the epoch, for a sensor started at ``start_us``."""
        if self.relative:
            return start_us + round(self.seconds * US_PER_SECOND)
        return round(self.seconds * US_PER_SECOND)

    def __str__(self) -> str:
        return f"+{self.seconds:g}" if self.relative else f"{self.seconds:g}"


@dataclass(frozen=True)
class SensorConfig:
    """Everything ``python -m sensor`` needs, as values."""

    controller: GrpcTarget
    """The controller node(s): one address, several, or one DNS name (:mod:`workcell.targets`)."""
    sensor_id: str
    rate: float = 300.0
    count: int | None = None
    duration: float | None = None
    profile: str = "regime"
    seed: int = 0
    step_at: StepAt = StepAt(10.0, relative=True)
    batch: int = 1
    stream_seconds: float = 1.0
    buffer: int = 100_000
    progress: bool = True
    log_level: str = "INFO"
    log_format: str = "text"
    tls: TlsConfig = PLAINTEXT
    """CA to verify the controller with, and this sensor's certificate (mutual TLS)."""
    metrics_listen: Address | None = None
    """Where to serve Prometheus ``/metrics`` over HTTP; None: no endpoint."""


def sanitize_sensor_id(text: str) -> str:
    """``text`` turned into a valid sensor id: other characters become ``-``, at most 64."""
    cleaned = _NOT_ALLOWED.sub("-", text).strip("-")[:MAX_SENSOR_ID]
    return cleaned or "sensor"


def default_sensor_id(hostname: str | None = None) -> str:
    """``sensor-<hostname>``, sanitized (in compose every replica has its own hostname)."""
    host = socket.gethostname() if hostname is None else hostname
    return sanitize_sensor_id(f"sensor-{host}")


def sensor_id(text: str) -> str:
    """Flag type: a sensor id exactly as the controller accepts it."""
    if not SENSOR_ID_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"expected 1-{MAX_SENSOR_ID} characters from [A-Za-z0-9._-], got {text!r}"
        )
    return text


def step_at(text: str) -> StepAt:
    """Flag type: ``+S`` (seconds after start) or a Unix time in seconds."""
    stripped = text.strip()
    relative = stripped.startswith("+")
    try:
        seconds = float(stripped.removeprefix("+"))
    except ValueError:
        seconds = float("nan")
    if not (seconds >= 0 and seconds != float("inf")):
        raise argparse.ArgumentTypeError(
            f"expected +SECONDS after start or a Unix time in seconds, got {text!r}"
        )
    return StepAt(seconds, relative)


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def _profile_name(text: str) -> str:
    if text not in PROFILE_NAMES:
        raise argparse.ArgumentTypeError(
            f"expected one of {', '.join(PROFILE_NAMES)}, got {text!r}"
        )
    return text


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
        type=parse_addresses,
        metavar="HOST:PORT[,HOST:PORT...]",
        help="controller gRPC address; several comma-separated (one per node), or one DNS name "
        "resolving to every node: streams go round robin to the nodes that are up",
    )
    parser.flag(
        "--sensor-id",
        env="WORKCELL_SENSOR_ID",
        default=default_sensor_id(),
        type=sensor_id,
        metavar="ID",
        help="this sensor's id: 1-64 characters from [A-Za-z0-9._-]",
    )
    parser.flag(
        "--rate",
        env="WORKCELL_SENSOR_RATE",
        default="300",
        type=float_between(MIN_RATE, MAX_RATE),
        metavar="PER_SECOND",
        help="readings per second",
    )
    parser.flag(
        "--count",
        env="WORKCELL_SENSOR_COUNT",
        type=int_between(1, MAX_COUNT),
        help="send this many readings, wait until all are acknowledged, exit",
    )
    parser.flag(
        "--duration",
        env="WORKCELL_SENSOR_DURATION",
        type=duration_between(0.001, MAX_DURATION),
        help="generate for this long (5, 500ms, 10m), deliver what is held, exit",
    )
    parser.flag(
        "--profile",
        env="WORKCELL_SENSOR_PROFILE",
        default="regime",
        type=_profile_name,
        metavar="|".join(PROFILE_NAMES),
        help=f"payload signal: {', '.join(PROFILE_NAMES)}",
    )
    parser.flag(
        "--seed",
        env="WORKCELL_SENSOR_SEED",
        type=_seed,
        metavar="N",
        help="random seed of the profile (default: random, logged at start)",
    )
    parser.flag(
        "--step-at",
        env="WORKCELL_SENSOR_STEP_AT",
        default="+10",
        type=step_at,
        metavar="TIME",
        help="step and drift-step profiles: when the mean steps, Unix time in seconds or +S "
        "seconds after start",
    )
    parser.flag(
        "--batch",
        env="WORKCELL_SENSOR_BATCH",
        default="1",
        type=int_between(1, MAX_BATCH),
        help="readings per message",
    )
    parser.flag(
        "--stream-seconds",
        env="WORKCELL_SENSOR_STREAM_SECONDS",
        default="1.0",
        type=duration_between(0.05, MAX_STREAM_SECONDS),
        help="end each stream (and get it acknowledged) after this long",
    )
    parser.flag(
        "--buffer",
        env="WORKCELL_SENSOR_BUFFER",
        default="100000",
        type=int_between(1, MAX_BUFFER),
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
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    resolve: Resolver = resolve_host,
) -> SensorConfig:
    """Flags and environment to a :class:`SensorConfig` (exit 2 with one line on a bad value).

    ``resolve`` looks up the host names of a ``--controller`` list, once,
    here (gRPC has no scheme for a list of names; one name alone is left to
    gRPC's DNS resolver).
    """
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
    try:
        controller = grpc_target(args.controller, resolve)
    except TargetError as exc:
        parser.error(f"argument --controller: {exc}")
    if tls.enabled("client") and tls.server_name is None and len(controller.hosts) > 1:
        # gRPC checks one name for every node of a channel: the first one's.
        parser.error(
            f"argument --controller: nodes under different host names "
            f"({', '.join(controller.hosts)}) need --tls-server-name, a name that every "
            "node's certificate carries"
        )
    return SensorConfig(
        controller=controller,
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
