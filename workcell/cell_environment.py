"""Which of ``workcell run``'s environment its children inherit.

The rule, per variable (docs/services.md, "What the children inherit"):

- **Per-process settings are never inherited.** ``WORKCELL_METRICS_LISTEN``
  names one port: every child would try to bind it and all but the first
  fail (``workcell run --metrics`` gives each process its own instead).
  ``WORKCELL_TLS_*`` and ``WORKCELL_<ROLE>_TLS_*`` configure one end of one
  link: ``run`` joins its children in plaintext on loopback, and its own
  History poller could not follow a controller serving TLS.
- **Logging is passed as flags, not inherited.** ``run`` reads
  ``WORKCELL_LOG_LEVEL``/``WORKCELL_LOG_FORMAT`` as its own ``--log-level``
  and ``--log-format`` and gives every child ``--log-format`` and a
  ``--log-level`` of at most INFO (``run`` reads the children's INFO lines:
  their addresses, their progress); the variables themselves are dropped so
  only what ``run`` passes applies.
- **Every other variable is inherited**: the cell's settings
  (``WORKCELL_ALPHA``, ``WORKCELL_GRACE``, ``WORKCELL_SENSOR_PROFILE`` ...)
  are meant for every process of their kind; where ``run`` passes a flag
  (addresses, database, period, rate, sensor ids) the flag wins.

Pure: a mapping in, a new dict out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["child_environment", "inherited"]

_PER_PROCESS = re.compile(
    r"WORKCELL_(METRICS_LISTEN|LOG_LEVEL|LOG_FORMAT|TLS_\w+|[A-Z0-9]+_TLS_\w+)"
)


def inherited(name: str) -> bool:
    """Whether a child of ``run`` sees the variable ``name`` of ``run``'s environment."""
    return _PER_PROCESS.fullmatch(name) is None


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """A child's environment: ``environ`` without the per-process settings, unbuffered."""
    env = {name: value for name, value in environ.items() if inherited(name)}
    # Each log line reaches run (and the child's log file) as it is written.
    env["PYTHONUNBUFFERED"] = "1"
    return env
