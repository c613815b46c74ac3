"""What ``workcell report`` draws, aggregated from pages of ``HistoryEntry`` messages.

Pure data preparation: pages of messages in (each used once and dropped), frozen
dataclasses of bounded size out, with times as aware UTC datetimes. No plotting
and no I/O here; the drawing lives in ``workcell.report``, the fetching in
``workcell.cli``, the time buckets in ``workcell.report_buckets``.

Every series is kept per time bucket, at most :data:`MAX_BUCKETS` of them, so a
year of commands costs what an hour does. While the range is short a bucket is
one window long and holds one decision, and the report shows each decision as
it is; over a longer range a point summarizes a bucket: the mean of its window
means inside the envelope of their intervals, the lowest and highest p-value,
the share of time each status was in force, one marker per bucket for its
acknowledgements. The legends' counts stay exact.

Where things sit on the time axis:

- a window's mean (and its confidence band) at the window's midpoint;
- a p-value, and the difference of the means with its interval, at the
  window's end, the moment it was decided, so they line up with the status
  change they caused;
- a status from its window's end until the next decision one window length
  later: that is when it was in force;
- an acknowledgement at ``acknowledged_at``; a pending command at ``issued_at``.

A point that summarizes a bucket sits at the mean of those times.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice

import numpy as np
import numpy.typing as npt
from scipy import stats

from workcell.report_buckets import BucketGrid
from workcell.timeconv import from_timestamp, to_datetime
from workcell.v1 import command_pb2
from workcell.v1.history_pb2 import HistoryEntry

__all__ = [
    "CONFIDENCE",
    "DEFAULT_ALPHA",
    "MAX_BUCKETS",
    "P_FLOOR",
    "Acknowledgements",
    "Differences",
    "MeanBand",
    "PValues",
    "ReportBuilder",
    "ReportData",
    "StatusSpan",
    "acknowledgements",
    "differences",
    "mean_bands",
    "p_values",
    "prepare_report",
    "status_spans",
]

CONFIDENCE = 0.95
DEFAULT_ALPHA = 0.05
# A log axis cannot show 0, and a real level shift gives p-values like 1e-200
# that would squash everything near alpha into a sliver: p-values below this
# are drawn at it and flagged instead.
P_FLOOR = 1e-10
# The panels are about 900 pixels wide: once coarsened, the data covers between
# half and all of these buckets, so there is about a bucket per pixel or more.
MAX_BUCKETS = 2048
# How many entries are turned into arrays at a time by prepare_report.
_CHUNK = 1000

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# Rows of the per-status fields.
_DOWN, _UP, _OTHER = 0, 1, 2
_STATUS_ROW = {command_pb2.STATUS_DOWN: _DOWN, command_pb2.STATUS_UP: _UP}
_ROW_NAME = ("down", "up", "unknown")


@dataclass(frozen=True, slots=True)
class MeanBand:
    """Consecutive points of window means with a t-interval: ``mean ± t·std/√n``.

    One band holds windows that follow each other without a gap, so a line
    drawn through it never bridges time with no data. A point summarizing
    several windows has the mean of their means and the envelope of their
    intervals (``low`` the lowest bound, ``high`` the highest).
    """

    times: tuple[datetime, ...]  # window midpoints (their mean, for a summary)
    mean: FloatArray
    low: FloatArray
    high: FloatArray
    count: IntArray  # readings behind each point


@dataclass(frozen=True, slots=True)
class StatusSpan:
    """A stretch of time with one status in force (consecutive equal decisions merged).

    ``status`` is ``"up"``, ``"down"``, ``"unknown"``, or ``"mixed"`` for a
    bucket in which more than one was in force; ``up_share`` is the share of
    that time the status was up (1.0 for up, 0.0 for down).
    """

    start: datetime
    end: datetime
    status: str
    up_share: float = math.nan


@dataclass(frozen=True, slots=True)
class PValues:
    """Decision times with the t-test's p-value, and those where no test was possible.

    Per point the lowest (``p``) and highest (``p_high``) p-value of the
    decisions it stands for (the same when it stands for one) and their
    geometric mean (``typical``, of the values as shown). The counts are exact
    decisions; ``alpha`` is the level the counts were made at.
    """

    times: tuple[datetime, ...]
    p: FloatArray  # lowest p, as returned by the controller
    shown: FloatArray  # p clipped to P_FLOOR, for a log axis
    clipped: BoolArray  # p below P_FLOOR
    untested: tuple[datetime, ...]
    p_high: FloatArray
    shown_high: FloatArray
    typical: FloatArray
    decisions: IntArray  # tested decisions behind each point
    alpha: float = DEFAULT_ALPHA
    not_significant: int = 0  # p >= alpha
    significant: int = 0  # p < alpha, not clipped
    below_floor: int = 0  # p < P_FLOOR
    untested_count: int = 0


@dataclass(frozen=True, slots=True)
class Acknowledgements:
    """When the manipulator acknowledged commands, and when unacknowledged ones were issued.

    One marker per bucket and status; ``*_commands`` say how many commands each
    stands for and the ``*_count`` totals are exact.
    """

    acknowledged: tuple[datetime, ...]
    acknowledged_status: tuple[str, ...]
    pending: tuple[datetime, ...]
    pending_status: tuple[str, ...]
    acknowledged_commands: tuple[int, ...] = ()
    pending_commands: tuple[int, ...] = ()
    acknowledged_count: int = 0
    pending_count: int = 0


@dataclass(frozen=True, slots=True)
class Differences:
    """Each decision's difference of the means (window minus the one before) with its
    confidence interval at 1 - alpha, at the decision time.

    A point summarizing several decisions has the mean of their differences and the
    envelope of their intervals; ``low``/``high`` are NaN where none had an interval.
    ``moved`` says whether the status changed at one of them. ``min_effect`` is the guard of
    the latest decision that had one (0: none), ``confidence`` the latest 1 - alpha.
    Decisions recorded without a difference (before the controller kept them) are left out.
    """

    times: tuple[datetime, ...] = ()
    difference: FloatArray = dataclasses.field(default_factory=lambda: np.zeros(0))
    low: FloatArray = dataclasses.field(default_factory=lambda: np.zeros(0))
    high: FloatArray = dataclasses.field(default_factory=lambda: np.zeros(0))
    moved: BoolArray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=np.bool_))
    decisions: IntArray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    min_effect: float = 0.0
    confidence: float = CONFIDENCE
    changes: int = 0
    """How many of the decisions moved the status (exact, however summarized)."""


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
    window_us: int = 0  # the first window's length
    bucket_us: int = 0  # the time one point stands for; window_us while not summarized
    differences: Differences = dataclasses.field(default_factory=Differences)

    @property
    def summarized(self) -> bool:
        """Whether a point may stand for more than one window."""
        return self.bucket_us > self.window_us


@dataclass(frozen=True, slots=True)
class _Page:
    """One page of entries as columns (times in µs)."""

    start: IntArray
    end: IntArray
    n: IntArray
    mean: FloatArray
    std: FloatArray
    row: IntArray  # _DOWN, _UP or _OTHER
    p: FloatArray  # NaN when untested
    acked: BoolArray
    acked_at: IntArray
    issued: IntArray
    commands: int
    difference: FloatArray  # NaN when not recorded
    ci_low: FloatArray  # NaN when undefined
    ci_high: FloatArray
    changed: BoolArray
    min_effect: FloatArray  # NaN when not recorded
    alpha: FloatArray

    @classmethod
    def of(cls, entries: Sequence[HistoryEntry]) -> _Page:
        columns: tuple[list[int], ...] = ([], [], [], [], [], [], [])
        start, end, n, row, acked_at, issued, acked = columns
        mean: list[float] = []
        std: list[float] = []
        p: list[float] = []
        floats: tuple[list[float], ...] = ([], [], [], [], [])
        difference, ci_low, ci_high, min_effect, alpha = floats
        changed: list[bool] = []
        commands = 0
        for e in entries:
            difference.append(e.difference if e.HasField("difference") else math.nan)
            has_ci = e.HasField("difference_ci_low") and e.HasField("difference_ci_high")
            ci_low.append(e.difference_ci_low if has_ci else math.nan)
            ci_high.append(e.difference_ci_high if has_ci else math.nan)
            changed.append(e.changed)
            policy = e.policy
            min_effect.append(policy.min_effect if policy.HasField("min_effect") else math.nan)
            alpha.append(policy.alpha if e.HasField("policy") else math.nan)
            start.append(from_timestamp(e.from_datetime))
            end.append(from_timestamp(e.to_datetime))
            n.append(e.window.count)
            mean.append(e.window.mean)
            std.append(e.window.std_dev)
            row.append(_STATUS_ROW.get(e.status, _OTHER))
            p.append(e.p_value if e.HasField("p_value") else math.nan)
            has_ack = e.HasField("acknowledged_at")
            acked.append(has_ack)
            acked_at.append(from_timestamp(e.acknowledged_at) if has_ack else 0)
            issued.append(from_timestamp(e.issued_at))
            commands += max(e.command_count, 1)
        return cls(
            start=np.array(start, dtype=np.int64),
            end=np.array(end, dtype=np.int64),
            n=np.array(n, dtype=np.int64),
            mean=np.array(mean, dtype=np.float64),
            std=np.array(std, dtype=np.float64),
            row=np.array(row, dtype=np.int64),
            p=np.array(p, dtype=np.float64),
            acked=np.array(acked, dtype=np.bool_),
            acked_at=np.array(acked_at, dtype=np.int64),
            issued=np.array(issued, dtype=np.int64),
            commands=commands,
            difference=np.array(difference, dtype=np.float64),
            ci_low=np.array(ci_low, dtype=np.float64),
            ci_high=np.array(ci_high, dtype=np.float64),
            changed=np.array(changed, dtype=np.bool_),
            min_effect=np.array(min_effect, dtype=np.float64),
            alpha=np.array(alpha, dtype=np.float64),
        )


class ReportBuilder:
    """Aggregates pages of unmerged entries, oldest first, into a bounded :class:`ReportData`.

    The range is ``[from_us, to_us)`` where given (it is only named in the
    title), otherwise the first window's start and the last window's end.
    ``alpha`` is the level the p-value counts are made at.
    """

    def __init__(
        self,
        *,
        from_us: int | None = None,
        to_us: int | None = None,
        alpha: float = DEFAULT_ALPHA,
        confidence: float = CONFIDENCE,
        max_buckets: int = MAX_BUCKETS,
    ) -> None:
        self._from_us = from_us
        self._to_us = to_us
        self._alpha = alpha
        self._confidence = confidence
        self._max_buckets = max_buckets
        self._grid: BucketGrid | None = None
        self._window_us = 0
        self._first_start = 0
        self._last_end = 0
        # The end of the previous entry while it had an interval: whether the
        # next window continues its band.
        self._band_end: int | None = None
        self.commands = 0
        self._counts = {"not_significant": 0, "significant": 0, "below_floor": 0}
        self._untested = 0
        self._acknowledged = 0
        self._pending = 0
        # The latest decision's policy that said: the guard line and the interval's level.
        self._min_effect = 0.0
        self._difference_confidence = confidence

    def _new_grid(self, page: _Page) -> BucketGrid:
        self._first_start = int(page.start[0])
        self._window_us = max(1, int(page.end[0] - page.start[0]))
        grid = BucketGrid(
            origin_us=self._first_start, width_us=self._window_us, size=self._max_buckets
        )
        # means, by window midpoint
        grid.add_field("m_n", "sum", dtype=np.int64)
        grid.add_field("m_time", "sum")
        grid.add_field("m_mean", "sum")
        grid.add_field("m_low", "min")
        grid.add_field("m_high", "max")
        grid.add_field("m_readings", "sum", dtype=np.int64)
        grid.add_field("m_joined", "first", dtype=np.bool_, count="m_n")
        # status in force: time per status, and the covered extent
        grid.add_field("s_time", "sum", rows=3)
        grid.add_field("s_first", "min")
        grid.add_field("s_last", "max")
        # p-values, by decision time
        grid.add_field("p_n", "sum", dtype=np.int64)
        grid.add_field("p_time", "sum")
        grid.add_field("p_min", "min")
        grid.add_field("p_max", "max")
        grid.add_field("p_log", "sum")
        grid.add_field("u_n", "sum", dtype=np.int64)
        grid.add_field("u_time", "sum")
        # acknowledgements by ack time, pending commands by issue time; per status
        grid.add_field("a_n", "sum", rows=3, dtype=np.int64)
        grid.add_field("a_time", "sum", rows=3)
        grid.add_field("q_n", "sum", rows=3, dtype=np.int64)
        grid.add_field("q_time", "sum", rows=3)
        # differences of the means, by decision time
        grid.add_field("d_n", "sum", dtype=np.int64)
        grid.add_field("d_time", "sum")
        grid.add_field("d_sum", "sum")
        grid.add_field("d_low", "min")
        grid.add_field("d_high", "max")
        grid.add_field("d_moved", "sum", dtype=np.int64)
        return grid

    def add(self, entries: Sequence[HistoryEntry]) -> None:
        """Take one page into the aggregate; the entries are not kept."""
        if not entries:
            return
        page = _Page.of(entries)
        if self._grid is None:
            self._grid = self._new_grid(page)
        grid = self._grid
        span_end = page.end + (page.end - page.start)
        latest = max(
            int(span_end.max()) - 1,
            int(page.issued.max()),
            int(page.acked_at[page.acked].max(initial=0)),
        )
        grid.fit(latest)
        self.commands += page.commands
        self._last_end = int(page.end[-1])
        self._add_means(grid, page)
        self._add_status(grid, page.end, span_end, page.row)
        self._add_p_values(grid, page)
        self._add_deliveries(grid, page)
        self._add_differences(grid, page)

    def _offsets(self, times: IntArray) -> FloatArray:
        return (times - self._first_start).astype(np.float64)

    def _add_means(self, grid: BucketGrid, page: _Page) -> None:
        valid = page.n >= 2
        # A window continues the band when the entry before it had an interval
        # and ended where this one starts (the first entry looks at the last page).
        previous_end = np.concatenate(([-1], page.end[:-1]))
        previous_valid = np.concatenate(([False], valid[:-1]))
        if self._band_end is not None:
            previous_end[0], previous_valid[0] = self._band_end, True
        joined = previous_valid & (previous_end == page.start)
        self._band_end = int(page.end[-1]) if valid[-1] else None
        if not valid.any():
            return
        n = page.n[valid]
        t = stats.t.ppf(0.5 + self._confidence / 2, n - 1)
        half = t * page.std[valid] / np.sqrt(n)
        mean = page.mean[valid]
        middle = (page.start[valid] + page.end[valid]) // 2
        index = grid.index(middle)
        # A band break is kept where a bucket's first window starts one.
        buckets, first = np.unique(index, return_index=True)
        empty = grid["m_n"][buckets] == 0
        grid["m_joined"][buckets[empty]] = joined[valid][first[empty]]
        np.add.at(grid["m_n"], index, 1)
        np.add.at(grid["m_time"], index, self._offsets(middle))
        np.add.at(grid["m_mean"], index, mean)
        np.minimum.at(grid["m_low"], index, mean - half)
        np.maximum.at(grid["m_high"], index, mean + half)
        np.add.at(grid["m_readings"], index, n)

    def _add_status(self, grid: BucketGrid, start: IntArray, end: IntArray, row: IntArray) -> None:
        """Spread each status span's time over the buckets it covers."""
        while start.size:
            index = grid.index(start)
            part_end = np.minimum(end, grid.bucket_end_us(index))
            np.add.at(grid["s_time"], (row, index), (part_end - start).astype(np.float64))
            np.minimum.at(grid["s_first"], index, self._offsets(start))
            np.maximum.at(grid["s_last"], index, self._offsets(part_end))
            more = end > part_end
            start, end, row = part_end[more], end[more], row[more]

    def _add_p_values(self, grid: BucketGrid, page: _Page) -> None:
        tested = ~np.isnan(page.p)
        p = page.p[tested]
        index = grid.index(page.end[tested])
        np.add.at(grid["p_n"], index, 1)
        np.add.at(grid["p_time"], index, self._offsets(page.end[tested]))
        np.minimum.at(grid["p_min"], index, p)
        np.maximum.at(grid["p_max"], index, p)
        np.add.at(grid["p_log"], index, np.log10(np.maximum(p, P_FLOOR)))
        self._counts["not_significant"] += int((p >= self._alpha).sum())
        self._counts["significant"] += int(((p < self._alpha) & (p >= P_FLOOR)).sum())
        self._counts["below_floor"] += int((p < P_FLOOR).sum())
        untested_at = page.end[~tested]
        index = grid.index(untested_at)
        np.add.at(grid["u_n"], index, 1)
        np.add.at(grid["u_time"], index, self._offsets(untested_at))
        self._untested += int(untested_at.size)

    def _add_deliveries(self, grid: BucketGrid, page: _Page) -> None:
        for mask, times, count, total in (
            (page.acked, page.acked_at, "a_n", "a_time"),
            (~page.acked, page.issued, "q_n", "q_time"),
        ):
            at = times[mask]
            rows = page.row[mask]
            index = grid.index(at)
            np.add.at(grid[count], (rows, index), 1)
            np.add.at(grid[total], (rows, index), self._offsets(at))
        self._acknowledged += int(page.acked.sum())
        self._pending += int((~page.acked).sum())

    def _add_differences(self, grid: BucketGrid, page: _Page) -> None:
        known = ~np.isnan(page.difference)
        at = page.end[known]
        index = grid.index(at)
        np.add.at(grid["d_n"], index, 1)
        np.add.at(grid["d_time"], index, self._offsets(at))
        np.add.at(grid["d_sum"], index, page.difference[known])
        np.add.at(grid["d_moved"], index, page.changed[known].astype(np.int64))
        bounded = known & ~np.isnan(page.ci_low)
        index = grid.index(page.end[bounded])
        np.minimum.at(grid["d_low"], index, page.ci_low[bounded])
        np.maximum.at(grid["d_high"], index, page.ci_high[bounded])
        guarded = np.flatnonzero(~np.isnan(page.min_effect))
        if guarded.size:
            self._min_effect = float(page.min_effect[guarded[-1]])
        levels = np.flatnonzero(~np.isnan(page.alpha) & known)
        if levels.size:
            self._difference_confidence = 1.0 - float(page.alpha[levels[-1]])

    # ------------------------------------------------------------ the result

    def _time(self, offset: float) -> datetime:
        return to_datetime(self._first_start + round(offset))

    def result(self) -> ReportData:
        """The report of everything added; ValueError when nothing was."""
        grid = self._grid
        if grid is None:
            raise ValueError("no commands in that time range")
        start = self._from_us if self._from_us is not None else self._first_start
        end = self._to_us if self._to_us is not None else self._last_end
        return ReportData(
            start=to_datetime(start),
            end=to_datetime(end),
            commands=self.commands,
            bands=self._bands(grid),
            spans=self._spans(grid),
            p_values=self._p_values(grid),
            acknowledgements=self._acknowledgements(grid),
            window_us=self._window_us,
            bucket_us=grid.width_us,
            differences=self._differences(grid),
        )

    def _differences(self, grid: BucketGrid) -> Differences:
        count = grid["d_n"]
        held = np.flatnonzero(count > 0)
        n = count[held]
        low = np.array(grid["d_low"][held], dtype=np.float64)
        high = np.array(grid["d_high"][held], dtype=np.float64)
        unbounded = ~np.isfinite(low)  # no decision of the point had an interval
        low[unbounded] = high[unbounded] = math.nan
        return Differences(
            times=tuple(self._time(t) for t in grid["d_time"][held] / n),
            difference=grid["d_sum"][held] / n,
            low=low,
            high=high,
            moved=grid["d_moved"][held] > 0,
            decisions=np.array(n, dtype=np.int64),
            min_effect=self._min_effect,
            confidence=self._difference_confidence,
            changes=int(grid["d_moved"].sum()),
        )

    def _bands(self, grid: BucketGrid) -> tuple[MeanBand, ...]:
        count = grid["m_n"]
        held = np.flatnonzero(count > 0)
        if not held.size:
            return ()
        # A band starts at every bucket whose first window does not continue the last one.
        starts = [i for i, bucket in enumerate(held) if i == 0 or not grid["m_joined"][bucket]]
        bands = []
        for first, stop in zip(starts, [*starts[1:], held.size], strict=True):
            buckets = held[first:stop]
            n = count[buckets]
            bands.append(
                MeanBand(
                    times=tuple(self._time(t) for t in grid["m_time"][buckets] / n),
                    mean=grid["m_mean"][buckets] / n,
                    low=np.array(grid["m_low"][buckets], dtype=np.float64),
                    high=np.array(grid["m_high"][buckets], dtype=np.float64),
                    count=np.array(grid["m_readings"][buckets], dtype=np.int64),
                )
            )
        return tuple(bands)

    def _spans(self, grid: BucketGrid) -> tuple[StatusSpan, ...]:
        time = grid["s_time"]
        total = time.sum(axis=0)
        spans: list[tuple[float, float, str, float]] = []
        for bucket in np.flatnonzero(total > 0):
            present = np.flatnonzero(time[:, bucket] > 0)
            status = _ROW_NAME[present[0]] if present.size == 1 else "mixed"
            up_down = time[_UP, bucket] + time[_DOWN, bucket]
            share = float(time[_UP, bucket] / up_down) if up_down else math.nan
            first, last = float(grid["s_first"][bucket]), float(grid["s_last"][bucket])
            # Equal statuses whose spans touch are one span; a gap stays a gap.
            if status != "mixed" and spans and spans[-1][2] == status and spans[-1][1] >= first:
                spans[-1] = (spans[-1][0], max(spans[-1][1], last), status, share)
            else:
                spans.append((first, last, status, share))
        return tuple(StatusSpan(self._time(a), self._time(b), s, u) for a, b, s, u in spans)

    def _p_values(self, grid: BucketGrid) -> PValues:
        count = grid["p_n"]
        held = np.flatnonzero(count > 0)
        n = count[held]
        low = np.array(grid["p_min"][held], dtype=np.float64)
        high = np.array(grid["p_max"][held], dtype=np.float64)
        untested = np.flatnonzero(grid["u_n"] > 0)
        return PValues(
            times=tuple(self._time(t) for t in grid["p_time"][held] / n),
            p=low,
            shown=np.maximum(low, P_FLOOR),
            clipped=low < P_FLOOR,
            untested=tuple(self._time(t) for t in grid["u_time"][untested] / grid["u_n"][untested]),
            p_high=high,
            shown_high=np.maximum(high, P_FLOOR),
            typical=np.power(10.0, grid["p_log"][held] / n),
            decisions=np.array(n, dtype=np.int64),
            alpha=self._alpha,
            untested_count=self._untested,
            **self._counts,
        )

    def _acknowledgements(self, grid: BucketGrid) -> Acknowledgements:
        def markers(count: str, total: str) -> list[tuple[float, str, int]]:
            rows, buckets = np.nonzero(grid[count])
            n = grid[count][rows, buckets]
            mean_time = grid[total][rows, buckets] / n
            return sorted(
                zip(mean_time.tolist(), (_ROW_NAME[r] for r in rows), n.tolist(), strict=True),
                key=lambda marker: marker[0],
            )

        acked = markers("a_n", "a_time")
        pending = markers("q_n", "q_time")
        return Acknowledgements(
            acknowledged=tuple(self._time(t) for t, _, _ in acked),
            acknowledged_status=tuple(s for _, s, _ in acked),
            pending=tuple(self._time(t) for t, _, _ in pending),
            pending_status=tuple(s for _, s, _ in pending),
            acknowledged_commands=tuple(n for _, _, n in acked),
            pending_commands=tuple(n for _, _, n in pending),
            acknowledged_count=self._acknowledged,
            pending_count=self._pending,
        )


