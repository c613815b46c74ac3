"""``python -m benchmarks``: run the scenarios of issues 4, 12 and 15 and print their tables.

Each scenario's table is printed as it finishes (medians and min-max spreads of its
``--repeat`` runs), then a summary of every target with its ratio of medians and pass/fail;
everything is also written as JSON to ``build/bench/results.json``.
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
DEFAULT_SCENARIOS = "a,b,l,c,b-pg,c-pg,d,e,f"
DEFAULT_REPEAT = 3


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


def _repeat(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 20:
        raise argparse.ArgumentTypeError(f"expected a number of runs from 1 to 20, got {text!r}")
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
        help="comma-separated: a, b, c, d, e, f, l (latency), b-pg and c-pg ((b), (c) on "
        f"PostgreSQL), m (5-minute memory soak) (default: {DEFAULT_SCENARIOS})",
    )
    parser.add_argument(
        "--duration",
        type=_seconds,
        help="seconds of every timed window (default: 60 for (a), (b), (c), (f); 30 for (l); "
        "300 for (m))",
    )
    parser.add_argument(
        "--repeat",
        type=_repeat,
        help=f"runs of each timed scenario's every side, interleaved (default: {DEFAULT_REPEAT}; "
        "1 with --quick)",
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
        help="short windows, 1 run each, 10^5 in place of 10^6 for (d) and (e): a smoke run",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record the controller with py-spy during (a), (b), (c), (m); print its top frames",
    )
    parser.add_argument("--output", type=Path, default=OUTPUT, help="results and logs folder")
    args = parser.parse_args(argv)
    settings = Settings(
        work_dir=args.output / "runs",
        profile=args.profile,
        node_counts=args.nodes,
        repeat=DEFAULT_REPEAT,
    )
    if args.quick:
        settings = replace(
            settings,
            nominal_s=8.0,
            saturation_s=8.0,
            storage_s=3.0,
            soak_s=30.0,
            latency_s=5.0,
            big=100_000,
            repeat=1,
        )
    if args.duration is not None:
        settings = replace(
            settings,
            nominal_s=args.duration,
            saturation_s=args.duration,
            storage_s=min(settings.storage_s, args.duration),
            soak_s=args.duration,
            latency_s=args.duration,
        )
    if args.repeat is not None:
        settings = replace(settings, repeat=args.repeat)
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
    if settings.repeat == 1:
        print(
            "1 run of each side (--quick or --repeat 1): a smoke run; figures are single runs, "
            "no spread, not to be quoted",
            flush=True,
        )
    else:
        print(
            f"{settings.repeat} interleaved runs of each side: figures are medians "
            "[min-max of the runs], targets ratios of medians",
            flush=True,
        )
    for key in keys:
        log.info("scenario %s: running", key)
        try:
            result = run_scenario(key, settings)
        except Exception:
            log.exception("scenario %s failed (logs under %s)", key, settings.work_dir)
            broken = True
            continue
        results.append(result)
        if key == "b":
            # (l) loads the controller at fractions of this saturation.
            settings = replace(settings, saturation_rate=result.values["durable_median"])
        print(f"\n{result.title}")
        if result.rows:
            print(measured_table(result.rows), flush=True)
        if result.extra is not None:
            print(format_table(*result.extra), flush=True)
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
                    "latency_s": settings.latency_s,
                    "repeat": settings.repeat,
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
