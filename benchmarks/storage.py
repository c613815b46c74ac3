"""The storage ceiling: raw ``sqlite3`` inserts into the controller's ``readings`` table.

Same schema (made by the controller's migrations, unique key and index included), WAL,
the controller's ``synchronous`` setting, one transaction per batch of 1,000 rows. Only the
inserts and commits are timed; rows are built beforehand. Two means, the ceiling being the
faster: ``executemany`` of the one-row INSERT, and the controller's own multi-row INSERTs
(:data:`controller.storage.sqlite.INSERT_CHUNK` rows a statement, and powers of two for the
rest), whose binding is part of what is timed.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy import create_engine

from controller.storage.migrate import upgrade
from controller.storage.sqlite import insert_chunks

__all__ = ["MEANS", "StorageCeiling", "create_schema", "storage_ceiling"]

Means = Literal["executemany", "multi-row"]
MEANS: tuple[Means, ...] = ("executemany", "multi-row")

INSERT_RUN = "INSERT INTO sensor_runs (id, sensor_id, boot_id) VALUES (?, ?, ?)"
INSERT = (
    "INSERT INTO readings (run_id, seq, payload, timestamp, received_at) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id, seq) DO NOTHING"
)


@dataclass(frozen=True, slots=True)
class StorageCeiling:
    """Rows inserted and the seconds the inserts and commits took."""

    rows: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        """The ceiling."""
        return self.rows / self.seconds if self.seconds else 0.0


def create_schema(path: Path) -> None:
    """Create the controller's tables in the SQLite file ``path``, as its migrations do."""
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as connection:
            upgrade(connection)
    finally:
        engine.dispose()


def storage_ceiling(
    path: Path,
    seconds: float,
    *,
    means: Means = "executemany",
    synchronous: str = "NORMAL",
    batch: int = 1000,
) -> StorageCeiling:
    """Insert batches of ``batch`` rows by ``means`` for about ``seconds`` of insert time."""
    create_schema(path)
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={synchronous}")
        rows = 0
        spent = 0.0
        run = 0
        while spent < seconds:
            # Eight sensors' readings interleaved, like the controller's groups
            # (each batch from new runs, so no key is ever repeated).
            base = time.time_ns() // 1000
            connection.executemany(
                INSERT_RUN,
                [(run + k, f"sensor-{k}", uuid.uuid4().hex) for k in range(1, 9)],
            )
            chunk = [(run + 1 + i % 8, i, i % 1000, base + i, base + i) for i in range(batch)]
            run += 8
            started = time.perf_counter()
            connection.execute("BEGIN")
            if means == "executemany":
                connection.executemany(INSERT, chunk)
            else:
                insert_chunks(connection, chunk)
            connection.execute("COMMIT")
            spent += time.perf_counter() - started
            rows += batch
        return StorageCeiling(rows, spent)
    finally:
        connection.close()