def prepare_report(
    entries: Iterable[HistoryEntry],
    *,
    from_us: int | None = None,
    to_us: int | None = None,
    alpha: float = DEFAULT_ALPHA,
    confidence: float = CONFIDENCE,
    max_buckets: int = MAX_BUCKETS,
) -> ReportData:
    """All of a report's data from unmerged entries, oldest first, taken one chunk at a time.

    ``entries`` may be a generator: it is read once and nothing keeps what was
    read. Raises ValueError for no entries.
    """
    builder = ReportBuilder(
        from_us=from_us, to_us=to_us, alpha=alpha, confidence=confidence, max_buckets=max_buckets
    )
    iterator = iter(entries)
    while chunk := list(islice(iterator, _CHUNK)):
        builder.add(chunk)
    return builder.result()


def mean_bands(
    entries: Iterable[HistoryEntry], *, confidence: float = CONFIDENCE
) -> tuple[MeanBand, ...]:
    """The report's mean bands (windows with fewer than two readings are left out)."""
    return prepare_report(entries, confidence=confidence).bands


def status_spans(entries: Iterable[HistoryEntry]) -> tuple[StatusSpan, ...]:
    """The report's status spans: from a window's end for one window length, merged."""
    return prepare_report(entries).spans


def p_values(entries: Iterable[HistoryEntry], *, alpha: float = DEFAULT_ALPHA) -> PValues:
    """The report's p-values at their decisions' times; untested ones apart."""
    return prepare_report(entries, alpha=alpha).p_values


def differences(entries: Iterable[HistoryEntry]) -> Differences:
    """The report's differences of the means, with their intervals, at their decisions' times."""
    return prepare_report(entries).differences


def acknowledgements(entries: Iterable[HistoryEntry]) -> Acknowledgements:
    """The report's acknowledgement times, and the issue times of pending commands."""
    return prepare_report(entries).acknowledgements
