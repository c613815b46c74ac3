"""A real gRPC History server that serves a scripted history and counts what it is asked.

For client-side tests of ``workcell history`` and ``workcell report``: how many pages a client
asks for, and when, matters there, not how the controller stores commands (the controller's
own tests cover that). Entries are made on demand from their index, so a history of any length
costs the server nothing to hold.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc

from tests.builders import history_entry
from workcell.timeconv import from_iso
from workcell.v1 import command_pb2, history_pb2, history_pb2_grpc

__all__ = ["PERIOD_US", "START_US", "ScriptedHistory", "serving", "synthetic_entry"]

START_US = from_iso("2025-03-01T00:00:00Z")
PERIOD_US = 5_000_000


def synthetic_entry(i: int) -> history_pb2.HistoryEntry:
    """Command i+1, deciding window i after START_US: a history that looks like a real one.

    Status runs of 1 to 6 commands, a mean that shifts with the status, p-values from 0.9
    down to 1e-40, an untested decision every 17th and a pending command every 31st.
    """
    start = START_US + i * PERIOD_US
    up = (i // (1 + i % 6)) % 2 == 1
    return history_entry(
        i + 1,
        window_start=start,
        period_us=PERIOD_US,
        status=command_pb2.STATUS_UP if up else command_pb2.STATUS_DOWN,
        window=history_pb2.WindowSummary(
            count=1400 + i % 200, mean=(160.0 if up else 100.0) + (i % 7) * 0.3, std_dev=10.0
        ),
        previous=history_pb2.WindowSummary(count=1500, mean=100.0, std_dev=10.0),
        changed=i % 5 == 0,
        p_value=10.0 ** -((i * 7919) % 41) * 0.9 if i % 17 else None,
        acked=bool(i % 31),
    )


class ScriptedHistory(history_pb2_grpc.HistoryServicer):
    """Serves ``total`` entries made by ``make_entry``, paged by index; counts the requests.

    ``before_page(n)`` is called with the 1-based number of each request before it is
    answered (on a server thread), so a test can look at the client between pages.
    """

    def __init__(
        self,
        total: int,
        *,
        make_entry: Callable[[int], history_pb2.HistoryEntry] = synthetic_entry,
        before_page: Callable[[int], None] | None = None,
    ) -> None:
        self.total = total
        self._make_entry = make_entry
        self._before_page = before_page
        self._lock = threading.Lock()
        self.requests: list[history_pb2.QueryRequest] = []

    def Query(
        self, request: history_pb2.QueryRequest, context: grpc.ServicerContext
    ) -> history_pb2.QueryResponse:
        with self._lock:
            self.requests.append(request)
            number = len(self.requests)
        if self._before_page is not None:
            self._before_page(number)
        first = int(request.page_token or "0")
        last = min(self.total, first + (request.page_size or 100))
        response = history_pb2.QueryResponse(
            entries=[self._make_entry(i) for i in range(first, last)]
        )
        if last < self.total:
            response.next_page_token = str(last)
        return response

    def Watch(
        self, request: history_pb2.WatchRequest, context: grpc.ServicerContext
    ) -> Iterator[history_pb2.WatchResponse]:
        # A scripted history does not change: a client must not rely on Watch here.
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "the scripted history has no Watch")
        yield from ()


@contextlib.contextmanager
def serving(servicer: ScriptedHistory) -> Iterator[str]:
    """Serve ``servicer`` on 127.0.0.1 at a free port; yields ``HOST:PORT``."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    history_pb2_grpc.add_HistoryServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None).wait(5)
