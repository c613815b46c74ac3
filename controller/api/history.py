"""``workcell.v1.History``: the commands issued in a time range, paged; and
their events as they happen (Watch, :mod:`controller.api.watch`)."""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Protocol

import grpc

from controller.api.paging import (
    QueryFilter,
    decode_page_token,
    effective_page_size,
    encode_page_token,
)
from controller.api.status_runs import Run, RunGrouper, entry_for_run
from controller.api.watch import CommandWatch
from controller.records import CommandRecord
from workcell.timeconv import from_timestamp, timestamp_range_problem
from workcell.v1 import history_pb2, history_pb2_grpc

__all__ = ["CommandSource", "HistoryServicer"]

log = logging.getLogger(__name__)


# Rows a merged page may read in chunks, in pages' worth; then it seeks.
MERGE_ROW_BUDGET = 16


class CommandSource(Protocol):
    """Reads commands in issue order within an issue-time range (the Database)."""

    async def commands_page(
        self, *, after_id: int, from_us: int | None, to_us: int | None, limit: int
    ) -> list[CommandRecord]: ...

    async def run_end(
        self, first: CommandRecord, *, to_us: int | None
    ) -> tuple[CommandRecord, bool]: ...

    async def window_sums(self, ids: Collection[int]) -> dict[int, tuple[int, int] | None]: ...


class HistoryServicer(history_pb2_grpc.HistoryServicer):
    """Answers History/Query from the ``commands`` table, and History/Watch
    from the node's command feed (when given one)."""

    def __init__(self, source: CommandSource, *, watch: CommandWatch | None = None) -> None:
        self._source = source
        self._watch = watch

    async def Watch(  # type: ignore[override]
        self,
        request: history_pb2.WatchRequest,
        context: grpc.aio.ServicerContext[history_pb2.WatchRequest, history_pb2.WatchResponse],
    ) -> None:
        if self._watch is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "History/Watch is not served here")
        await self._watch.serve(request, context)

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
        previous = await self._previous_sums(runs)
        response = history_pb2.QueryResponse(
            entries=[entry_for_run(run, previous.get(run.first.id - 1)) for run in runs]
        )
        if more:
            response.next_page_token = encode_page_token(runs[-1].last_id, query)
        return response

    async def _previous_sums(self, runs: list[Run]) -> dict[int, tuple[int, int] | None]:
        """The exact sums of the window each run's first decision was compared with.

        That window is the previous command's (the last one decided before it; ids are
        consecutive), so the page holds it but for the first run's, which one lookup reads.
        """
        known = {r.id: r.window_sums for run in runs for r in (run.first, run.last)}
        missing = {run.first.id - 1 for run in runs} - known.keys() - {0}
        if missing:
            known.update(await self._source.window_sums(missing))
        return known

    async def _page(self, query: QueryFilter, size: int, after_id: int) -> tuple[list[Run], bool]:
        """Up to ``size`` complete runs after ``after_id``; and whether more follow."""
        source = self._source
        if not query.merge_runs:
            # One extra row tells whether another page exists.
            records = await source.commands_page(
                after_id=after_id, from_us=query.from_us, to_us=query.to_us, limit=size + 1
            )
            return [Run.of(record) for record in records[:size]], len(records) > size
        grouper = RunGrouper()
        runs: list[Run] = []
        # Rows are read in chunks of a page while that is cheap: short runs
        # cost a row each. A run that outlasts a whole chunk is completed by
        # index seeks instead of being read, so a run of any length costs a
        # few queries and no memory; past the row budget, every run is.
        budget = MERGE_ROW_BUDGET * (size + 1)
        cursor = after_id
        while True:
            limit = max(1, min(budget, size + 1))
            records = await source.commands_page(
                after_id=cursor, from_us=query.from_us, to_us=query.to_us, limit=limit
            )
            budget -= len(records)
            runs.extend(grouper.feed(records))
            run = grouper.take_open()
            if run is None or len(records) < limit:  # the end of the data
                if run is not None:
                    runs.append(run)
                return runs[:size], len(runs) > size
            if len(runs) >= size:  # a run is complete once the next one has begun
                return runs[:size], True
            if run.count >= len(records) or budget <= 0:
                last, acknowledged = await source.run_end(run.first, to_us=query.to_us)
                run.extend_to(last, acknowledged=acknowledged)
            grouper.resume(run)
            cursor = run.last_id


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
