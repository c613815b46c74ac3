"""What ``workcell report`` draws, computed from ``HistoryEntry`` messages.

Pure data preparation: ``HistoryEntry`` messages in, numpy arrays and frozen
dataclasses out, with times as aware UTC datetimes. No plotting and no I/O
here; the drawing lives in ``workcell.report``, the fetching in ``workcell.cli``.

Where things sit on the time axis:

- a window's mean (and its confidence band) at the window's midpoint;
- a p-value at the window's end, the moment it was decided, so it lines up
  with the status change it caused;
- a status from its window's end until the next decision one window length
  later: that is when it was in force;
- an acknowledgement at ``acknowledged_at``; a pending command at ``issued_at``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt
from scipy import stats

from workcell.status import status_name
from workcell.timeconv import from_timestamp, to_datetime
from workcell.v1.history_pb2 import HistoryEntry

__all__ = [
    "CONFIDENCE",
    "P_FLOOR",
    "Acknowledgements",
    "MeanBand",
    "PValues",
    "ReportData",
    "StatusSpan",
    "acknowledgements",
    "mean_bands",
    "p_values",
    "prepare_report",
    "status_spans",
]

CONFIDENCE = 0.95
# A log axis cannot show 0, and a real level shift gives p-values like 1e-200
# that would squash everything near alpha into a sliver: p-values below this
# are drawn at it and flagged instead.
P_FLOOR = 1e-10

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class MeanBand:
    """Consecutive windows' means with a t-interval: ``mean ± t·std/√n``.

    One band holds windows that follow each other without a gap, so a line
    drawn through it never bridges time with no data.
    """

    times: tuple[datetime, ...]  # window midpoints
    mean: FloatArray
    low: FloatArray
    high: FloatArray
    count: IntArray


@dataclass(frozen=True, slots=True)
class StatusSpan:
    """A stretch of time with one status in force (consecutive equal decisions merged)."""

    start: datetime
    end: datetime
    status: str  # "up" or "down"


@dataclass(frozen=True, slots=True)
class PValues:
    """Decision times with the t-test's p-value, and those where no test was possible."""

    times: tuple[datetime, ...]
    p: FloatArray  # as returned by the controller
    shown: FloatArray  # p clipped to P_FLOOR, for a log axis
    clipped: BoolArray  # p below P_FLOOR
    untested: tuple[datetime, ...]


@dataclass(frozen=True, slots=True)
class Acknowledgements:
    """When the manipulator acknowledged commands, and when unacknowledged ones were issued."""

    acknowledged: tuple[datetime, ...]
    acknowledged_status: tuple[str, ...]
    pending: tuple[datetime, ...]
    pending_status: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReportData:
    """Everything one report shows."""

    start: datetime
    end: datetime
    commands: int
    bands: tuple[MeanBand, ...]
    spans: tuple[StatusSpan, ...]
    p_values: PValues
    acknowledgements: Acknowledgements


def _window(entry: HistoryEntry) -> tuple[int, int]:
    return from_timestamp(entry.from_datetime), from_timestamp(entry.to_datetime)


def _status(entry: HistoryEntry) -> str:
    try:
        return status_name(entry.status)
    except ValueError:
        return f"unknown({entry.status})"


def mean_bands(
    entries: Sequence[HistoryEntry], *, confidence: float = CONFIDENCE
) -> tuple[MeanBand, ...]:
    """Per-window means with a two-sided t-interval, split where windows do not touch.

    Windows with fewer than two readings have no interval and are left out
    (which also splits the band there).
    """
    runs: list[list[tuple[int, float, float, int]]] = []
    last_end: int | None = None
    for entry in entries:
        n = entry.window.count
        start, end = _window(entry)
        if n < 2:
            last_end = None
            continue
        t = float(stats.t.ppf(0.5 + confidence / 2, n - 1))
        half = t * entry.window.std_dev / np.sqrt(n)
        row = ((start + end) // 2, entry.window.mean, half, n)
        if last_end is None or start != last_end:
            runs.append([])
        runs[-1].append(row)
        last_end = end
    bands = []
    for run in runs:
        mean = np.array([r[1] for r in run], dtype=np.float64)
        half = np.array([r[2] for r in run], dtype=np.float64)
        bands.append(
            MeanBand(
                times=tuple(to_datetime(r[0]) for r in run),
                mean=mean,
                low=mean - half,
                high=mean + half,
                count=np.array([r[3] for r in run], dtype=np.int64),
            )
        )
    return tuple(bands)


def status_spans(entries: Sequence[HistoryEntry]) -> tuple[StatusSpan, ...]:
    """When each status was in force: from a window's end for one window length.

    Consecutive decisions of the same status whose spans touch are merged; a
    gap (the controller was not deciding) stays a gap.
    """
    spans: list[tuple[int, int, str]] = []
    for entry in entries:
        start, end = _window(entry)
        status = _status(entry)
        span = (end, end + (end - start), status)
        if spans and spans[-1][2] == status and spans[-1][1] >= span[0]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], span[1]), status)
        else:
            spans.append(span)
    return tuple(StatusSpan(to_datetime(a), to_datetime(b), s) for a, b, s in spans)


def p_values(entries: Sequence[HistoryEntry]) -> PValues:
    """The p-value of each tested decision at its window's end; untested ones apart."""
    tested = [e for e in entries if e.HasField("p_value")]
    p = np.array([e.p_value for e in tested], dtype=np.float64)
    return PValues(
        times=tuple(to_datetime(_window(e)[1]) for e in tested),
        p=p,
        shown=np.maximum(p, P_FLOOR),
        clipped=p < P_FLOOR,
        untested=tuple(to_datetime(_window(e)[1]) for e in entries if not e.HasField("p_value")),
    )


def acknowledgements(entries: Sequence[HistoryEntry]) -> Acknowledgements:
    """Acknowledgement times of acknowledged commands; issue times of pending ones."""
    acked = [e for e in entries if e.HasField("acknowledged_at")]
    pending = [e for e in entries if not e.HasField("acknowledged_at")]
    return Acknowledgements(
        acknowledged=tuple(to_datetime(from_timestamp(e.acknowledged_at)) for e in acked),
        acknowledged_status=tuple(_status(e) for e in acked),
        pending=tuple(to_datetime(from_timestamp(e.issued_at)) for e in pending),
        pending_status=tuple(_status(e) for e in pending),
    )


def prepare_report(
    entries: Sequence[HistoryEntry],
    *,
    from_us: int | None = None,
    to_us: int | None = None,
    confidence: float = CONFIDENCE,
) -> ReportData:
    """All of a report's data from unmerged entries, oldest first.

    The range is ``[from_us, to_us)`` where given, otherwise the first window's
    start and the last window's end. Raises ValueError for no entries.
    """
    if not entries:
        raise ValueError("no commands in that time range")
    start = from_us if from_us is not None else _window(entries[0])[0]
    end = to_us if to_us is not None else _window(entries[-1])[1]
    return ReportData(
        start=to_datetime(start),
        end=to_datetime(end),
        commands=sum(max(e.command_count, 1) for e in entries),
        bands=mean_bands(entries, confidence=confidence),
        spans=status_spans(entries),
        p_values=p_values(entries),
        acknowledgements=acknowledgements(entries),
    )
