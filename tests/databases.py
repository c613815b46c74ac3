"""The databases tests run against: a fresh SQLite file or a fresh PostgreSQL database.

The storage, fault and end-to-end tests take the ``database`` fixture (see
``tests/conftest.py``) and run once per backend. For PostgreSQL one throwaway
server serves the whole pytest session: its own data directory in a temp dir,
trust authentication, listening on 127.0.0.1 only, at a free port, with
durability turned off for speed (a crash loses a test database, nothing
else). Each test gets a database of its own on it, so no test sees another's
rows.

The binaries come from the Debian package ``postgresql``
(``scripts/ensure_postgres.sh`` installs it). Without them the PostgreSQL half
is skipped, except under CI, which must run both backends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import pwd
import shutil
import sqlite3
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from tests.processes import free_port

__all__ = [
    "BACKENDS",
    "PostgresServer",
    "TestDatabase",
    "find_postgres_bin",
    "holding_write_lock",
    "in_ci",
    "run_async",
    "running_postgres",
    "sqlite_database",
]

BACKENDS = ("sqlite", "postgresql")
# Readings with their sensor run's names, for test queries on either backend.
READINGS_WITH_RUNS = "readings JOIN sensor_runs ON sensor_runs.id = readings.run_id"
POSTGRES_ROOT = Path("/usr/lib/postgresql")
SERVER_USER = "postgres"
"""The database superuser, and the system user the server runs as under root."""
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
# A throwaway server: durability buys nothing here and costs an fsync per commit.
SPEED_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
# ... except for tests that stop the server as a crash would: with the settings
# above an immediate stop loses commits the controller was told were durable
# (a command the manipulator had journaled went missing), so they cannot catch
# a durability defect of the controller's own.
DURABLE_SETTINGS = (
    "fsync=on",
    "synchronous_commit=on",
    "full_page_writes=on",
    # WAL that no commit flushed stays in the server's memory (the WAL writer and the
    # background writer would otherwise write it out within 200 ms), so a crash loses
    # it, as a crash at the wrong moment would: the transaction ids it used are handed
    # out again after recovery (what made a lost COMMIT look committed, tests/test_postgres_crash).
    "wal_writer_delay=10000ms",
    "bgwriter_lru_maxpages=0",
)
LOG_TAIL_LINES = 30
WRITTEN_TABLES = ("readings", "commands")
"""Every table the controller writes (controller/storage/schema.py)."""

T = TypeVar("T")


def in_ci() -> bool:
    """Whether CI is set (``CI=true``, as CI services set it): both backends are required."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a fresh event loop in a worker thread and return its result.

    A thread, because the caller may be inside a running loop (an async test),
    where ``asyncio.run`` refuses to start.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _engine(url: str, **options: Any) -> AsyncEngine:
    # No pool: every call opens and closes its own connection, so nothing is
    # left connected to a database a test is about to drop, or on a dead loop.
    return create_async_engine(url, poolclass=NullPool, **options)


