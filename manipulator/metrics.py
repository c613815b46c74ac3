"""The manipulator's Prometheus metrics (served with ``--metrics-listen``).

Every :class:`~manipulator.server.ManipulatorServer` owns one
:class:`ManipulatorMetrics` on a registry of its own, so several servers in
one test process each report only their own numbers. The metrics are always
kept; the HTTP endpoint runs only when asked for. A command costs a few
counter increments and one histogram observation (about a microsecond each,
under a lock): nothing beside its fsync.

Each valid command received ends in exactly one outcome:
``received = journaled + duplicate + refused (every reason) + failed (every reason)``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from manipulator.errors import RefusalReason
from workcell.metrics_registry import service_registry

__all__ = ["FAILURE_REASONS", "PREFIX", "ManipulatorMetrics"]

PREFIX = "workcell_manipulator_"
FAILURE_REASONS = ("journal_displaced", "journal_error")
"""Why a command was neither journaled nor refused: the journal could not take it."""
# Write and fsync of one journal line: a page-cache fsync up to a stalled disk.
FSYNC_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip


class ManipulatorMetrics:
    """The manipulator's metric objects, registered on ``registry``.

    By default a new one with the process and platform collectors and
    ``workcell_build_info`` (:func:`~workcell.metrics_registry.service_registry`).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else service_registry("manipulator")
        r = self.registry
        self.commands_received = Counter(
            PREFIX + "commands_received",
            "Valid commands received (each frame that decodes to a Command), resends included",
            registry=r,
        )
        self.commands_journaled = Counter(
            PREFIX + "commands_journaled",
            "Commands written to the journal (and fsynced) before their ack",
            registry=r,
        )
        self.commands_duplicate = Counter(
            PREFIX + "commands_duplicate",
            "Resends of a journaled command: acknowledged again, not journaled twice",
            registry=r,
        )
        self.commands_refused = Counter(
            PREFIX + "commands_refused",
            "Commands refused (an ack carrying the error; not journaled), by reason",
            ["reason"],
            registry=r,
        )
        self.commands_failed = Counter(
            PREFIX + "commands_failed",
            "Commands neither journaled nor acknowledged because the journal could not take "
            "them (its connection is closed; the controller resends), by reason",
            ["reason"],
            registry=r,
        )
        # Every label exported from the start (at 0): rates and alerts need no absent().
        for reason in RefusalReason:
            self.commands_refused.labels(reason=str(reason))
        for failure in FAILURE_REASONS:
            self.commands_failed.labels(reason=failure)
        self.bad_frames = Counter(
            PREFIX + "bad_frames",
            "Frames that closed their connection: too long, or not a valid Command",
            registry=r,
        )
        self.open_connections = Gauge(
            PREFIX + "open_connections", "Controller connections open now", registry=r
        )
        self.connections = Counter(
            PREFIX + "connections", "Connections accepted since the start", registry=r
        )
        self.journal_fsync = Histogram(
            PREFIX + "journal_fsync_seconds",
            "Time to append one command to the journal and fsync it (what its ack waits for "
            "on the disk); journaled commands only",
            buckets=FSYNC_BUCKETS,
            registry=r,
        )
