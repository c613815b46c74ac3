"""How long the copying migration 0002 takes on an SQLite database of a given size.

Run with ``.venv/bin/python scripts/migration_time.py [--readings 8640000] [--dir DIR]``.

It makes a database at revision 0001 (names in every reading) with the given number of
readings from 8 sensors, 1/300 s apart as at the default load, then opens it the way the
controller does at start (:meth:`controller.storage.database.Database.open`, which migrates to
the newest revision) and prints how long that took and the file sizes before and after. The file is
removed at the end.

Result (8,640,000 readings, one hour at the default load; 2-core machine): 67 s, the file
grew from 1,474 to 1,893 MiB (the old table's pages stay in the file as free pages, reused by
new readings).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy.ext.asyncio import create_async_engine

from controller.storage.database import Database
from controller.storage.migrate import upgrade

SENSORS = 8
STEP_US = 3_333  # 300 readings a second
_INSERT_0001 = (
    "INSERT INTO readings (sensor_id, boot_id, seq, payload, timestamp, received_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


async def _at_0001(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(upgrade, "0001")
    finally:
        await engine.dispose()


def _fill(path: Path, readings: int) -> None:
    runs = [(f"sensor-{uuid.uuid4().hex[:12]}", uuid.uuid4().hex) for _ in range(SENSORS)]
    start_us = time.time_ns() // 1000
    with sqlite3.connect(path) as conn:
        rows = []
        for i in range(readings):
            sensor_id, boot_id = runs[i % SENSORS]
            created = start_us + (i // SENSORS) * STEP_US + (i % SENSORS) * 400
            rows.append(
                (sensor_id, boot_id, i // SENSORS + 1, random.randint(0, 200), created, created)
            )
            if len(rows) == 100_000:
                conn.executemany(_INSERT_0001, rows)
                rows.clear()
        conn.executemany(_INSERT_0001, rows)


async def _migrate(url: str) -> None:
    database = await Database.open(url)
    await database.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", type=int, default=8_640_000)
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary file goes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        path = Path(folder) / "workcell.db"
        url = f"sqlite+aiosqlite:///{path}"
        asyncio.run(_at_0001(url))
        _fill(path, args.readings)
        before = path.stat().st_size
        started = time.perf_counter()
        asyncio.run(_migrate(url))
        seconds = time.perf_counter() - started
        after = path.stat().st_size
    print(
        f"{args.readings:,} readings: migrated 0001 -> head in {seconds:.1f} s; "
        f"file {before / 2**20:,.0f} MiB before, {after / 2**20:,.0f} MiB after"
    )


if __name__ == "__main__":
    main()
