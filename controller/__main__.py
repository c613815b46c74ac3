"""``python -m controller``: run the controller until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

import uvloop

from controller.app import Controller
from controller.config import ControllerConfig, parse_config
from controller.errors import DatabaseOpenError
from controller.storage.single_node import lock_sqlite_database
from workcell.logs import configure_logging
from workcell.ports import check_listen


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
        # Refused before the database or the manipulator is touched: another
        # controller on this SQLite file or on this port (docs/reliability.md).
        with contextlib.ExitStack() as held:
            lock = lock_sqlite_database(config.database)
            if lock is not None:
                held.enter_context(lock)
            check_listen(config.listen)
            uvloop.run(serve(config))
    except (OSError, DatabaseOpenError) as exc:
        print(f"python -m controller: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
