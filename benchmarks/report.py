"""Tables and the targets of issues 4 and 15 (pure: no I/O)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "Combined",
    "Measured",
    "ScenarioResult",
    "Spread",
    "Target",
    "format_table",
    "spread",
    "summary_rows",
]


@dataclass(frozen=True, slots=True)
class Measured:
    """One process (or in-process part) of one run, over the measurement window."""

    run: str
    process: str
    readings_per_s: float | None = None
    cpu_percent: float | None = None
    cpu_s_per_million: float | None = None
    peak_rss_mib: float | None = None
    note: str = ""


@dataclass(frozen=True, slots=True)
class Spread:
    """The median of a figure's runs and its range; ``runs`` says how many there were."""

    median: float
    low: float
    high: float
    runs: int

    def __str__(self) -> str:
        return format_spread(self)


def spread(values: Sequence[float]) -> Spread:
    """The median and min-max of ``values`` (at least one)."""
    if not values:
        raise ValueError("no runs to summarize")
    return Spread(statistics.median(values), min(values), max(values), len(values))


def format_spread(value: Spread) -> str:
    """``median [low-high]``, digits as the tables give them; the median alone for one run."""
    median = _number(value.median, value.median)
    if value.runs == 1:
        return median
    return f"{median} [{_number(value.low, value.median)}-{_number(value.high, value.median)}]"


def _number(value: float, scale: float) -> str:
    # The same digits for the median and its bounds, chosen by the median's size.
    size = abs(scale)
    digits = 0 if size >= 100 else 2 if size >= 1 else 3
    return f"{value:,.{digits}f}"


@dataclass(frozen=True, slots=True)
class Combined:
    """One process over every repetition of a run: each figure's median and spread."""

    run: str
    process: str
    readings_per_s: Spread | None = None
    cpu_percent: Spread | None = None
    cpu_s_per_million: Spread | None = None
    peak_rss_mib: Spread | None = None
    note: str = ""


@dataclass(frozen=True, slots=True)
class Target:
    """One target of the issue: what was measured against what, and whether it holds."""

    scenario: str
    target: str
    measured: str
    ratio: float | None
    passed: bool


@dataclass(slots=True)
class ScenarioResult:
    """Everything one scenario measured."""

    key: str
    title: str
    rows: list[Measured | Combined] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    extra: tuple[tuple[str, ...], list[tuple[object, ...]]] | None = None
    """A further table of the scenario's own shape (headers, rows), printed after ``rows``."""

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "key": self.key,
            "title": self.title,
            "rows": [asdict(row) for row in self.rows],
            "targets": [asdict(target) for target in self.targets],
            "values": self.values,
            "extra": None
            if self.extra is None
            else [
                dict(zip(self.extra[0], map(_json_cell, row), strict=True)) for row in self.extra[1]
            ],
        }


def _json_cell(value: object) -> object:
    return asdict(value) if isinstance(value, Spread) else value


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, Spread):
        return format_spread(value)
    if isinstance(value, float):
        size = abs(value)
        digits = 0 if size >= 100 else 2 if size >= 1 else 3
        return f"{value:,.{digits}f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table: left-aligned text, right-aligned numbers, ``-`` for None."""
    cells = [[_cell(value) for value in row] for row in rows]
    numeric = [
        bool(rows)
        and all(isinstance(row[i], int | float | Spread) or row[i] is None for row in rows)
        for i in range(len(headers))
    ]
    widths = [
        max([len(header), *(len(row[i]) for row in cells)]) for i, header in enumerate(headers)
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            value.rjust(width) if is_number else value.ljust(width)
            for value, width, is_number in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in cells)])


MEASURED_HEADERS = (
    "run",
    "process",
    "durable readings/s",
    "CPU %",
    "CPU s / 1M readings",
    "peak RSS MiB",
    "note",
)


def measured_table(rows: Sequence[Measured | Combined]) -> str:
    """The table of a scenario's measured processes."""
    return format_table(
        MEASURED_HEADERS,
        [
            (
                r.run,
                r.process,
                r.readings_per_s,
                r.cpu_percent,
                r.cpu_s_per_million,
                r.peak_rss_mib,
                r.note,
            )
            for r in rows
        ],
    )


SUMMARY_HEADERS = ("scenario", "target", "measured", "ratio", "result")


def summary_rows(targets: Sequence[Target]) -> list[tuple[object, ...]]:
    """Rows of the summary table."""
    return [
        (
            t.scenario,
            t.target,
            t.measured,
            None if t.ratio is None else round(t.ratio, 3),
            "pass" if t.passed else "FAIL",
        )
        for t in targets
    ]


def ratio(value: float, ceiling: float) -> float:
    """``value / ceiling``; infinity when the ceiling is 0."""
    return value / ceiling if ceiling else float("inf")