@dataclass(frozen=True)
class TestDatabase:
    """One test's database: where it is, and a way to read it the same on both backends."""

    __test__ = False  # a fixture value, not a test class for pytest to collect

    backend: str
    """``"sqlite"`` or ``"postgresql"``."""
    url: str
    """An SQLAlchemy async URL, as ``--database`` takes it."""
    sqlite_path: Path | None = None
    """The SQLite file; None on PostgreSQL."""

    @property
    def postgres_dsn(self) -> str:
        """The libpq/asyncpg form of :attr:`url` (PostgreSQL only)."""
        if self.backend != "postgresql":
            raise ValueError(f"{self.backend} database has no PostgreSQL DSN")
        return self.url.replace("postgresql+asyncpg://", "postgresql://", 1)

    def fetch(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        """Run ``sql`` (named ``:params``) and return its rows as tuples.

        Booleans come back as 0/1 from SQLite and False/True from PostgreSQL.
        """
        return run_async(self._fetch(sql, params))

    def execute(self, sql: str, **params: Any) -> int:
        """Run ``sql`` (named ``:params``) in its own committed transaction; the row count."""
        return run_async(self._execute(sql, params))

    async def _fetch(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        engine = _engine(self.url)
        try:
            async with engine.connect() as conn:
                result = await conn.execute(text(sql), params)
                return [tuple(row) for row in result.all()]
        finally:
            await engine.dispose()

    async def _execute(self, sql: str, params: dict[str, Any]) -> int:
        engine = _engine(self.url)
        try:
            async with engine.begin() as conn:
                result = await conn.execute(text(sql), params)
                return int(result.rowcount)
        finally:
            await engine.dispose()


@contextlib.asynccontextmanager
async def holding_write_lock(database: TestDatabase) -> AsyncIterator[None]:
    """Another client holds the database's write lock while the block runs.

    SQLite: ``BEGIN EXCLUSIVE`` on a second connection. PostgreSQL: the same
    for every table the controller writes, ``LOCK TABLE ... IN ACCESS EXCLUSIVE
    MODE`` in an open transaction, so its writes wait and fail after its
    ``--busy-timeout`` (PostgreSQL's ``lock_timeout``). Released by rolling back.
    """
    if database.sqlite_path is not None:
        # In a thread: waiting here for a transaction the controller has open
        # must not stop the event loop that controller needs to finish it.
        blocker = sqlite3.connect(
            database.sqlite_path, isolation_level=None, check_same_thread=False
        )
        try:
            await asyncio.to_thread(blocker.execute, "BEGIN EXCLUSIVE")
            yield
            await asyncio.to_thread(blocker.execute, "ROLLBACK")
        finally:
            blocker.close()
        return
    engine = _engine(database.url)
    try:
        async with engine.connect() as conn:  # the statement opens the transaction
            await conn.execute(
                text(f"LOCK TABLE {', '.join(WRITTEN_TABLES)} IN ACCESS EXCLUSIVE MODE")
            )
            try:
                yield
            finally:
                await conn.rollback()
    finally:
        await engine.dispose()


def sqlite_database(directory: Path) -> TestDatabase:
    """A (not yet existing) SQLite database file in ``directory``."""
    path = directory / "workcell.db"
    return TestDatabase("sqlite", f"sqlite+aiosqlite:///{path}", path)


# -- the PostgreSQL server -----------------------------------------------------


def _version_key(bin_dir: Path) -> tuple[int, ...]:
    name = bin_dir.parent.name  # /usr/lib/postgresql/<version>/bin
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def find_postgres_bin(root: Path = POSTGRES_ROOT) -> Path | None:
    """The ``bin`` directory of the highest installed PostgreSQL version, or None."""
    found = [
        initdb.parent
        for initdb in root.glob("*/bin/initdb")
        if (initdb.parent / "postgres").exists() and (initdb.parent / "pg_ctl").exists()
    ]
    return max(found, key=_version_key, default=None)


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


class PostgresServer:
    """A running throwaway PostgreSQL server; make one with :func:`running_postgres`."""

    def __init__(self, bin_dir: Path, root: Path, *, durable: bool = False) -> None:
        self.bin_dir = bin_dir
        self.durable = durable
        """Whether a commit survives the server being stopped like a crash (immediate mode)."""
        self.root = root
        """The temp dir holding the data dir, the socket and the logs."""
        self.data_dir = root / "data"
        self.log_path = root / "postgres.log"
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        # initdb refuses to run as root, and the server with it.
        self._as_user = ["runuser", "-u", SERVER_USER, "--"] if os.geteuid() == 0 else []

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy async URL of ``database`` on this server."""
        return f"postgresql+asyncpg://{SERVER_USER}@127.0.0.1:{self.port}/{database}"

    @contextlib.contextmanager
    def fresh_database(self) -> Iterator[TestDatabase]:
        """A new, empty database for one test, dropped afterwards."""
        name = f"t_{uuid.uuid4().hex}"
        self._admin(f'CREATE DATABASE "{name}"')
        try:
            yield TestDatabase("postgresql", self.url(name))
        finally:
            # FORCE: a process a failed test left behind may still be connected.
            self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _admin(self, statement: str) -> None:
        async def run() -> None:
            # CREATE/DROP DATABASE cannot run inside a transaction block.
            engine = _engine(self.url(), isolation_level="AUTOCOMMIT")
            try:
                async with engine.connect() as conn:
                    await conn.execute(text(statement))
            finally:
                await engine.dispose()

        run_async(run())

    def start(self) -> None:
        """initdb, then start the server and wait until it accepts connections."""
        if self._as_user:
            user = pwd.getpwnam(SERVER_USER)  # KeyError: no such user, said by the caller
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self._run(
            "initdb",
            "-D", str(self.data_dir),
            "-U", SERVER_USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )  # fmt: skip
        for attempt in range(3):
            self.port = free_port()
            try:
                self._start_server()
                return
            except RuntimeError:
                # Only a lost race for the port is worth another try.
                if attempt == 2 or "could not bind" not in _tail(self.log_path):
                    raise

    def _run(self, program: str, *args: str) -> None:
        with (self.root / f"{program}.log").open("ab") as log:
            result = subprocess.run(
                [*self._as_user, str(self.bin_dir / program), *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                timeout=START_TIMEOUT,
                check=False,
            )
        if result.returncode != 0:
            raise RuntimeError(
                f"{program} exited {result.returncode}:\n{_tail(self.root / f'{program}.log')}"
            )

    def _start_server(self) -> None:
        settings = [
            "listen_addresses=127.0.0.1",
            f"unix_socket_directories={self.root}",
            *(DURABLE_SETTINGS if self.durable else SPEED_SETTINGS),
        ]
        command = [*self._as_user, str(self.bin_dir / "postgres"), "-D", str(self.data_dir)]
        command += ["-p", str(self.port)]
        for setting in settings:
            command += ["-c", setting]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
            )
        try:
            run_async(self._wait_ready())
        except Exception:
            self._kill()
            raise

    async def _wait_ready(self) -> None:
        process = self._process
        assert process is not None
        deadline = time.monotonic() + START_TIMEOUT
        last_error = "none"
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"postgres exited {process.returncode} on start "
                    f"(port {self.port}); the end of its log:\n{_tail(self.log_path)}"
                )
            engine = _engine(self.url(), connect_args={"timeout": 2})
            try:
                async with engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
                return
            except (OSError, SQLAlchemyError, TimeoutError) as exc:
                last_error = str(exc).splitlines()[0] if str(exc) else repr(exc)
            finally:
                await engine.dispose()
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"postgres not accepting connections on 127.0.0.1:{self.port} after "
                    f"{START_TIMEOUT:.0f}s (last error: {last_error}); the end of its log:\n"
                    f"{_tail(self.log_path)}"
                )
            await asyncio.sleep(0.1)

    def crash(self) -> None:
        """Stop as a power cut would (immediate mode: no checkpoint, recovery at the next start)."""
        process, self._process = self._process, None
        assert process is not None, "the server is not running"
        self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "immediate", "-w")
        process.wait(STOP_TIMEOUT)

    def restart(self) -> None:
        """Start the stopped server again, on the same port and data."""
        assert self._process is None, "the server is running"
        self._start_server()

    def stop(self) -> None:
        """Fast shutdown (open sessions are ended), then wait for the server to exit."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._run(
                "pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w",
                "-t", str(int(STOP_TIMEOUT)),
            )  # fmt: skip
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()


def _missing(reason: str) -> NoReturn:
    """Skip the PostgreSQL half, or fail it under CI, which must run both backends."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set: both backends must run)", pytrace=False)
    pytest.skip(reason)


@contextlib.contextmanager
def running_postgres(*, durable: bool = False) -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server for as long as the block runs (skipped if not installed).

    ``durable``: fsync and synchronous commits on, for tests that crash it.
    """
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        _missing(
            f"PostgreSQL server binaries not found under {POSTGRES_ROOT}/*/bin: "
            "install the Debian package 'postgresql' (make postgres)"
        )
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.fail("running as root needs runuser (util-linux) to start PostgreSQL", pytrace=False)
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            pytest.fail(
                f"running as root: PostgreSQL needs the system user {SERVER_USER!r} "
                "(the Debian package creates it)",
                pytrace=False,
            )
    root = Path(tempfile.mkdtemp(prefix="workcell-pg-"))
    server = PostgresServer(bin_dir, root, durable=durable)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
