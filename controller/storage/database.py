"""The database: engine set-up, migrations at start, and the read queries.

Every write goes through the single :class:`controller.storage.writer.Writer`,
on the write backend this module chooses for the URL (:attr:`Database.write_backend`);
this module only reads, on pooled connections that run beside the writer (WAL
on SQLite, MVCC on PostgreSQL). The queries are SQLAlchemy Core, the same on
both backends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from sqlalchemy import Select, and_, event, func, literal_column, or_, select, tuple_
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from controller.decision.watermarks import Holdable, RunReach
from controller.errors import DatabaseOpenError
from controller.records import CommandRecord, LeadershipRecord
from controller.storage.migrate import UnknownRevision, upgrade
from controller.storage.origin import NoOrigin, Origin, read_origin, replace_origin
from controller.storage.postgres import DATABASE_NOW_US, PostgresWrites
from controller.storage.rows import command_from_row
from controller.storage.schema import (
    commands,
    decision_state,
    leadership,
    run_marks,
    sensor_runs,
)
from controller.storage.sqlite import SqliteWrites
from controller.storage.write_backend import BackendFactory
from workcell.timeconv import now_us

__all__ = ["Database"]

log = logging.getLogger(__name__)

# PostgreSQL: how long the server lets a session sit idle inside a transaction
# before it ends it. Our transactions never wait on anything but the database.
IDLE_IN_TRANSACTION_MS = 2000
_SQLITE_NOW_US = "CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)"


def _sqlite_pragmas(busy_timeout_ms: int) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # WAL lets History and start-up reads run beside the writer; FULL keeps
        # a committed batch on disk even if the machine loses power right after
        # the response said "durable" (group commit amortizes the fsync).
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.close()

    return on_connect


class Database:
    """An async engine on the configured URL, with the schema created."""

    def __init__(
        self, engine: AsyncEngine, revision: str, origin: Origin, write_backend: BackendFactory
    ) -> None:
        self.engine = engine
        self.write_backend = write_backend
        """Makes the writer's backend for a connection of this database's kind."""
        self.revision = revision
        """The schema revision the migrations brought the database to."""
        self.origin = origin
        """The database's identity, sent with every command (:mod:`controller.storage.origin`)."""

    @classmethod
    async def open(
        cls, url: str, *, busy_timeout: float = 10.0, new_origin: bool = False
    ) -> Database:
        """Create the engine (and the SQLite file's folder) and migrate the schema.

        ``busy_timeout`` is how long (seconds) a write waits for a lock held
        by another process before it fails. ``new_origin`` gives the database
        a fresh origin (the operator's remedy for a database restored from a
        backup; see :mod:`controller.storage.origin`).
        """
        parsed = make_url(url)
        timeout_ms = round(busy_timeout * 1000)
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_async_engine(url)
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas(timeout_ms))
        else:
            engine = create_async_engine(
                url,
                # Reads survive a server restart instead of failing once per
                # pooled connection.
                pool_pre_ping=True,
                # SQLite's busy_timeout, as PostgreSQL says it: a write blocked
                # by a lock fails after this instead of waiting for ever.
                connect_args={
                    "server_settings": {
                        "lock_timeout": str(timeout_ms),
                        # A node cut off in the middle of a transaction holds its row
                        # locks (decision_state's, shared by every ingest) until the
                        # server ends the session: this bounds that for the other nodes.
                        "idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_MS),
                    }
                },
            )
        shown = parsed.render_as_string(hide_password=True)
        old: Origin | None = None
        try:
            async with engine.begin() as conn:
                revision = await conn.run_sync(upgrade)
                if new_origin:
                    old, _ = await replace_origin(conn, now_us=now_us())
                origin = await read_origin(conn)
        except BaseException as exc:
            await engine.dispose()
            if isinstance(exc, SQLAlchemyError | OSError | UnknownRevision | NoOrigin):
                # DBAPIError wraps the driver's own message, which says it best.
                reason = getattr(exc, "orig", None) or exc
                raise DatabaseOpenError(f"cannot open the database {shown}: {reason}") from exc
            raise
        if new_origin:
            log.warning(
                "database %s: origin %s -> %s: its pending and later commands will be "
                "journaled by the manipulator as a new sequence",
                shown,
                old.id if old is not None else "none",
                origin.id,
            )
        log.info("database ready at %s (schema revision %s, origin %s)", shown, revision, origin.id)
        sqlite = parsed.get_backend_name() == "sqlite"
        return cls(engine, revision, origin, SqliteWrites if sqlite else PostgresWrites)

    async def close(self) -> None:
        """Dispose of the engine's connections."""
        await self.engine.dispose()

    async def last_command(self) -> CommandRecord | None:
        """The most recent command, or None on an empty database."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(commands).order_by(commands.c.id.desc()).limit(1))
            ).first()
        return None if row is None else command_from_row(row._mapping)

    async def last_command_id(self) -> int:
        """The highest command id stored (0: none)."""
        async with self.engine.connect() as conn:
            highest = (await conn.execute(select(func.max(commands.c.id)))).scalar_one()
        return 0 if highest is None else int(highest)

    async def commands_after(self, after_id: int, *, limit: int) -> list[CommandRecord]:
        """Up to ``limit`` commands with ids above ``after_id``, in id order (one
        primary-key range: History/Watch's catch-up and the command feed)."""
        query = select(commands).where(commands.c.id > after_id).order_by(commands.c.id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query.limit(limit))).all()
        return [command_from_row(row._mapping) for row in rows]

    async def acknowledged_between(self, low_id: int, high_id: int) -> list[CommandRecord]:
        """The acknowledged commands with ids from ``low_id`` to ``high_id``, in id order."""
        c = commands.c
        query = (
            select(commands)
            .where(c.id >= low_id, c.id <= high_id, c.acknowledged_at.is_not(None))
            .order_by(c.id)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [command_from_row(row._mapping) for row in rows]

    async def unacknowledged_commands(self) -> list[CommandRecord]:
        """Commands the manipulator has not acknowledged, oldest first."""
        query = select(commands).where(commands.c.acknowledged_at.is_(None)).order_by(commands.c.id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [command_from_row(row._mapping) for row in rows]

    async def decision_snapshot(self) -> tuple[int, CommandRecord | None]:
        """``decided_until`` and the last command, as one consistent view: taken under a
        shared lock, so a window close still in flight (another leader's) finishes first."""
        async with self.engine.begin() as conn:
            decided_until = (
                await conn.execute(
                    select(decision_state.c.decided_until).with_for_update(read=True)
                )
            ).scalar_one()
            row = (
                await conn.execute(select(commands).order_by(commands.c.id.desc()).limit(1))
            ).first()
        return int(decided_until), None if row is None else command_from_row(row._mapping)

    async def run_reaches(self, holdable: Holdable | None = None) -> list[RunReach]:
        """How far each sensor run's committed readings reach, over every node (the
        decisions' watermarks; rows of runs silent for a minute are gone): every run, or
        only the ``holdable`` ones (a few rows read, however many runs the last minute saw).
        """
        reached, heard = func.max(run_marks.c.reached_us), func.max(run_marks.c.heard_us)
        query = (
            select(run_marks.c.run_id, sensor_runs.c.sensor_id, reached, heard)
            .join(sensor_runs, sensor_runs.c.id == run_marks.c.run_id)
            .group_by(run_marks.c.run_id, sensor_runs.c.sensor_id)
        )
        if holdable is not None:
            query = query.where(run_marks.c.run_id.in_(_recent_runs(holdable))).having(
                reached < holdable.end_us,
                heard - reached <= holdable.max_lag_us,
                or_(
                    heard >= holdable.heard_since_us,
                    and_(
                        heard < holdable.started_us,
                        sensor_runs.c.sensor_id.not_in(_heard_in_term(holdable.started_us)),
                    ),
                ),
            )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [RunReach(int(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in rows]

    async def leadership(self) -> LeadershipRecord:
        """Who leads, judged by the database's clock (as the lease is)."""
        now = DATABASE_NOW_US if self.engine.dialect.name != "sqlite" else _SQLITE_NOW_US
        query = select(leadership, literal_column(now).label("now"))
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).one()
        expires_at = None if row.expires_at is None else int(row.expires_at)
        sole = self.engine.dialect.name == "sqlite"
        held = row.node is not None and (
            (sole and expires_at is None) or (expires_at is not None and expires_at > row.now)
        )
        return LeadershipRecord(int(row.epoch), row.node, row.address, expires_at, held)

    async def commands_page(
        self, *, after_id: int, from_us: int | None, to_us: int | None, limit: int
    ) -> list[CommandRecord]:
        """Up to ``limit`` commands issued in [from, to) after command ``after_id``.

        Oldest first: ordered by (issued_at, id), which is id order as long
        as the clock does not go backwards, and is what the index serves.
        """
        key = tuple_(commands.c.issued_at, commands.c.id)
        async with self.engine.connect() as conn:
            query = select(commands)
            if after_id:
                cursor = (
                    await conn.execute(
                        select(commands.c.issued_at).where(commands.c.id == after_id)
                    )
                ).scalar_one_or_none()
                if cursor is None:
                    query = query.where(commands.c.id > after_id)
                else:
                    query = query.where(key > tuple_(cursor, after_id))
                    # Also as a plain bound, so the index range starts at the
                    # cursor rather than at from_us.
                    from_us = cursor if from_us is None else max(from_us, cursor)
            if from_us is not None:
                query = query.where(commands.c.issued_at >= from_us)
            if to_us is not None:
                query = query.where(commands.c.issued_at < to_us)
            query = query.order_by(commands.c.issued_at, commands.c.id).limit(limit)
            rows = (await conn.execute(query)).all()
        return [command_from_row(row._mapping) for row in rows]

    async def window_sums(self, ids: Collection[int]) -> dict[int, tuple[int, int] | None]:
        """The exact window sums of the commands ``ids`` that exist (None: recorded before
        revision 0006); one index lookup each."""
        if not ids:
            return {}
        c = commands.c
        query = select(c.id, c.window_total, c.window_total_sq).where(c.id.in_(sorted(ids)))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {
            int(row.id): (
                None
                if row.window_total is None or row.window_total_sq is None
                else (int(row.window_total), int(row.window_total_sq))
            )
            for row in rows
        }

    async def run_end(
        self, first: CommandRecord, *, to_us: int | None
    ) -> tuple[CommandRecord, bool]:
        """The last command of the run ``first`` is in, issued before ``to_us``, and
        whether every command from ``first`` to it is acknowledged.

        Three index seeks, whatever the run's length: the next command of the
        other status, the command just before it, and the first unacknowledged
        command in between.
        """
        c = commands.c
        key = tuple_(c.issued_at, c.id)
        start = (first.issued_at, first.id)
        other = "up" if first.status == "down" else "down"
        async with self.engine.connect() as conn:
            boundary_query = select(c.issued_at, c.id).where(
                c.status == other, c.issued_at >= first.issued_at, key > tuple_(*start)
            )
            last_query = select(commands).where(
                c.issued_at >= first.issued_at, key >= tuple_(*start)
            )
            if to_us is not None:
                boundary_query = boundary_query.where(c.issued_at < to_us)
                last_query = last_query.where(c.issued_at < to_us)
            boundary = (
                await conn.execute(boundary_query.order_by(c.issued_at, c.id).limit(1))
            ).first()
            if boundary is not None:
                last_query = last_query.where(
                    c.issued_at <= boundary.issued_at, key < tuple_(boundary.issued_at, boundary.id)
                )
            last = command_from_row(
                (await conn.execute(last_query.order_by(c.issued_at.desc(), c.id.desc()).limit(1)))
                .one()
                ._mapping
            )
            unacknowledged = (
                await conn.execute(
                    select(c.id)
                    .where(
                        c.acknowledged_at.is_(None),
                        c.issued_at >= first.issued_at,
                        c.issued_at <= last.issued_at,
                        key >= tuple_(*start),
                        key <= tuple_(last.issued_at, last.id),
                    )
                    .limit(1)
                )
            ).first()
        return last, unacknowledged is None


def _recent_runs(holdable: Holdable) -> Select[tuple[int]]:
    """The runs with a node's row heard since ``heard_since_us`` or before the term: taken
    row by row first, so the join and the grouping see only those (the idle runs of the
    last minute can be thousands)."""
    marks = run_marks.alias("recent_marks")  # its own name: not correlated to the outer query
    heard = marks.c.heard_us
    return select(marks.c.run_id).where(
        or_(heard >= holdable.heard_since_us, heard < holdable.started_us)
    )


def _heard_in_term(started_us: int) -> Select[tuple[str]]:
    """The sensors heard since the term began, under any run (a run from before the term
    of such a sensor will not come back: it restarted)."""
    marks, runs = run_marks.alias("term_marks"), sensor_runs.alias("term_runs")
    return (
        select(runs.c.sensor_id)
        .join(marks, marks.c.run_id == runs.c.id)
        .where(marks.c.heard_us >= started_us)
    )
