"""``python -m controller.migrate``: apply the migrations without starting the controller.

For upgrading ahead of a roll-out: prints the schema revision. With
``--new-origin`` it also gives the database a new origin
(:mod:`controller.storage.origin`), after a restore from a backup.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from controller.config import DEFAULT_DATABASE
from controller.errors import DatabaseOpenError
from controller.storage.database import Database
from workcell.flags import FlagParser, database_url
from workcell.logs import configure_logging
from workcell.pipes import quiet_when_output_gone

__all__ = ["main"]


async def _main(url: str, *, new_origin: bool) -> str:
    database = await Database.open(url, new_origin=new_origin)
    await database.close()
    return database.revision


@quiet_when_output_gone
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m controller.migrate --database URL [--new-origin]``; prints the revision."""
    parser = FlagParser(
        prog="python -m controller.migrate",
        description="Apply the database migrations (the controller also does at start) "
        "and print the schema revision.",
    )
    parser.flag(
        "--database",
        env="WORKCELL_DATABASE",
        default=DEFAULT_DATABASE,
        type=database_url,
        metavar="URL",
        help="the controller's --database",
    )
    # No environment variable: a variable left set would give the database a
    # new origin at every run.
    parser.flag(
        "--new-origin",
        env=None,
        action="store_true",
        help="give the database a new origin (after restoring it from a backup, when the "
        "manipulator refuses its commands; stop the controller first): its pending and later "
        "commands are journaled as a new sequence",
    )
    ns = parser.parse_args(argv)
    configure_logging("INFO")
    try:
        print(asyncio.run(_main(ns.database, new_origin=ns.new_origin)))
    except DatabaseOpenError as exc:
        print(f"python -m controller.migrate: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
