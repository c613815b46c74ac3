"""Feeds a :class:`~workcell.cell_state.CellState` from the controllers' live API.

- the commands: History/Watch on one channel over every node (gRPC's
  round_robin: a node that goes is skipped), resumed after any break from the
  last event's cursor, so no command is missed or told twice whichever node
  answers next. Before the first watch, History/Query gives the last few
  commands (unless the view starts from now, as ``workcell run``'s does);
- each node, every ``poll_interval``: Nodes/GetLeadership (its role) and
  Sensors/ListRuns (the sensor runs it stored readings of: the view adds the
  nodes' answers up, since each node knows only its own).

Everything it learns goes into the state; ``on_event`` is told each event as
well (plain output prints them). It retries for ever: a cell that restarts
is followed again once it is back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import grpc

from workcell.cell_state import HISTORY_ROWS, CellState
from workcell.flags import Address
from workcell.targets import grpc_target, resolve_host
from workcell.timeconv import now_us, to_timestamp
from workcell.tls import PLAINTEXT, TlsConfig, grpc_aio_channel
from workcell.v1 import (
    history_pb2,
    history_pb2_grpc,
    nodes_pb2,
    nodes_pb2_grpc,
    sensors_pb2,
    sensors_pb2_grpc,
)

__all__ = ["CellWatcher"]

log = logging.getLogger(__name__)

POLL_INTERVAL = 1.0
RPC_TIMEOUT = 5.0
RETRY = 1.0
RECENT_US = 600 * 1_000_000
"""How far back History/Query looks for the last commands to show at start."""


def _reason(exc: grpc.RpcError) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc)


class CellWatcher:
    """Follows one cell's controllers (every node's address) into a state."""

    def __init__(
        self,
        addresses: Sequence[Address],
        state: CellState,
        *,
        tls: TlsConfig = PLAINTEXT,
        from_now: bool = False,
        on_event: Callable[[history_pb2.WatchResponse], None] = lambda event: None,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self._addresses = list(addresses)
        self._state = state
        self._tls = tls
        self._from_now = from_now
        self._on_event = on_event
        self._poll_interval = poll_interval
        self._channels: dict[str, grpc.aio.Channel] = {}
        state.watch_nodes([str(a) for a in self._addresses])

    async def run(self) -> None:
        """Follow until cancelled."""
        target = grpc_target(self._addresses, resolve_host)
        try:
            for address in self._addresses:
                self._channels[str(address)] = grpc_aio_channel(str(address), self._tls)
            watch_channel = grpc_aio_channel(target.uri, self._tls, options=target.options)
            self._channels[""] = watch_channel
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._follow(watch_channel))
                tasks.create_task(self._poll_nodes())
        finally:
            for channel in self._channels.values():
                await channel.close(None)
            self._channels.clear()

    async def poll_once(self) -> None:
        """Ask every node for its role and its sensor runs, once."""
        await asyncio.gather(*(self._ask(str(a)) for a in self._addresses))

    async def _poll_nodes(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(self._poll_interval)

    async def _ask(self, address: str) -> None:
        channel = self._channels.get(address)
        if channel is None:  # not following (any more): a channel for this look alone
            async with grpc_aio_channel(address, self._tls) as own:
                self._channels[address] = own
                try:
                    await self._ask(address)
                finally:
                    del self._channels[address]
            return
        state = self._state
        try:
            role = await nodes_pb2_grpc.NodesStub(channel).GetLeadership(
                nodes_pb2.GetLeadershipRequest(), timeout=RPC_TIMEOUT
            )
            runs = await sensors_pb2_grpc.SensorsStub(channel).ListRuns(
                sensors_pb2.ListRunsRequest(), timeout=RPC_TIMEOUT
            )
        except grpc.RpcError as exc:
            state.set_error(address, _reason(exc))
            return
        state.set_leadership(address, role)
        state.set_runs(address, runs)

    async def _recent(self, stub: history_pb2_grpc.HistoryAsyncStub) -> history_pb2.WatchRequest:
        """Show the last commands; the watch request that follows them exactly."""
        since = now_us() - RECENT_US
        entries: list[history_pb2.HistoryEntry] = []
        request = history_pb2.QueryRequest(from_datetime=to_timestamp(since), page_size=1000)
        while True:
            page = await stub.Query(request, timeout=RPC_TIMEOUT)
            entries = (entries + list(page.entries))[-HISTORY_ROWS:]
            if not page.next_page_token:
                break
            request.page_token = page.next_page_token
        if not entries:
            return history_pb2.WatchRequest()
        self._state.set_recent(entries)
        last = entries[-1].command_id
        pending = [e.command_id for e in entries if not e.HasField("acknowledged_at")]
        # Acknowledgements are told in id order: from just before the oldest one shown pending.
        return history_pb2.WatchRequest(
            after_command_id=last, acknowledged_through=(min(pending) - 1) if pending else last
        )

    async def _follow(self, channel: grpc.aio.Channel) -> None:
        stub = history_pb2_grpc.HistoryStub(channel)
        state = self._state
        request: history_pb2.WatchRequest | None = (
            history_pb2.WatchRequest() if self._from_now else None
        )
        while True:
            try:
                if request is None:
                    request = await self._recent(stub)
                call = stub.Watch(request)
                async for event in call:
                    state.apply_event(event)
                    # Resumed from here after a break: no gap, no repeat.
                    request = history_pb2.WatchRequest(
                        after_command_id=event.resume_after_command_id,
                        acknowledged_through=event.resume_acknowledged_through,
                    )
                    self._on_event(event)
                state.watch_error = "the stream ended"
            except grpc.RpcError as exc:
                state.watch_error = _reason(exc)
                log.debug("History/Watch: %s", state.watch_error)
            await asyncio.sleep(RETRY)
