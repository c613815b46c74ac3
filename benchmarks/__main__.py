"""``python -m benchmarks``: run the scenarios of issues 4 and 12 and print their tables.

Each scenario's table is printed as it finishes, then a summary of every target with its
ratio and pass/fail; everything is also written as JSON to ``build/bench/results.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.profiles import top_own_time
from benchmarks.report import (
    SUMMARY_HEADERS,
    ScenarioResult,
    format_table,
    measured_table,
    summary_rows,
)
from benchmarks.scenarios import SCENARIOS, Settings, run_scenario
from workcell.logs import configure_logging

log = logging.getLogger("benchmarks")

OUTPUT = Path("build/bench")
DEFAULT_SCENARIOS = "a,b,c,d,e,f"


def _scenarios(text: str) -> list[str]:
    keys = [key.strip() for key in text.split(",") if key.strip()]
    unknown = [key for key in keys if key not in SCENARIOS]
    if unknown or not keys:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of {', '.join(SCENARIOS)}, got {text!r}"
        )
    return keys


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"expected seconds in (0, 3600], got {text!r}")
    return value


def _node_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(item) for item in text.split(",") if item.strip())
    except ValueError:
        counts = ()
    if not counts or not all(1 <= count <= 16 for count in counts):
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of node counts from 1 to 16, got {text!r}"
        )
    return counts


def parse_settings(argv: list[str] | None = None) -> tuple[list[str], Settings]:
    """The scenarios to run and their settings, from the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure the cell against ceilings measured in the same run (issues 4, 12).",
    )
    parser.add_argument(
        "--scenarios",
        type=_scenarios,
        default=_scenarios(DEFAULT_SCENARIOS),
        help="comma-separated: a,b,c,d,e,f and m (5-minute memory soak) "
        f"(default: {DEFAULT_SCENARIOS})",
    )
    parser.add_argument(
        "--duration",
        type=_seconds,
        help="seconds of every timed window (default: 60 for (a), (b), (c), (f); 300 for (m))",
    )
    parser.add_argument(
        "--nodes",
        type=_node_counts,
        default=(1, 2, 3),
        help="(f): the controller node counts to run, comma-separated (default: 1,2,3)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short windows and 10^5 in place of 10^6 for (d) and (e): a smoke run",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record the controller with py-spy during (a), (b), (c), (m); print its top frames",
    )
    parser.add_argument("--output", type=Path, default=OUTPUT, help="results and logs folder")
    args = parser.parse_args(argv)
    settings = Settings(work_dir=args.output / "runs", profile=args.profile, node_counts=args.nodes)
    if args.quick:
        settings = replace(
            settings, nominal_s=8.0, saturation_s=8.0, storage_s=3.0, soak_s=30.0, big=100_000
        )
    if args.duration is not None:
        settings = replace(
            settings,
            nominal_s=args.duration,
            saturation_s=args.duration,
            storage_s=min(settings.storage_s, args.duration),
            soak_s=args.duration,
        )
    return args.scenarios, settings


def _print_profile(result: ScenarioResult) -> None:
    profile = result.values.get("profile")
    if not profile:
        return
    with open(profile) as lines:
        top = top_own_time(lines)
    print(f"\ncontroller profile under {result.key}, own time (py-spy, {profile}):")
    print(
        format_table(
            ("frame", "samples", "share"),
            [(frame, samples, round(share, 3)) for frame, samples, share in top],
        )
    )


def main(argv: list[str] | None = None) -> int:
    """Run the scenarios; exit 0 whether or not targets are met (1 if a scenario broke)."""
    keys, settings = parse_settings(argv)
    configure_logging("INFO")
    results: list[ScenarioResult] = []
    broken = False
    started = time.monotonic()
    for key in keys:
        log.info("scenario %s: running", key)
        try:
            result = run_scenario(key, settings)
        except Exception:
            log.exception("scenario %s failed (logs under %s)", key, settings.work_dir)
            broken = True
            continue
        results.append(result)
        print(f"\n{result.title}")
        print(measured_table(result.rows), flush=True)
        _print_profile(result)
    targets = [target for result in results for target in result.targets]
    print(f"\nsummary ({time.monotonic() - started:.0f} s)")
    print(format_table(SUMMARY_HEADERS, summary_rows(targets)), flush=True)
    output = settings.work_dir.parent / "results.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps(
            {
                "settings": {
                    "nominal_s": settings.nominal_s,
                    "saturation_s": settings.saturation_s,
                    "big": settings.big,
                },
                "scenarios": [result.as_json() for result in results],
            },
            indent=2,
        )
    )
    print(f"results written to {output}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
