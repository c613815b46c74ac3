"""``python -m benchmarks.rate_over_time``: (b)'s durable rate, step by step, over one run.

Scenario (b) reports one rate over its whole window; this prints it every ``--step`` seconds
(the controller on a fresh SQLite file under the flooding generators of (b)), to see whether
a run slows down as it goes on (its database grows, and the generators start a sensor run
for every stream of 500 readings). A diagnostic, not a target: no ceiling is measured.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.cell import generated_run
from benchmarks.generators import stop_generators
from benchmarks.saturation import ONE_PER_MESSAGE


def main() -> None:
    """Run the controller under (b)'s load; print the durable rate of each step."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rate_over_time")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long (default 60)")
    parser.add_argument("--step", type=float, default=5.0, help="seconds a line (default 5)")
    parser.add_argument(
        "--work-dir", type=Path, default=Path("build/bench/rate-over-time"), help="run files"
    )
    args = parser.parse_args()
    with generated_run(args.work_dir, ONE_PER_MESSAGE.args()) as run:
        database = run.database
        started = before_at = time.monotonic()
        before = database.count()
        rates = []
        while before_at - started < args.seconds:
            time.sleep(args.step)
            now, count = time.monotonic(), database.count()
            rates.append((count - before) / (now - before_at))
            print(f"{now - started:6.0f} s  {rates[-1]:9,.0f} durable readings/s", flush=True)
            before, before_at = count, now
        stop_generators(run.generators)
    half = len(rates) // 2
    if half:
        first, last = sum(rates[:half]) / half, sum(rates[-half:]) / half
        change = f" ({last / first:.2f})" if first else ""
        print(f"first half {first:,.0f}/s, second half {last:,.0f}/s{change}")


if __name__ == "__main__":
    main()
