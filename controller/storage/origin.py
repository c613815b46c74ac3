"""The database's origin: the identity sent with every command it issues.

Command ids start at 1 in every database, so the manipulator's journal
identifies a command by (origin, id). The origin is made with the database
(migration 0004) and replaced only by the operator, with ``python -m
controller.migrate --new-origin``, when a database restored from a backup
issues ids its journal already holds for other commands.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from controller.storage.schema import database_origin

__all__ = ["NoOrigin", "Origin", "read_origin", "replace_origin"]


class NoOrigin(Exception):
    """``database_origin`` does not hold exactly one row."""


@dataclass(frozen=True, slots=True)
class Origin:
    """The row of ``database_origin``."""

    id: str
    """A UUID, made with the database."""
    created_at: int
    """When it was made (µs since the epoch)."""
    first_command_id: int
    """Commands below this id were issued before the database had an origin."""

    def of_command(self, command_id: int) -> str:
        """The origin command ``command_id`` is sent with.

        A database upgraded from revision 0002 issued its earlier commands
        without an origin; the journal holds them under the empty one, so a
        resend of one of them must carry the empty one too.
        """
        return self.id if command_id >= self.first_command_id else ""


async def read_origin(conn: AsyncConnection) -> Origin:
    """The database's origin; NoOrigin unless ``database_origin`` holds exactly one row."""
    rows = (await conn.execute(select(database_origin))).all()
    if len(rows) != 1:
        raise NoOrigin(
            f"database_origin holds {len(rows)} rows instead of one: give the database an "
            "origin with python -m controller.migrate --new-origin"
        )
    return _origin(rows[0])


def _origin(row: Row[Any]) -> Origin:
    return Origin(str(row.origin), int(row.created_at), int(row.first_command_id))


async def replace_origin(conn: AsyncConnection, *, now_us: int) -> tuple[Origin | None, Origin]:
    """Give the database a fresh origin (in ``conn``'s transaction); the old one and the new one.

    Every command from then on, the pending ones included, is sent with the
    new origin: the manipulator journals them as a new sequence.
    """
    rows = (await conn.execute(select(database_origin))).all()
    old = _origin(rows[0]) if len(rows) == 1 else None
    new = Origin(str(uuid.uuid4()), now_us, 1)
    await conn.execute(delete(database_origin))
    await conn.execute(
        insert(database_origin).values(
            origin=new.id, created_at=new.created_at, first_command_id=new.first_command_id
        )
    )
    return old, new
