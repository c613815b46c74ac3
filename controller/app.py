"""Wires the controller's parts together and owns their lifecycle.

Start: database → writer → gRPC port bound → campaign for leadership (as
leader: resume) → gRPC server started (SERVING).
Every node stores readings and answers History; the leader also runs, for its
term: restored decision state → manipulator link → decision loop. Deposed (the
lease could not be renewed in time, or the database says another term began),
it stops deciding and dispatching at once and campaigns again.
Stop (SIGTERM/SIGINT): NOT_SERVING → stop accepting and let open streams
finish → stop deciding → flush the writer → close the link, hand the term
over, close the database. Nothing acknowledged is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import uuid
from collections.abc import Awaitable, Callable
from types import TracebackType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from controller.api.admission import StreamRegistry
from controller.api.command_feed import CommandFeed
from controller.api.history import HistoryServicer
from controller.api.nodes import NodesServicer
from controller.api.sensors import SensorsServicer
from controller.api.telemetry import TelemetryServicer
from controller.api.watch import CommandWatch
from controller.config import ControllerConfig
from controller.decision.loop import RECORD_RETRY, DecisionLoop, report_skipped
from controller.decision.restore import DecisionState, restore
from controller.errors import NotLeader, StorageError
from controller.leadership import Leadership, LeaseLeadership, SoleLeadership, Term
from controller.link import ManipulatorLink
from controller.metrics import ControllerMetrics
from controller.records import CloseWindows
from controller.storage.checkpoint import checkpoint_forever
from controller.storage.database import Database
from controller.storage.retention import Retention
from controller.storage.writer import Writer
from workcell.metrics_http import MetricsEndpoint
from workcell.timeconv import US_PER_SECOND, Clock, now_us
from workcell.tls import add_grpc_port, client_ssl_context
from workcell.v1 import (
    history_pb2,
    history_pb2_grpc,
    nodes_pb2,
    nodes_pb2_grpc,
    sensors_pb2,
    sensors_pb2_grpc,
    telemetry_pb2,
    telemetry_pb2_grpc,
)

__all__ = ["Controller"]

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    telemetry_pb2.DESCRIPTOR.services_by_name["Telemetry"].full_name,
    history_pb2.DESCRIPTOR.services_by_name["History"].full_name,
    nodes_pb2.DESCRIPTOR.services_by_name["Nodes"].full_name,
    sensors_pb2.DESCRIPTOR.services_by_name["Sensors"].full_name,
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
        self.metrics.period.set(config.period)
        self._metrics_endpoint: MetricsEndpoint | None = None
        self.metrics_port = 0
        self.streams: StreamRegistry | None = None
        """The open Telemetry streams and their limits (after :meth:`start`)."""
        self.node = str(uuid.uuid4())
        """This process's name among the nodes (window_partials rows, the leadership row)."""
        self.leadership: Leadership | None = None
        self._term: asyncio.Task[None] | None = None
        self._resumed = asyncio.Event()
        """The current term's work (the decision loop and the link), while this node leads."""
        self.feed: CommandFeed | None = None
        """The tail of the commands table every History/Watch of this node reads."""

    async def __aenter__(self) -> Controller:
        try:
            await self.start()
        except BaseException:
            # A part that started (the writer, the database) is stopped again.
            await self.stop()
            raise
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
        self.feed = feed = CommandFeed(database)
        self.writer = writer = Writer(
            database.engine,
            backend=database.write_backend,
            period_us=self._period_us,
            node=self.node,
            on_health=self._storage_health,
            on_commands=feed.notify,
            max_pending=config.ingest_buffer,
            commit_interval=config.commit_interval,
            metrics=self.metrics,
        )
        await writer.start()
        self._tasks.append(asyncio.create_task(self._log_stats(writer), name="ingest-stats"))
        if config.retain_readings > 0:
            retention = Retention(
                writer, config.retain_readings, clock=self._clock, metrics=self.metrics
            )
            self._tasks.append(asyncio.create_task(retention.run(), name="retention"))
        if database.engine.dialect.name == "sqlite":
            self._tasks.append(
                asyncio.create_task(checkpoint_forever(database.engine), name="wal-checkpoint")
            )
        if config.metrics_listen is not None:
            self._metrics_endpoint = MetricsEndpoint(self.metrics.registry)
            self.metrics_port = self._metrics_endpoint.start(config.metrics_listen)
        self._server = server = self._bind(writer, database)
        address = _advertised(config.listen.host, self.port)
        if database.engine.dialect.name == "sqlite":
            self.leadership = SoleLeadership(database.engine, node=self.node, address=address)
        else:
            self.leadership = LeaseLeadership(
                config.database, node=self.node, address=address, lease=config.lease
            )
        self._tasks.append(
            asyncio.create_task(
                self.leadership.run(self._elected, self._deposed), name="leadership"
            )
        )
        # Serving starts once this node knows its role, and as leader once it has
        # resumed: readings of windows decided before it are stale from the first,
        # and on SQLite the term is begun before readings compete for the file.
        async with asyncio.timeout(config.lease + config.busy_timeout):
            await self.leadership.campaigned.wait()
            if self._term is not None:
                await self._resumed.wait()
        await server.start()
        await self._set_health(True)
        log.info("gRPC: %s", config.tls.describe("server"))
        log.info("listening on %s:%d", config.listen.host, self.port)

    def _leading(self) -> bool:
        return self.leadership is not None and self.leadership.holds()

    @property
    def _period_us(self) -> int:
        return round(self.config.period * US_PER_SECOND)

    def _elected(self, term: Term) -> None:
        self.metrics.leader.set(1)
        self.metrics.epoch.set(term.epoch)
        self._term = asyncio.create_task(self._lead(term), name=f"term-{term.epoch}")

    def _deposed(self, term: Term, reason: str) -> None:
        # Synchronous: nothing of this term decides or sends after this returns.
        self.metrics.leader.set(0)
        log.warning(
            "leadership: term %d is over (%s); this node stops deciding and dispatching",
            term.epoch,
            reason,
            extra={"epoch": term.epoch},
        )
        if self._term is not None:
            self._term.cancel()
            self._tasks = [t for t in self._tasks if not t.done()]
            self._tasks.append(self._term)  # awaited at stop
            self._term = None

    async def _lead(self, term: Term) -> None:
        """Decide and dispatch for one term: until cancelled, or the database says it is over."""
        assert self.database is not None
        assert self.writer is not None
        assert self.leadership is not None
        database, writer, config = self.database, self.writer, self.config
        link: ManipulatorLink | None = None
        try:
            state = await self._resume(database, term)
            self._resumed.set()
            self.link = link = ManipulatorLink(
                config.manipulator,
                on_ack=self._acknowledged,
                origin=database.origin,
                clock=self._clock,
                ssl=client_ssl_context(config.manipulator_tls),
                server_hostname=config.manipulator_tls.server_name,
                metrics=self.metrics,
                epoch=term.epoch,
                on_fenced=self.leadership.resign,
                may_send=self.leadership.holds,
            )
            unacknowledged = await database.unacknowledged_commands()
            for record in unacknowledged:
                link.enqueue(record)
            if unacknowledged:
                log.info("%d unacknowledged commands will be resent", len(unacknowledged))
            await link.start()
            self.loop = loop = DecisionLoop(
                schedule=state.schedule,
                alpha=config.alpha,
                min_effect=config.min_effect,
                confirm=config.confirm,
                streak=state.streak,
                status=state.status,
                previous=state.previous,
                next_id=state.next_id,
                closer=writer,
                sender=link,
                clock=self._clock,
                metrics=self.metrics,
                last_issued_at=state.last_issued_at,
                epoch=term.epoch,
                reaches=database,
                idle_us=round(config.sensor_idle * US_PER_SECOND),
            )
            await self._decide(loop)
        except NotLeader as exc:
            self.leadership.resign(str(exc))
        except Exception as exc:
            # A leader that does not decide must not keep the term: hand it on
            # (or, alone on SQLite, begin the next one).
            log.exception("term %d failed", term.epoch)
            self.leadership.resign(f"its work failed: {exc}")
        finally:
            self._resumed.set()  # start() waits for it, whatever became of the term
            self.loop = None
            if link is not None:
                await link.close()

    async def _resume(self, database: Database, term: Term) -> DecisionState:
        """The decision state of a new term, from what the database holds."""
        config = self.config
        decided_until, last = await database.decision_snapshot()
        state = restore(
            last,
            decided_until=decided_until,
            now_us=self._clock(),
            period_us=self._period_us,
            grace_us=round(config.grace * US_PER_SECOND),
            initial_status=config.initial_status,
        )
        report_skipped(state.skipped, self._period_us, self.metrics, "no node was deciding")
        if last is not None:
            log.info(
                "term %d resumes after command %d (status %s)", term.epoch, last.id, last.status
            )
        until = state.schedule.decided_until
        if until > decided_until:
            # Readings of the skipped windows are stale from now on, on every node.
            skip = CloseWindows(term.epoch, until, until - self._period_us, state.next_id, None)
            await self._retry(lambda: self.writer.close_windows(skip))  # type: ignore[union-attr]
        return state

    async def _retry(self, write: Callable[[], Awaitable[object]]) -> None:
        """``write`` until the database takes it (NotLeader is not retried)."""
        for delay in RECORD_RETRY.delays():
            try:
                await write()
                return
            except NotLeader:
                raise
            except StorageError:
                await asyncio.sleep(delay)

    def _bind(self, writer: Writer, database: Database) -> grpc.aio.Server:
        """The gRPC server with every service, bound to its port (``self.port``), not started."""
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
        watch = CommandWatch(self.feed) if self.feed is not None else None
        history_pb2_grpc.add_HistoryServicer_to_server(
            HistoryServicer(database, watch=watch), server
        )
        sensors_pb2_grpc.add_SensorsServicer_to_server(
            SensorsServicer(writer.runs, node=self.node, clock=self._clock), server
        )
        nodes_pb2_grpc.add_NodesServicer_to_server(
            NodesServicer(database, node=self.node, leading=self._leading), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        listen = self.config.listen
        self.port = add_grpc_port(server, f"{listen.host}:{listen.port}", self.config.tls)
        if self.port == 0:
            raise OSError(f"cannot listen on {listen}")
        return server

    def _storage_health(self, healthy: bool) -> None:
        self.metrics.database_writable.set(1 if healthy else 0)
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
            except NotLeader:
                raise
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
        if self.feed is not None:
            # Watch streams never end by themselves: end them first, so that
            # they do not hold the server's stop for its whole grace.
            await self.feed.close()
        if self._server is not None:
            log.info("stopping: answering open streams (up to %gs)", self.config.shutdown_grace)
            await self._server.stop(self.config.shutdown_grace)
            self._server = None
        if self._term is not None:
            self._tasks.append(self._term)
            self._term = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.leadership is not None:
            # Deciding and dispatching have stopped: a standby may take over at once.
            await self.leadership.release()
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


def _advertised(host: str, port: int) -> str:
    """How other nodes and operators reach this node's gRPC server."""
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = socket.gethostname()
    return f"{host}:{port}"
