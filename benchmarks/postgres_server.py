"""A throwaway PostgreSQL server for a benchmark run, started as ``tests/databases.py`` does.

initdb into a temp dir, ``postgres`` on 127.0.0.1 at a free port, trust authentication; as
root both run as the ``postgres`` system user (initdb refuses root). Unlike the test server
it keeps PostgreSQL's default durability (``fsync``, ``synchronous_commit`` on): the
benchmark counts durable readings, so every commit waits for its WAL flush as in production.

Its CPU is that of the whole process tree (postmaster, a backend per connection, background
writers), read from ``/proc`` (:func:`benchmarks.procstat.read_tree_cpu`). The binaries come
from the Debian package ``postgresql`` (``make postgres``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import asyncpg

from benchmarks.procstat import Usage, read_tree_cpu

__all__ = ["POSTGRES_ROOT", "PostgresError", "PostgresServer", "find_postgres_bin", "postgres"]

POSTGRES_ROOT = Path("/usr/lib/postgresql")
USER = "postgres"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
PORT_ATTEMPTS = 3
_ACTIVITY = (
    "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()), "
    "(SELECT wal_bytes FROM pg_stat_wal), pg_database_size(current_database())"
)


class PostgresError(RuntimeError):
    """The server could not be set up, started or asked."""


def find_postgres_bin(root: Path = POSTGRES_ROOT) -> Path | None:
    """The ``bin`` directory of the highest installed PostgreSQL version, or None."""
    found = [
        initdb.parent
        for initdb in root.glob("*/bin/initdb")
        if (initdb.parent / "postgres").exists() and (initdb.parent / "pg_ctl").exists()
    ]

    def version(bin_dir: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in bin_dir.parent.name.split(".") if part.isdigit())

    return max(found, key=version, default=None)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _integer(value: object) -> int:
    # bigint counters come as int, numeric ones (wal_bytes) as Decimal.
    if isinstance(value, int | Decimal):
        return int(value)
    raise PostgresError(f"expected a number, got {value!r}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


async def _scalar(dsn: str, sql: str) -> object:
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        return await connection.fetchval(sql)
    finally:
        await connection.close()


async def _row(dsn: str, sql: str) -> tuple[object, ...]:
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        row = await connection.fetchrow(sql)
    finally:
        await connection.close()
    if row is None:
        raise PostgresError(f"no row from {sql!r}")
    return tuple(row)


async def _execute(dsn: str, sql: str) -> None:
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        # The simple query protocol, outside any transaction block (CREATE DATABASE needs it).
        await connection.execute(sql)
    finally:
        await connection.close()


class PostgresServer:
    """A running server; make one with :func:`postgres`."""

    def __init__(self, bin_dir: Path, root: Path) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.log_path = root / "postgres.log"
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._as_user = ["runuser", "-u", USER, "--"] if os.geteuid() == 0 else []

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The server's process (``runuser`` under root, the postmaster below it)."""
        if self._process is None:
            raise PostgresError("the server is not running")
        return self._process

    def url(self, database: str) -> str:
        """The controller's ``--database`` URL of ``database``."""
        return f"postgresql+asyncpg://{USER}@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str) -> str:
        """The asyncpg DSN of ``database``."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def count(self, database: str, table: str) -> int:
        """The rows in ``table`` of ``database``, now (a connection of its own)."""
        value = asyncio.run(_scalar(self.dsn(database), f"SELECT count(*) FROM {table}"))
        if not isinstance(value, int):
            raise PostgresError(f"count(*) of {table} gave {value!r}")
        return value

    def activity(self, database: str) -> dict[str, int]:
        """Counters of work done so far: ``commits`` and ``database_bytes`` (its size on disk)
        of ``database``, ``wal_bytes`` of the whole server.

        PostgreSQL's statistics are flushed by each backend about once a second, so a
        difference over a window is good to about a second's worth.
        """
        row = asyncio.run(_row(self.dsn(database), _ACTIVITY))
        return {
            "commits": _integer(row[0]),
            "wal_bytes": _integer(row[1]),
            "database_bytes": _integer(row[2]),
        }

    def text(self, database: str, sql: str) -> str | None:
        """The one text value ``sql`` returns on ``database`` (None: NULL or no row)."""
        value = asyncio.run(_scalar(self.dsn(database), sql))
        return None if value is None else str(value)

    def execute(self, database: str, sql: str) -> None:
        """Run one statement on ``database``, outside a transaction block."""
        asyncio.run(_execute(self.dsn(database), sql))

    def usage(self) -> Usage:
        """CPU of the server's whole process tree (memory is not summed: shared buffers)."""
        return Usage(read_tree_cpu(self.process.pid), 0.0, 0, 0)

    def log_text(self) -> str:
        """The server's log."""
        return self.log_path.read_text(errors="replace")

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A new empty database for one run (its name), dropped afterwards."""
        name = f"bench_{uuid.uuid4().hex[:12]}"
        self.execute("postgres", f'CREATE DATABASE "{name}"')
        try:
            yield name
        finally:
            # FORCE: a node that did not stop cleanly may still be connected.
            self.execute("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def start(self) -> None:
        """initdb, then start the server on a free port and wait until it answers."""
        if self._as_user:
            user = pwd.getpwnam(USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self._run(
            "initdb", "-D", str(self.root / "data"), "-U", USER, "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        for attempt in range(PORT_ATTEMPTS):
            self.port = _free_port()
            try:
                self._start_server()
                return
            except PostgresError:
                # Only a port taken between asking and binding is worth another try.
                if attempt == PORT_ATTEMPTS - 1 or "could not bind" not in _tail(self.log_path):
                    raise

    def stop(self) -> None:
        """Fast shutdown (sessions ended), then wait for the server to exit."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(PostgresError, subprocess.TimeoutExpired):
            self._run("pg_ctl", "stop", "-D", str(self.root / "data"), "-m", "fast", "-w")
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _run(self, program: str, *args: str) -> None:
        log_path = self.root / f"{program}.log"
        with log_path.open("ab") as log:
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
            raise PostgresError(f"{program} exited {result.returncode}:\n{_tail(log_path)}")

    def _start_server(self) -> None:
        command = [*self._as_user, str(self.bin_dir / "postgres"), "-D", str(self.root / "data")]
        command += ["-p", str(self.port), "-c", "listen_addresses=127.0.0.1"]
        command += ["-c", f"unix_socket_directories={self.root}"]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._process.poll() is not None:
                self._process = None
                raise PostgresError(f"postgres exited on start:\n{_tail(self.log_path)}")
            try:
                asyncio.run(_scalar(self.dsn("postgres"), "SELECT 1"))
                return
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                if time.monotonic() > deadline:
                    self.stop()
                    raise PostgresError(
                        f"postgres not answering on 127.0.0.1:{self.port} after "
                        f"{START_TIMEOUT:.0f} s ({exc}):\n{_tail(self.log_path)}"
                    ) from exc
            time.sleep(0.1)


@contextlib.contextmanager
def postgres(log_dir: Path) -> Iterator[PostgresServer]:
    """A throwaway server for as long as the block runs; its log is kept in ``log_dir``."""
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        raise PostgresError(
            f"PostgreSQL server binaries not found under {POSTGRES_ROOT}/*/bin: "
            "install the Debian package 'postgresql' (make postgres)"
        )
    root = Path(tempfile.mkdtemp(prefix="workcell-bench-pg-"))
    server = PostgresServer(bin_dir, root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        with contextlib.suppress(OSError):
            shutil.copyfile(server.log_path, log_dir / "postgres.log")
        shutil.rmtree(root, ignore_errors=True)
