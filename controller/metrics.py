"""The controller's Prometheus metrics, and the endpoint that serves them.

Every :class:`~controller.app.Controller` owns one :class:`ControllerMetrics`
on a registry of its own (never the process-wide default), so several
controllers can run in one process and each reports only its own numbers.
The metrics are always kept; the HTTP endpoint runs only when asked for.

The ingest path handles thousands of messages a second, so the code that
feeds these counts per commit group or per stream, never per reading.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from controller.decision import Outcome
from workcell.flags import Address

__all__ = ["PREFIX", "ControllerMetrics", "MetricsEndpoint"]

log = logging.getLogger(__name__)

PREFIX = "workcell_controller_"
# Readings per committed group: from a trickle (one message) up to the
# ingest buffer's default bound.
BATCH_BUCKETS = (0, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 50_000)
# Commit latency in seconds: an fsync on a quiet disk up to a lock held elsewhere.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ControllerMetrics:
    """The controller's metric objects, registered on ``registry`` (a new one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
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
        self.commit_latency = Histogram(
            PREFIX + "commit_latency_seconds",
            "Time to write and commit one group (transaction) of writes",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.open_streams = Gauge(PREFIX + "open_streams", "Telemetry streams open now", registry=r)
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
        self.manipulator_reconnects = Counter(
            PREFIX + "manipulator_reconnects",
            "Times the manipulator connection was lost (and is re-dialled)",
            registry=r,
        )


class MetricsEndpoint:
    """``/metrics`` over HTTP for one registry, served from a daemon thread."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self, address: Address) -> int:
        """Bind ``address`` (port 0 picks one), start serving; return the bound port."""
        try:
            self._server, self._thread = start_http_server(
                address.port, address.host, registry=self._registry
            )
        except OSError as exc:
            raise OSError(f"cannot serve metrics on {address}: {exc}") from exc
        self.port = int(self._server.server_address[1])
        log.info("metrics on %s:%d", address.host, self.port)
        return self.port

    async def close(self) -> None:
        """Stop serving and release the port; idempotent."""
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is None:
            return
        # shutdown() waits for the serving thread's next poll (up to 0.5 s):
        # off the event loop.
        await asyncio.to_thread(server.shutdown)
        server.server_close()
        if thread is not None:
            await asyncio.to_thread(thread.join, 5.0)
