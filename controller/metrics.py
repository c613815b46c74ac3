"""The controller's Prometheus metrics, and the endpoint that serves them.

Every :class:`~controller.app.Controller` owns one :class:`ControllerMetrics`
on a registry of its own (never the process-wide default), so several
controllers can run in one process and each reports only its own numbers.
The metrics are always kept; the HTTP endpoint runs only when asked for.

The ingest path handles thousands of messages a second, so the code that
feeds these counts per commit group or per stream, never per reading.
"""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from controller.decision.rule import Outcome
from workcell.metrics_registry import service_registry

__all__ = ["PREFIX", "ControllerMetrics"]


PREFIX = "workcell_controller_"
# Readings per committed group: from a trickle (one message) up to the
# ingest buffer's default bound.
BATCH_BUCKETS = (0, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 50_000)
# Commit latency in seconds: an fsync on a quiet disk up to a lock held elsewhere.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ControllerMetrics:
    """The controller's metric objects, registered on ``registry``.

    By default a new one with the process and platform collectors and
    ``workcell_build_info`` (:func:`~workcell.metrics_registry.service_registry`).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else service_registry("controller")
        r = self.registry
        self.readings_received = Counter(
            PREFIX + "readings_received",
            "Valid readings taken from sensor streams and handed to storage",
            registry=r,
        )
        self.readings_stored = Counter(
            PREFIX + "readings_stored", "Readings newly committed to the database", registry=r
        )
        self.readings_duplicate = Counter(
            PREFIX + "readings_duplicate",
            "Readings already stored (resends), committed as no-ops",
            registry=r,
        )
        self.readings_stale = Counter(
            PREFIX + "readings_stale",
            "Stored readings whose window was already decided (not counted in a decision)",
            registry=r,
        )
        self.readings_conflict = Counter(
            PREFIX + "readings_conflict",
            "Resent readings whose stored payload or timestamp differs (the first is kept)",
            registry=r,
        )
        self.readings_pruned = Counter(
            PREFIX + "readings_pruned",
            "Readings deleted by retention (--retain-readings)",
            registry=r,
        )
        self.readings_invalid = Counter(
            PREFIX + "readings_invalid",
            "Readings rejected as invalid (each fails its stream with INVALID_ARGUMENT)",
            registry=r,
        )
        self.commit_batch_size = Histogram(
            PREFIX + "commit_batch_size",
            "Readings in each committed database transaction",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.commit_failures = Counter(
            PREFIX + "commit_failures",
            "Groups (transactions) the database failed to commit: an outage (lock, full disk, "
            "lost connection); every stream in the group is answered UNAVAILABLE",
            registry=r,
        )
        self.database_writable = Gauge(
            PREFIX + "database_writable",
            "0 while the database refuses writes (health NOT_SERVING), else 1",
            registry=r,
        )
        # The controller starts once its database is open and migrated.
        self.database_writable.set(1)
        self.commit_latency = Histogram(
            PREFIX + "commit_latency_seconds",
            "Time to write and commit one group (transaction) of writes",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.open_streams = Gauge(PREFIX + "open_streams", "Telemetry streams open now", registry=r)
        self.streams_refused = Counter(
            PREFIX + "streams_refused",
            "Telemetry streams refused at open: too many open in all or from one host",
            registry=r,
        )
        self.streams_ended = Counter(
            PREFIX + "streams_ended",
            "Telemetry streams the controller ended: idle or open too long",
            registry=r,
        )
        self.decisions = Counter(
            PREFIX + "decisions",
            "Windows decided, by outcome of the test",
            ["outcome"],
            registry=r,
        )
        for outcome in Outcome:
            # Every outcome is exported from the start (at 0), so rates and
            # alerts need no absent() guards.
            self.decisions.labels(outcome=str(outcome))
        self.last_p_value = Gauge(
            PREFIX + "last_p_value",
            "p-value of the last decision (NaN when it ran no test)",
            registry=r,
        )
        self.last_p_value.set(math.nan)
        self.last_decision_time = Gauge(
            PREFIX + "last_decision_timestamp_seconds",
            "Unix time this node issued its last command; before its first, when the process "
            "started (an alert on its age then counts from the start)",
            registry=r,
        )
        self.last_decision_time.set_to_current_time()
        self.period = Gauge(
            PREFIX + "period_seconds",
            "The decision period (--period): one command is due every period",
            registry=r,
        )
        self.decision_delay = Histogram(
            PREFIX + "decision_delay_seconds",
            "From a window's end to its command's issue: how long the window waited for "
            "the live sensors' readings (at most --grace past the end, or past the term's "
            "start)",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0),
            registry=r,
        )
        self.sensors_behind = Gauge(
            PREFIX + "sensors_behind",
            "Sensor runs the decisions do not wait for: their newest reading was older than "
            "--grace plus a period when it arrived (a clock behind, or a late delivery)",
            registry=r,
        )
        self.windows_skipped = Counter(
            PREFIX + "windows_skipped",
            "Windows that got no command: their deadline passed while the controller was "
            "stalled or down, and only the latest due window is decided",
            registry=r,
        )
        self.commands_sent = Counter(
            PREFIX + "commands_sent",
            "Commands issued to the manipulator link (one per decision)",
            registry=r,
        )
        self.commands_acknowledged = Counter(
            PREFIX + "commands_acknowledged",
            "Commands the manipulator acknowledged",
            registry=r,
        )
        self.commands_refused = Counter(
            PREFIX + "commands_refused",
            "Times the manipulator refused a command (not journaled; it stays pending)",
            registry=r,
        )
        self.commands_pending = Gauge(
            PREFIX + "commands_pending",
            "Commands not yet acknowledged by the manipulator",
            registry=r,
        )
        self.manipulator_link_up = Gauge(
            PREFIX + "manipulator_link_up",
            "1 while connected to the manipulator, else 0",
            registry=r,
        )
        self.leader = Gauge(
            PREFIX + "leader",
            "1 while this node leads (decides and drives the manipulator), else 0",
            registry=r,
        )
        self.epoch = Gauge(
            PREFIX + "epoch",
            "The leadership term this node last led (0: never)",
            registry=r,
        )
        self.manipulator_reconnects = Counter(
            PREFIX + "manipulator_reconnects",
            "Times the manipulator connection was lost (and is re-dialled)",
            registry=r,
        )
