"""The sensor's configuration, read once at start, and the checks on its values."""

from __future__ import annotations

import argparse
import re
import socket
from dataclasses import dataclass

from workcell.flags import Address
from workcell.timeconv import US_PER_SECOND
from workcell.tls import PLAINTEXT, TlsConfig

__all__ = [
    "SENSOR_ID_PATTERN",
    "SensorConfig",
    "StepAt",
    "default_sensor_id",
    "sanitize_sensor_id",
    "sensor_id",
    "step_at",
]

# The controller rejects any other sensor id, so the sensor checks it at start.
SENSOR_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9._-]+")
MAX_SENSOR_ID = 64


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

    controller: Address
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
