"""Peak memory and wall time of ``workcell history`` and ``workcell report`` on a long history.

Run with ``.venv/bin/python scripts/client_memory.py [--commands 100000] [--dir DIR]``.

It makes an SQLite database with the controller's schema and ``--commands`` commands, one per
5 s period ending now (100,000 is about 5.8 days), written through
:func:`controller.storage.rows.command_values` as the controller writes them: statuses in runs of
random length, means that drift and shift, p-values from 1e-30 to 1, one decision in twenty
untested, one command in a hundred pending. Then it starts a real controller on that file
(``--manipulator`` at a closed port, so nothing is acknowledged meanwhile) and runs each client
command under ``/usr/bin/time -v``, output to /dev/null, and prints its peak RSS and wall time.

Result (100,000 commands, 2-core machine shared with other work): before streaming, ``history``
235 MiB / 13.8 s, ``history --json`` 241 MiB / 21.2 s, ``report`` over everything 729 MiB /
66.8 s. After: ``history`` 55 MiB / 12.6 s (55 MiB at 1,000 and at 1,000,000 commands),
``report`` 168 MiB / 4.3 s for its default 24 h, 168 MiB / 8.1 s for all 100,000 commands,
169 MiB / 46 s for 1,000,000.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.storage import create_schema
from controller.decision.rule import WindowSummary
from controller.records import CommandRecord
from controller.storage.rows import command_values

PERIOD_US = 5_000_000
ROOT = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(r"listening on (\S+):(\d+)")


def _records(count: int, seed: int) -> list[CommandRecord]:
    rng = random.Random(seed)
    end_us = (time.time_ns() // 1000 // PERIOD_US) * PERIOD_US
    first_start = end_us - count * PERIOD_US
    records = []
    status = "down"
    run_left = 0
    level = 100.0
    previous = WindowSummary(1500, level, 10.0)
    for i in range(count):
        start = first_start + i * PERIOD_US
        if run_left == 0:
            run_left = 1 + int(rng.expovariate(1 / 6))
            status = "up" if status == "down" else "down"
            level += rng.choice((-1, 1)) * rng.uniform(1, 20)
        run_left -= 1
        window = WindowSummary(rng.randint(1400, 1600), level + rng.gauss(0, 0.5), 10.0)
        untested = rng.random() < 0.05
        p_value = None if untested else 10 ** -rng.uniform(0, 30)
        records.append(
            CommandRecord(
                id=i + 1,
                status=status,
                window_start=start,
                window_end=start + PERIOD_US,
                issued_at=start + PERIOD_US + 500_000,
                outcome="too_few_readings" if untested else "significant",
                changed=run_left == 0,
                p_value=p_value,
                alpha=0.05,
                window=window,
                previous=previous,
                acknowledged_at=None if rng.random() < 0.01 else start + PERIOD_US + 510_000,
            )
        )
        previous = window
    return records


def fill(path: Path, count: int, seed: int = 1) -> None:
    """The schema and ``count`` commands ending at the current period."""
    create_schema(path)
    rows = [command_values(record) for record in _records(count, seed)]
    columns = list(rows[0])
    with sqlite3.connect(path) as connection:
        connection.executemany(
            f"INSERT INTO commands ({', '.join(columns)}) "
            f"VALUES ({', '.join(':' + c for c in columns)})",
            rows,
        )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_controller(path: Path) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [
            sys.executable, "-m", "controller",
            "--listen", "127.0.0.1:0",
            "--manipulator", f"127.0.0.1:{_closed_port()}",
            "--database", f"sqlite+aiosqlite:///{path}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert process.stderr is not None
    for line in process.stderr:
        if match := _LISTENING.search(line):
            # Keep reading its stderr so the pipe never fills.
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return process, f"127.0.0.1:{match.group(2)}"
    raise RuntimeError(f"controller exited with {process.wait()}")


def measure(args: list[str], folder: Path) -> tuple[float, float, int]:
    """Peak RSS (MiB), wall seconds and exit status of ``workcell ARGS``."""
    timing = folder / "time.txt"
    result = subprocess.run(
        ["/usr/bin/time", "-v", "-o", str(timing),
         sys.executable, "-m", "workcell.cli", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=folder,
        timeout=900,
    )  # fmt: skip
    text = timing.read_text()
    rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))  # type: ignore[union-attr]
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", text)
    assert wall is not None
    hours, minutes, seconds = wall.groups()
    elapsed = int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
    if result.returncode:
        print(f"  (exit {result.returncode}: {result.stderr.strip()[-300:]})")
    return rss_kib / 1024, elapsed, result.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commands", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary files go")
    parser.add_argument(
        "--case",
        action="append",
        default=None,
        help="only this client command (repeatable): "
        "history, history-json, history-merge, report, report-all",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as name:
        folder = Path(name)
        path = folder / "workcell.db"
        fill(path, args.commands)
        days = args.commands * PERIOD_US / 86_400e6
        print(f"{args.commands:,} commands ({days:.1f} days at 5 s) in {path}")
        controller, address = _start_controller(path)
        try:
            everything = "2000-01-01T00:00:00Z"
            cases = {
                "history": ["history"],
                "history-json": ["history", "--json"],
                "history-merge": ["history", "--merge"],
                "report": ["report", "-o", str(folder / "r.png")],
                "report-all": ["report", "--from", everything, "-o", str(folder / "all.png")],
            }
            for case in args.case or list(cases):
                extra = cases[case]
                rss, wall, _ = measure([extra[0], "--controller", address, *extra[1:]], folder)
                print(f"workcell {' '.join(extra)}: peak RSS {rss:,.0f} MiB, wall {wall:.1f} s")
                sys.stdout.flush()
        finally:
            controller.terminate()
            controller.wait(30)


if __name__ == "__main__":
    main()
