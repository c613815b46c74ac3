"""``workcell.v1.History``: the commands issued in a time range, paged."""

from __future__ import annotations

import logging
from typing import Protocol

import grpc

from controller.paging import (
    QueryFilter,
    decode_page_token,
    effective_page_size,
    encode_page_token,
)
from controller.records import CommandRecord
from controller.runs import Run, RunGrouper, entry_for_run
from workcell.timeconv import from_timestamp, timestamp_range_problem
from workcell.v1 import history_pb2, history_pb2_grpc

__all__ = ["CommandSource", "HistoryServicer"]

log = logging.getLogger(__name__)

# Commands read per database round trip while filling a page of merged runs.
FETCH_CHUNK = 1000


class CommandSource(Protocol):
    """Reads commands by id order within an issue-time range (the Database)."""

    async def commands_page(
        self, *, after_id: int, from_us: int | None, to_us: int | None, limit: int
    ) -> list[CommandRecord]: ...


class HistoryServicer(history_pb2_grpc.HistoryServicer):
    """Answers History/Query from the ``commands`` table."""

    def __init__(self, source: CommandSource) -> None:
        self._source = source

    async def Query(
        self,
        request: history_pb2.QueryRequest,
        context: grpc.aio.ServicerContext[history_pb2.QueryRequest, history_pb2.QueryResponse],
    ) -> history_pb2.QueryResponse:
        try:
            query, page_size, after_id = parse_query(request)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        runs, more = await self._page(query, page_size, after_id)
        response = history_pb2.QueryResponse(entries=[entry_for_run(run) for run in runs])
        if more:
            response.next_page_token = encode_page_token(runs[-1].last_id, query)
        return response

    async def _page(self, query: QueryFilter, size: int, after_id: int) -> tuple[list[Run], bool]:
        """Up to ``size`` complete runs after ``after_id``; and whether more follow."""
        grouper = RunGrouper(merge=query.merge_runs)
        runs: list[Run] = []
        # One extra row tells whether another page exists without merging;
        # with merging, a run is only complete once the next one has begun.
        chunk = size + 1 if not query.merge_runs else FETCH_CHUNK
        cursor = after_id
        while True:
            records = await self._source.commands_page(
                after_id=cursor, from_us=query.from_us, to_us=query.to_us, limit=chunk
            )
            runs.extend(grouper.feed(records))
            if len(runs) > size:
                return runs[:size], True
            if len(records) < chunk:
                runs.extend(grouper.finish())
                return runs[:size], len(runs) > size
            cursor = records[-1].id


def parse_query(request: history_pb2.QueryRequest) -> tuple[QueryFilter, int, int]:
    """The filter, effective page size and cursor of a request.

    Raises ValueError (PageSizeError, PageTokenError among them) with a
    message that names the offending field.
    """
    page_size = effective_page_size(request.page_size)
    from_us = _bound(request, "from_datetime")
    to_us = _bound(request, "to_datetime")
    if from_us is not None and to_us is not None and from_us > to_us:
        raise ValueError("from_datetime is after to_datetime")
    query = QueryFilter(from_us=from_us, to_us=to_us, merge_runs=request.merge_runs)
    after_id = decode_page_token(request.page_token, query) if request.page_token else 0
    return query, page_size, after_id


def _bound(request: history_pb2.QueryRequest, name: str) -> int | None:
    """A range bound in microseconds (None when unset); ValueError naming it when invalid."""
    if not request.HasField(name):
        return None
    bound = getattr(request, name)
    problem = timestamp_range_problem(bound)
    if problem is not None:
        raise ValueError(f"{name} is not a valid timestamp: {problem}")
    return from_timestamp(bound)
