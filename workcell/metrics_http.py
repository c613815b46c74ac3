"""The ``/metrics`` HTTP endpoint of a service (``--metrics-listen``), on a daemon thread.

Shared by the controller and the sensor; each passes its own registry.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server
from prometheus_client.registry import CollectorRegistry

from workcell.flags import Address, FlagParser, optional_address

__all__ = ["MetricsEndpoint", "add_metrics_flag"]

log = logging.getLogger(__name__)


def add_metrics_flag(parser: FlagParser) -> None:
    """``--metrics-listen HOST:PORT`` (WORKCELL_METRICS_LISTEN); unset means no endpoint."""
    parser.flag(
        "--metrics-listen",
        env="WORKCELL_METRICS_LISTEN",
        default=None,
        type=optional_address,
        metavar="HOST:PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (port 0 picks a free "
        "port; unset: no metrics endpoint)",
    )


class MetricsEndpoint:
    """Serves one registry over HTTP until :meth:`close`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self, address: Address) -> int:
        """Bind ``address`` (port 0 picks one), log ``metrics on HOST:PORT``; the bound port."""
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
        # shutdown() waits for the serving thread's next poll (up to 0.5 s): off the loop.
        await asyncio.to_thread(server.shutdown)
        server.server_close()
        if thread is not None:
            await asyncio.to_thread(thread.join, 5.0)
