"""``python -m manipulator``: run the manipulator until SIGTERM or SIGINT (exit 0)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from manipulator.config import ManipulatorConfig, parse_config
from manipulator.errors import JournalError
from manipulator.metrics import ManipulatorMetrics
from manipulator.server import ManipulatorServer
from workcell.logs import configure_logging
from workcell.metrics_http import MetricsEndpoint
from workcell.tls import server_ssl_context

# Not __name__: that is "__main__" here, a poor name for the service's own lines.
log = logging.getLogger("manipulator")


class MetricsUnavailable(Exception):
    """The ``--metrics-listen`` address cannot be bound (the message says why)."""


async def serve(config: ManipulatorConfig) -> None:
    """Run a :class:`ManipulatorServer` for ``config`` until a stop signal.

    With ``--metrics-listen`` its metrics are served first, so a port that
    cannot be bound stops the start before any controller connects.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: signal.Signals) -> None:
        if not stop.is_set():
            log.info("%s received: stopping", signum.name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    metrics = ManipulatorMetrics()
    endpoint = MetricsEndpoint(metrics.registry)
    if config.metrics_listen is not None:
        try:
            endpoint.start(config.metrics_listen)
        except OSError as exc:
            raise MetricsUnavailable(str(exc)) from exc
    try:
        async with ManipulatorServer(
            journal=config.journal,
            host=config.listen.host,
            port=config.listen.port,
            max_frame_bytes=config.max_frame_bytes,
            read_timeout=config.read_timeout,
            ssl=server_ssl_context(config.tls),
            metrics=metrics,
        ):
            await stop.wait()
    finally:
        await endpoint.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, configure logging, serve; the process exit status."""
    config = parse_config(argv)
    configure_logging(config.log_level, config.log_format)
    try:
        asyncio.run(serve(config))
    except MetricsUnavailable as exc:
        log.error("%s", exc)
        return 1
    except JournalError as exc:
        log.error("%s", exc)
        return 1
    except OSError as exc:
        log.error("cannot listen on %s: %s", config.listen, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
