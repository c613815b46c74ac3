"""``python -m controller``: run the controller until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal
import sys

import uvloop

from controller.app import Controller
from controller.config import ControllerConfig, parse_config
from controller.errors import DatabaseOpenError
from workcell.logs import configure_logging


async def serve(config: ControllerConfig) -> None:
    """Run until a stop signal, then stop gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with Controller(config):
        await stop.wait()


def main() -> int:
    config = parse_config()
    configure_logging(config.log_level, config.log_format, native_stderr=True)
    try:
        uvloop.run(serve(config))
    except (OSError, DatabaseOpenError) as exc:
        print(f"python -m controller: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
