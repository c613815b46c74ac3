"""How long the manipulator takes to open a long journal, and how much memory that takes.

Run with ``.venv/bin/python scripts/journal_open_time.py [--lines 1000000] [--dir DIR]``.

It writes a journal of the given number of lines (three origins one after the other, as
after two database replacements, each a sequence of commands 5 s apart, with a new leader
every 100,000 commands), then, in a fresh
process, opens it the way the manipulator does at start (:class:`manipulator.journal.Journal`
reads every line once to learn each origin's last id and epoch) and prints the time, how much the
process's peak RSS grew, and the time to look up (and refuse) a different version of the
first origin's last command, which is no longer among the records kept in memory. The file is
removed at the end.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from manipulator.errors import CommandRefused
from manipulator.journal import Journal, JournalRecord
from workcell.timeconv import US_PER_SECOND, to_iso

ORIGINS = 3
PERIOD_US = 5 * US_PER_SECOND
COMMANDS_PER_EPOCH = 100_000
START_US = 1_700_000_000 * US_PER_SECOND


def _record(origin: str, command_id: int, status: str = "up") -> JournalRecord:
    window = START_US + command_id * PERIOD_US
    return JournalRecord(
        command_id=command_id,
        origin=origin,
        epoch=1 + command_id // COMMANDS_PER_EPOCH,
        status=status,
        window_start=to_iso(window),
        window_end=to_iso(window + PERIOD_US),
        issued_at=to_iso(window + PERIOD_US + 500_123),
        received_at=to_iso(window + PERIOD_US + 501_456),
    )


def _write(path: Path, lines: int) -> tuple[str, int]:
    """Write the journal; the first origin and its last id."""
    origins = [str(uuid.uuid4()) for _ in range(ORIGINS)]
    counts = [lines // ORIGINS + (1 if i < lines % ORIGINS else 0) for i in range(ORIGINS)]
    with path.open("wb") as out:
        for origin, count in zip(origins, counts, strict=True):
            chunk = []
            for command_id in range(1, count + 1):
                chunk.append(_record(origin, command_id).to_line())
                if len(chunk) == 100_000:
                    out.write(b"".join(chunk))
                    chunk.clear()
            out.write(b"".join(chunk))
    return origins[0], counts[0]


def _open(path: Path, origin: str, last_id: int) -> dict[str, float]:
    """Open the journal and look up one old command; the figures."""
    started = time.perf_counter()
    journal = Journal(path)
    opened = time.perf_counter() - started
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    try:
        journal.append(_record(origin, last_id, status="down"))
    except CommandRefused:
        pass
    else:
        raise SystemExit("a different version of a journaled command was journaled")
    looked_up = time.perf_counter() - started
    journal.close()
    return {"opened": opened, "rss_mib": peak_rss / 1024, "looked_up": looked_up}


def _measure(path: Path, lines: int) -> dict[str, float]:
    """Write a journal of ``lines`` lines, open it in a fresh process; the figures."""
    # Both steps in fresh processes: the opening one's peak RSS is then its
    # own (Linux carries a parent's peak over into a child).
    written = subprocess.run(
        [sys.executable, __file__, "--write", str(path), str(lines)],
        capture_output=True,
        text=True,
        check=True,
    )
    origin, last_id = json.loads(written.stdout)
    child = subprocess.run(
        [sys.executable, __file__, "--open", str(path), origin, str(last_id)],
        capture_output=True,
        text=True,
        check=True,
    )
    figures: dict[str, float] = json.loads(child.stdout)
    figures["size_mb"] = path.stat().st_size / 1e6
    path.unlink()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: /tmp)")
    parser.add_argument("--open", nargs=3, metavar=("PATH", "ORIGIN", "ID"), help=argparse.SUPPRESS)
    parser.add_argument("--write", nargs=2, metavar=("PATH", "LINES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        print(json.dumps(_write(Path(args.write[0]), int(args.write[1]))))
        return
    if args.open:
        path, origin, last_id = args.open
        print(json.dumps(_open(Path(path), origin, int(last_id))))
        return
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        small = _measure(Path(tmp) / "small.jsonl", ORIGINS)
        figures = _measure(Path(tmp) / "journal.jsonl", args.lines)
    print(
        f"{args.lines:,} lines ({figures['size_mb']:,.0f} MB, {ORIGINS} origins): opened in "
        f"{figures['opened']:.2f} s; peak RSS {figures['rss_mib']:.1f} MiB "
        f"({small['rss_mib']:.1f} MiB with a journal of {ORIGINS} lines); a different version "
        f"of an old command found and refused in {figures['looked_up']:.2f} s"
    )


if __name__ == "__main__":
    main()
