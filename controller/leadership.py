"""Which node leads: a lease in PostgreSQL, judged by the database's clock; one node on SQLite.

Every node stores readings and answers History; only the leader decides and drives the
manipulator, for one **term** (``epoch``), a number the database raises with each new leader.

Why a lease row and not a session advisory lock: a leader cut off from the database without
its connection being closed (a stalled path, a hung switch) keeps an advisory lock for as long
as the server takes to notice the dead session (TCP keepalives: hours by default), so nobody
could take over; and the cut-off leader, which cannot reach the server either, cannot tell
whether it still holds the lock. A lease expires by the database's clock whatever happens to
the connection, and the leader can tell, by its own monotonic clock alone, when it must stop:

- the leader renews ``expires_at = now() + lease`` (the database's clock) every lease/4;
- a renewal sent at local time ``s`` that succeeded makes the database's expiry at least
  ``s + lease`` in real time (the server's ``now()`` is after the request was sent), so the
  leader holds until ``s + lease - lease/4`` by its own clock (the quarter absorbs clock-rate
  differences and a frame in flight), and stops deciding and dispatching at that point unless
  a later renewal succeeded;
- a standby takes the lease only once ``expires_at <= now()`` by the database's clock: after
  the old leader has stopped. No two nodes' clocks are ever compared.

Each new term is ``epoch + 1``, stored with every command the leader records and sent with
every frame to the manipulator, which refuses frames of an older term (fencing). The
database refuses a window close from a term that is over, too
(:func:`controller.storage.window_stats.close_windows`).

On SQLite only one node can run (its lock file), so it leads from its start, with no expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from controller.storage.postgres import DATABASE_NOW_US
from workcell.backoff import Backoff

__all__ = ["Leadership", "LeaseLeadership", "SoleLeadership", "Term"]

log = logging.getLogger(__name__)

DEFAULT_LEASE = 2.0
# SQLite: beginning the next term after the last one failed, and while the file refuses writes.
RETAKE_DELAY = 1.0
TAKE_RETRY = Backoff(initial=0.1, maximum=5.0)

_NOW = DATABASE_NOW_US
_ACQUIRE = (
    f"UPDATE leadership SET epoch = epoch + 1, node = $1, address = $2, elected_at = {_NOW}, "
    f"expires_at = {_NOW} + $3 WHERE id = 1 AND (expires_at IS NULL OR expires_at <= {_NOW}) "
    "RETURNING epoch"
)
_RENEW = (
    f"UPDATE leadership SET expires_at = {_NOW} + $3 "
    f"WHERE id = 1 AND epoch = $1 AND node = $2 AND expires_at > {_NOW} RETURNING epoch"
)
# A leader that stops hands over at once instead of after the lease.
_RELEASE = "UPDATE leadership SET expires_at = NULL WHERE id = 1 AND epoch = $1 AND node = $2"


@dataclass(frozen=True, slots=True)
class Term:
    """One node's leadership: its epoch."""

    epoch: int


class Leadership(Protocol):
    """Elects this node (or not) and says, at any moment, whether it may still act."""

    async def run(
        self, elected: Callable[[Term], None], deposed: Callable[[Term, str], None]
    ) -> None:
        """Campaign and hold until cancelled; ``elected``/``deposed`` are called in turn."""
        ...

    def holds(self) -> bool:
        """Whether this node may decide and dispatch right now."""
        ...

    @property
    def campaigned(self) -> asyncio.Event:
        """Set once the first campaign has an outcome (elected, or another node leads)."""
        ...

    def resign(self, reason: str) -> None:
        """Give the term up (the database said it is over); campaign again later."""
        ...

    async def release(self) -> None:
        """At a clean stop: hand the term over at once (after deciding and dispatching stopped)."""
        ...


class SoleLeadership:
    """SQLite: the only node leads from its start; each start is a new term."""

    def __init__(self, engine: AsyncEngine, *, node: str, address: str) -> None:
        self._engine = engine
        self._node = node
        self._address = address
        self._term: Term | None = None
        self._resigned = asyncio.Event()
        self._campaigned = asyncio.Event()
        self._reason = ""

    @property
    def campaigned(self) -> asyncio.Event:
        return self._campaigned

    async def run(
        self, elected: Callable[[Term], None], deposed: Callable[[Term, str], None]
    ) -> None:
        while True:
            term = await self._take()
            self._term = term
            self._resigned.clear()
            elected(term)
            self._campaigned.set()
            await self._resigned.wait()
            self._term = None
            deposed(term, self._reason)
            await asyncio.sleep(RETAKE_DELAY)  # a term that failed at once is not retried hot

    async def _take(self) -> Term:
        """The next term, written until the database takes it."""
        for delay in TAKE_RETRY.delays():
            try:
                async with self._engine.begin() as conn:
                    await conn.execute(
                        text(
                            "UPDATE leadership SET epoch = epoch + 1, node = :node, "
                            "address = :address, elected_at = :now, expires_at = NULL "
                            "WHERE id = 1"
                        ),
                        {
                            "node": self._node,
                            "address": self._address,
                            "now": time.time_ns() // 1000,
                        },
                    )
                    epoch = (await conn.execute(text("SELECT epoch FROM leadership"))).scalar_one()
                return Term(int(epoch))
            except Exception as exc:
                log.warning("leadership: cannot begin a term yet (%s); retrying", exc)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable: the delays never end")

    def holds(self) -> bool:
        return self._term is not None

    def resign(self, reason: str) -> None:
        self._reason = reason
        self._resigned.set()

    async def release(self) -> None:
        pass  # nobody else can take over: the next start is the next term


