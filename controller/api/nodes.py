"""``workcell.v1.Nodes``: which node leads, as this node and the database see it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import grpc

from controller.records import LeadershipRecord
from workcell.timeconv import to_timestamp
from workcell.v1 import nodes_pb2, nodes_pb2_grpc

__all__ = ["LeadershipSource", "NodesServicer"]


class LeadershipSource(Protocol):
    """Reads the ``leadership`` row (the Database)."""

    async def leadership(self) -> LeadershipRecord: ...


class NodesServicer(nodes_pb2_grpc.NodesServicer):
    """Answers GetLeadership from the database's row and this node's own role."""

    def __init__(self, source: LeadershipSource, *, node: str, leading: Callable[[], bool]) -> None:
        self._source = source
        self._node = node
        self._leading = leading

    async def GetLeadership(
        self,
        request: nodes_pb2.GetLeadershipRequest,
        context: grpc.aio.ServicerContext[
            nodes_pb2.GetLeadershipRequest, nodes_pb2.GetLeadershipResponse
        ],
    ) -> nodes_pb2.GetLeadershipResponse:
        row = await self._source.leadership()
        response = nodes_pb2.GetLeadershipResponse(
            node=self._node, leading=self._leading(), epoch=row.epoch
        )
        if row.held:
            response.leader_node = row.node or ""
            response.leader_address = row.address or ""
            if row.expires_at is not None:
                response.lease_expires_at.CopyFrom(to_timestamp(row.expires_at))
        return response
