"""Wires the controller's parts together and owns their lifecycle.

Start: database → restored decision state → writer → manipulator link →
decision loop → gRPC server (SERVING). Stop (SIGTERM/SIGINT): NOT_SERVING →
stop accepting and let open streams finish → stop deciding → flush the
writer → close the link and the database. Nothing acknowledged is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from controller.api.admission import StreamRegistry
from controller.api.history import HistoryServicer
from controller.api.telemetry import TelemetryServicer
from controller.config import ControllerConfig
from controller.decision.loop import DecisionLoop, report_skipped
from controller.decision.restore import DecisionState, restore
from controller.link import ManipulatorLink
from controller.metrics import ControllerMetrics
from controller.storage.database import Database
from controller.storage.retention import Retention
from controller.storage.writer import Writer
from workcell.metrics_http import MetricsEndpoint
from workcell.timeconv import US_PER_SECOND, Clock, now_us
from workcell.tls import add_grpc_port, client_ssl_context
from workcell.v1 import history_pb2, history_pb2_grpc, telemetry_pb2, telemetry_pb2_grpc

__all__ = ["Controller"]

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    telemetry_pb2.DESCRIPTOR.services_by_name["Telemetry"].full_name,
    history_pb2.DESCRIPTOR.services_by_name["History"].full_name,
)
STATS_INTERVAL = 5.0
# Messages beyond this are refused with RESOURCE_EXHAUSTED instead of growing
# memory. Open streams are bounded by controller.api.admission, not by gRPC's
# maximum_concurrent_rpcs: that one budget is shared by every service, and
# streams that never finish would lock Health and History out.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class Controller:
    """The running controller: ``async with Controller(config) as c: ...``."""

    def __init__(self, config: ControllerConfig, *, clock: Clock = now_us) -> None:
        self.config = config
        self._clock = clock
        self.database: Database | None = None
        self.writer: Writer | None = None
        self.link: ManipulatorLink | None = None
        self.loop: DecisionLoop | None = None
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self._tasks: list[asyncio.Task[None]] = []
        self.port = 0
        # Always kept (cheap); served over HTTP only with --metrics-listen.
        self.metrics = ControllerMetrics()
        self._metrics_endpoint: MetricsEndpoint | None = None
        self.metrics_port = 0
        self.streams: StreamRegistry | None = None
        """The open Telemetry streams and their limits (after :meth:`start`)."""

    async def __aenter__(self) -> Controller:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start every part; afterwards ``port`` is the bound gRPC port."""
        config = self.config
        self.database = database = await Database.open(
            config.database, busy_timeout=config.busy_timeout
        )
        state = await self._resume(database)
        self.writer = writer = Writer(
            database.engine,
            backend=database.write_backend,
            windows=state.book,
            on_health=self._storage_health,
            max_pending=config.ingest_buffer,
            metrics=self.metrics,
        )
        await writer.start()
        self.link = link = ManipulatorLink(
            config.manipulator,
            on_ack=self._acknowledged,
            origin=database.origin,
            clock=self._clock,
            ssl=client_ssl_context(config.manipulator_tls),
            server_hostname=config.manipulator_tls.server_name,
            metrics=self.metrics,
        )
        unacknowledged = await database.unacknowledged_commands()
        for record in unacknowledged:
            link.enqueue(record)
        if unacknowledged:
            log.info("%d unacknowledged commands will be resent", len(unacknowledged))
        await link.start()
        self.loop = DecisionLoop(
            book=state.book,
            alpha=config.alpha,
            status=state.status,
            previous=state.previous,
            next_id=state.next_id,
            recorder=writer,
            sender=link,
            clock=self._clock,
            metrics=self.metrics,
            last_issued_at=state.last_issued_at,
        )
        self._tasks.append(asyncio.create_task(self._decide(self.loop), name="decisions"))
        self._tasks.append(asyncio.create_task(self._log_stats(writer), name="ingest-stats"))
        if config.retain_readings > 0:
            retention = Retention(
                writer, config.retain_readings, clock=self._clock, metrics=self.metrics
            )
            self._tasks.append(asyncio.create_task(retention.run(), name="retention"))
        if config.metrics_listen is not None:
            self._metrics_endpoint = MetricsEndpoint(self.metrics.registry)
            self.metrics_port = self._metrics_endpoint.start(config.metrics_listen)
        await self._serve(writer, database)

    async def _serve(self, writer: Writer, database: Database) -> None:
        server = grpc.aio.server(
            # so_reuseport 0: a second controller on a busy port fails to bind
            # (gRPC's default lets both bind and split the connections).
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ]
        )
        self.streams = streams = StreamRegistry(self.config.stream_limits)
        self._tasks.append(asyncio.create_task(streams.watch(), name="stream-limits"))
        telemetry = TelemetryServicer(
            writer,
            max_skew_us=round(self.config.max_skew * US_PER_SECOND),
            clock=self._clock,
            metrics=self.metrics,
            streams=streams,
        )
        telemetry_pb2_grpc.add_TelemetryServicer_to_server(telemetry, server)
        history_pb2_grpc.add_HistoryServicer_to_server(HistoryServicer(database), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        listen = self.config.listen
        self.port = add_grpc_port(server, f"{listen.host}:{listen.port}", self.config.tls)
        if self.port == 0:
            raise OSError(f"cannot listen on {listen}")
        await server.start()
        self._server = server
        await self._set_health(True)
        log.info("gRPC: %s", self.config.tls.describe("server"))
        log.info("listening on %s:%d", listen.host, self.port)

    async def _resume(self, database: Database) -> DecisionState:
        """The decision state after the last command stored (or the initial one)."""
        config = self.config
        period_us = round(config.period * US_PER_SECOND)
        last = await database.last_command()
        state = restore(
            last,
            now_us=self._clock(),
            period_us=period_us,
            grace_us=round(config.grace * US_PER_SECOND),
            initial_status=config.initial_status,
        )
        report_skipped(state.skipped, period_us, self.metrics, "the controller was down")
        if last is not None:
            log.info("resuming after command %d (status %s)", last.id, last.status)
        # Readings of the open windows stored before a restart still count.
        restored = state.count_restored(await database.readings_since(state.open_since))
        if restored:
            log.info("restored %d readings of the open windows", restored)
        return state

    def _storage_health(self, healthy: bool) -> None:
        # Health is NOT_SERVING while the database refuses writes: a load
        # balancer or compose healthcheck should not send readings here then.
        if self._server is not None:
            self._tasks.append(asyncio.create_task(self._set_health(healthy)))

    async def _set_health(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, status)

    async def _acknowledged(self, command_id: int, at_us: int) -> None:
        assert self.writer is not None
        await self.writer.mark_acknowledged(command_id, at_us)

    async def _decide(self, loop: DecisionLoop) -> None:
        while True:
            try:
                await loop.run()
            except Exception:
                # A failed decision (the database refused the command) must not
                # stop the cadence; the next period decides again.
                log.exception("decision failed")
                await asyncio.sleep(min(1.0, self.config.period))

    async def _log_stats(self, writer: Writer) -> None:
        previous = writer.totals.stored
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            totals = writer.totals
            log.info(
                "ingest: stored=%d rate=%.1f/s duplicates=%d stale=%d commits=%d",
                totals.stored,
                (totals.stored - previous) / STATS_INTERVAL,
                totals.duplicates,
                totals.stale,
                writer.commits,
            )
            previous = totals.stored

    async def stop(self) -> None:
        """Stop gracefully; idempotent. Open streams get ``shutdown_grace`` seconds."""
        await self._set_health(False)
        if self._server is not None:
            log.info("stopping: answering open streams (up to %gs)", self.config.shutdown_grace)
            await self._server.stop(self.config.shutdown_grace)
            self._server = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.writer is not None:
            await self.writer.close()
            log.info("stopped: %d readings stored in all", self.writer.totals.stored)
        if self.link is not None:
            await self.link.close()
        if self.database is not None:
            await self.database.close()
            self.database = None
        if self._metrics_endpoint is not None:
            await self._metrics_endpoint.close()
            self._metrics_endpoint = None