class LeaseLeadership:
    """PostgreSQL: a lease on the ``leadership`` row, renewed against the database's clock."""

    def __init__(
        self,
        url: str,
        *,
        node: str,
        address: str,
        lease: float = DEFAULT_LEASE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # The lease has a connection of its own: a renewal must never queue behind a
        # commit group, and its timeout may close it without harming anything else.
        self._dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._node = node
        self._address = address
        self.lease = lease
        self._clock = clock
        self._conn: asyncpg.Connection | None = None
        self._term: Term | None = None
        self._valid_until = 0.0
        self._resigned: str | None = None
        self._wake = asyncio.Event()
        self._campaigned = asyncio.Event()

    @property
    def campaigned(self) -> asyncio.Event:
        return self._campaigned

    @property
    def interval(self) -> float:
        """How often the leader renews, and a standby looks for an expired lease."""
        return self.lease / 4

    def holds(self) -> bool:
        return self._term is not None and self._clock() < self._valid_until

    def resign(self, reason: str) -> None:
        self._resigned = reason
        self._wake.set()

    async def run(
        self, elected: Callable[[Term], None], deposed: Callable[[Term, str], None]
    ) -> None:
        try:
            while True:
                term = await self._campaign()
                elected(term)
                self._campaigned.set()
                reason = await self._hold(term)
                # Stop first, then say so: deposed() stops deciding and dispatching.
                self._term = None
                deposed(term, reason)
        finally:
            await self._disconnect()

    async def release(self) -> None:
        term, self._term = self._term, None
        if term is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.interval):
                conn = await self._connect()
                await conn.execute(_RELEASE, term.epoch, self._node)
                log.info("leadership: released term %d", term.epoch)

    async def _campaign(self) -> Term:
        """Wait until this node takes the lease; its term."""
        failing = False
        while True:
            sent = self._clock()
            try:
                async with asyncio.timeout(self.lease):
                    conn = await self._connect()
                    epoch = await conn.fetchval(_ACQUIRE, self._node, self._address, self._lease_us)
                failing = False
            except Exception as exc:  # asyncpg's, the socket's, a timeout: out of reach
                await self._disconnect()
                if not failing:
                    log.warning("leadership: cannot reach the database to campaign: %s", exc)
                failing = True
                epoch = None
            if epoch is not None:
                self._term = term = Term(int(epoch))
                self._valid_until = sent + self._holds_for
                self._resigned = None
                log.info("leadership: this node leads, term %d", term.epoch)
                return term
            if not self._campaigned.is_set():
                log.info("leadership: another node leads; this one stands by")
                self._campaigned.set()
            await asyncio.sleep(self.interval)

    async def _hold(self, term: Term) -> str:
        """Renew until the term ends; why it ended."""
        told = False
        while True:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            if self._resigned is not None:
                return self._resigned
            sent = self._clock()
            remaining = self._valid_until - sent
            if remaining <= 0:
                return (
                    f"no lease renewal succeeded for {self._holds_for:.2f}s: the database is "
                    "out of reach, so another node may lead soon"
                )
            try:
                async with asyncio.timeout(remaining):
                    conn = await self._connect()
                    renewed = await conn.fetchval(_RENEW, term.epoch, self._node, self._lease_us)
            except Exception as exc:  # asyncpg's, the socket's, a timeout: out of reach
                await self._disconnect()
                if not told:
                    log.warning("leadership: lease renewal failed (%s); retrying", exc)
                    told = True
                continue
            if renewed is None:
                return (
                    "the lease was lost: it expired by the database's clock or a newer term began"
                )
            told = False
            self._valid_until = sent + self._holds_for

    @property
    def _holds_for(self) -> float:
        return self.lease - self.lease / 4

    @property
    def _lease_us(self) -> int:
        return round(self.lease * 1_000_000)

    async def _connect(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self._dsn)
        return self._conn

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # terminate(): a stalled connection would hang a graceful close.
            conn.terminate()
