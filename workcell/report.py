"""Draw a ``workcell report``: four panels over one UTC time axis, saved as PNG.

1. each window's mean with its 95 % t-interval;
2. each decision's difference of the means (the window minus the one it was
   compared with) with its Welch interval at 1 - alpha, against zero and the
   ``--min-effect`` guard when there was one; red where the status moved;
3. the status in force (up/down spans), with a marker per acknowledged command
   and a distinct one per command still pending;
4. the decisions' p-values on a log axis against alpha; untested decisions
   marked along the top.

Over a long range a point sums up a time bucket (``workcell.report_data``); the
title then says how long one is. Each panel draws a few artists in all, whatever
the number of points: one artist per status span made a report cost about
14 KB of memory per command.

It uses matplotlib's object API (``Figure``) without pyplot, so no GUI backend
and no global figure state are involved; PNG output goes through Agg.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib.dates as mdates
import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from workcell.report_data import CONFIDENCE, P_FLOOR, FloatArray, ReportData

__all__ = ["DPI", "FIGSIZE", "draw_report", "save_report"]

FIGSIZE = (11.0, 9.5)
DPI = 100
_STATUS_COLOR = {"up": "#2e7d32", "down": "#c62828"}
_OTHER_COLOR = "#9e9e9e"
_MEAN_COLOR = "#1f4e9c"
_SIGNIFICANT_COLOR = "#c62828"
_TIME_FORMAT = "%Y-%m-%d %H:%M:%SZ"
# Legends sit right of their panel: inside, they would hide points.
_LEGEND: dict[str, Any] = {
    "loc": "upper left",
    "bbox_to_anchor": (1.01, 1.0),
    "fontsize": "small",
    "borderaxespad": 0.0,
}


def _duration(us: int) -> str:
    """A bucket's length for the title: ``5 s``, ``1 min 20 s``, ``2 h 8 min``."""
    seconds = us / 1e6
    if seconds < 60:
        return f"{seconds:g} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def _title(data: ReportData) -> str:
    start = data.start.strftime(_TIME_FORMAT)
    # The end drops its date when it is the same day: shorter, nothing lost.
    same_day = data.end.date() == data.start.date()
    end = data.end.strftime("%H:%M:%SZ" if same_day else _TIME_FORMAT)
    noun = "command" if data.commands == 1 else "commands"
    title = f"workcell decisions, {start} → {end} (UTC), {data.commands:,} {noun}"
    if data.summarized:
        # Say what a point is once it is no longer one decision.
        title += (
            f"\neach point sums up {_duration(data.bucket_us)}: mean of the means in the "
            "envelope of their intervals, lowest and highest p-value"
        )
    return title


def _dates(times: Sequence[datetime]) -> FloatArray:
    """Matplotlib date numbers (days since the epoch), UTC."""
    return np.asarray(mdates.date2num(list(times)), dtype=np.float64)  # type: ignore[no-untyped-call]


def _draw_means(ax: Axes, data: ReportData) -> None:
    # All bands as one line and one filled collection, NaN between bands: two
    # artists however many bands, where one artist per band cost memory.
    times: list[FloatArray] = []
    mean: list[FloatArray] = []
    low: list[FloatArray] = []
    high: list[FloatArray] = []
    gap = np.array([np.nan])
    for band in data.bands:
        x = _dates(band.times)
        if times:
            times.append(x[:1])  # a break point, drawn as nothing
            mean.append(gap)
            low.append(gap)
            high.append(gap)
        times.append(x)
        mean.append(band.mean)
        low.append(band.low)
        high.append(band.high)
    if not data.bands:
        ax.text(
            0.5,
            0.5,
            "no window with two or more readings",
            transform=ax.transAxes,
            ha="center",
            va="center",
            color=_OTHER_COLOR,
        )
        ax.set_ylabel("payload")
        return
    x, y = np.concatenate(times), np.concatenate(mean)
    lows, highs = np.concatenate(low), np.concatenate(high)
    interval = "envelope of the " if data.summarized else ""
    ax.fill_between(
        x,
        lows,
        highs,
        where=np.isfinite(lows),
        color=_MEAN_COLOR,
        alpha=0.2,
        linewidth=0,
        label=f"{interval}{CONFIDENCE:.0%} t-interval{'s' if interval else ''}",
    )
    ax.plot(
        x,
        y,
        color=_MEAN_COLOR,
        marker="o" if np.isfinite(y).sum() < 60 else None,
        markersize=3,
        linewidth=1.2,
        label="mean of window means" if data.summarized else "window mean",
    )
    ax.set_ylabel("payload")
    ax.legend(**_LEGEND)


def _draw_differences(ax: Axes, data: ReportData) -> None:
    diffs = data.differences
    ax.set_ylabel("difference of means")
    ax.axhline(0.0, color="black", linewidth=0.8)
    if not diffs.times:
        ax.text(
            0.5,
            0.5,
            "no differences recorded (commands from controllers before revision 0006)",
            transform=ax.transAxes,
            ha="center",
            va="center",
            color=_OTHER_COLOR,
        )
        return
    x = _dates(diffs.times)
    y = diffs.difference
    # Interval bars as one collection; NaN bounds (no interval) draw nothing.
    interval = "envelope of the " if data.summarized else ""
    ax.vlines(
        x, diffs.low, diffs.high, color=_MEAN_COLOR, alpha=0.45, linewidth=1.5,
        label=f"{interval}{diffs.confidence:.0%} Welch interval{'s' if interval else ''}",
    )  # fmt: skip
    size = 3 if len(x) < 200 else 1.5
    kept = ~diffs.moved
    ax.plot(x[kept], y[kept], linestyle="none", marker="o", markersize=size, color=_MEAN_COLOR,
            label=f"status kept ({int(diffs.decisions.sum()) - diffs.changes:,})")  # fmt: skip
    ax.plot(x[diffs.moved], y[diffs.moved], linestyle="none", marker="o", markersize=size + 2,
            color=_SIGNIFICANT_COLOR,
            label=f"status moved ({diffs.changes:,})")  # fmt: skip
    if diffs.min_effect > 0:
        for level in (diffs.min_effect, -diffs.min_effect):
            ax.axhline(level, color="black", linestyle="--", linewidth=0.8)
        ax.lines[-1].set_label(f"±min effect {diffs.min_effect:g}")
    # A step of hundreds would squash the noise around zero into a line: a symmetric-log
    # axis keeps both readable once the range is wide.
    finite = np.concatenate([np.abs(y), np.abs(diffs.low), np.abs(diffs.high)])
    finite = finite[np.isfinite(finite)]
    if finite.size:
        typical = float(np.median(finite))
        if typical > 0 and float(finite.max()) > 50 * typical:
            ax.set_yscale("symlog", linthresh=max(typical * 4, diffs.min_effect * 2))
    ax.legend(**_LEGEND)


_LEVEL = {"down": 0.0, "up": 1.0}


def _draw_spans(ax: Axes, data: ReportData) -> set[str]:
    """Each span as a background and a line at its status's level; returns the statuses."""
    # One collection per status for the backgrounds and one for the level
    # lines, not an artist per span.
    backgrounds: dict[str, list[tuple[float, float]]] = {}
    segments: list[tuple[float, float, float, str]] = []
    for span in data.spans:
        start, end = _dates((span.start, span.end))
        backgrounds.setdefault(span.status, []).append((start, end - start))
        color = _STATUS_COLOR.get(span.status, _OTHER_COLOR)
        segments.append((_LEVEL.get(span.status, 0.5), start, end, color))
    for status, ranges in backgrounds.items():
        ax.broken_barh(
            ranges, (-0.5, 2.0), facecolors=_STATUS_COLOR.get(status, _OTHER_COLOR),
            alpha=0.18, linewidth=0,
        )  # fmt: skip
    if segments:
        levels, starts, ends, colors = zip(*segments, strict=True)
        ax.hlines(levels, starts, ends, colors=list(colors), linewidth=2.5)
    return set(backgrounds)


def _draw_shares(ax: Axes, data: ReportData) -> set[str]:
    """Per point, the share of time up (green, from 0) and down (red, up to 1).

    When statuses change faster than a point is long, spans would be slivers
    no one can see; the share of time in each says how the time was split.
    """
    x: list[float] = []
    share: list[float] = []
    previous_end: float | None = None
    for span in data.spans:
        start, end = _dates((span.start, span.end))
        # A mixed span's share; NaN for neither up nor down, a gap.
        level = _LEVEL.get(span.status, span.up_share)
        if previous_end is not None and start > previous_end:
            x.append(previous_end)
            share.append(math.nan)  # a gap between spans stays a gap
        x += [start, end]
        share += [level, level]
        previous_end = end
    xs, shares = np.array(x), np.array(share)
    known = np.isfinite(shares)
    ax.fill_between(xs, 0.0, shares, where=known, color=_STATUS_COLOR["up"], alpha=0.35, lw=0)
    ax.fill_between(xs, shares, 1.0, where=known, color=_STATUS_COLOR["down"], alpha=0.35, lw=0)
    ax.plot(xs, shares, color="black", linewidth=0.6)
    return {"up", "down"}


def _draw_status(ax: Axes, data: ReportData) -> None:
    drawn = _draw_shares(ax, data) if data.summarized else _draw_spans(ax, data)
    acks = data.acknowledgements
    # Over a long range an acknowledgement tick per point would be a solid bar:
    # only the pending commands, the exceptions, keep their markers there.
    ticks = bool(acks.acknowledged) and not data.summarized
    if ticks:
        ax.plot(
            _dates(acks.acknowledged),
            [_LEVEL.get(s, 0.5) for s in acks.acknowledged_status],
            linestyle="none",
            marker="|",
            markersize=12,
            color="black",
        )
    if acks.pending:
        ax.plot(
            _dates(acks.pending),
            [_LEVEL.get(s, 0.5) for s in acks.pending_status],
            linestyle="none",
            marker="X",
            markersize=5 if data.summarized else 8,
            color="#ef6c00",
        )
    ax.set_ylim(-0.5, 1.5)
    ax.set_yticks([0.0, 1.0], ["down", "up"])
    ax.set_ylabel("status (share of time)" if data.summarized else "status")
    handles: list[Artist] = [
        Patch(color=_STATUS_COLOR["up"], alpha=0.4, label="up"),
        Patch(color=_STATUS_COLOR["down"], alpha=0.4, label="down"),
    ]
    if drawn - set(_LEVEL):
        handles.append(Patch(color=_OTHER_COLOR, alpha=0.4, label="unknown"))
    handles += [
        Line2D([], [], linestyle="none", marker="|" if ticks else "", markersize=10,
               color="black", label=f"acknowledged ({acks.acknowledged_count:,})"),
        Line2D([], [], linestyle="none", marker="X", markersize=7, color="#ef6c00",
               label=f"pending ({acks.pending_count:,})"),
    ]  # fmt: skip
    ax.legend(handles=handles, **_LEGEND)


def _draw_p_values(ax: Axes, data: ReportData, alpha: float) -> None:
    pv = data.p_values
    ax.set_yscale("log")
    low = float(pv.shown.min()) if len(pv.shown) else alpha
    ax.set_ylim(min(low, alpha) / 10, 3.0)
    if len(pv.times):
        times = _dates(pv.times)
        if data.summarized:
            # Between the lowest and highest p of each point, and their geometric mean.
            ax.fill_between(times, pv.shown, pv.shown_high, color=_OTHER_COLOR, alpha=0.3, lw=0)
            ax.plot(times, pv.typical, color="#616161", linewidth=0.8, label="geometric mean")
        else:
            ax.plot(times, pv.typical, color=_OTHER_COLOR, linewidth=0.8)
        # A marker at the lowest p of each point: the one decision when it stands
        # for one, the most significant one when it stands for several.
        clipped = pv.clipped
        size = 0.6 if data.summarized else 1.0
        groups = [
            (pv.p >= alpha, "o", 4, _MEAN_COLOR, "p ≥ alpha", pv.not_significant),
            ((pv.p < alpha) & ~clipped, "o", 5, _SIGNIFICANT_COLOR, "p < alpha", pv.significant),
            (clipped, "v", 7, _SIGNIFICANT_COLOR, f"p < {P_FLOOR:g}, drawn at it", pv.below_floor),
        ]
        for mask, marker, markersize, color, label, count in groups:
            if count or mask.any():
                ax.plot(
                    times[mask],
                    pv.shown[mask],
                    linestyle="none",
                    marker=marker,
                    markersize=markersize * size,
                    color=color,
                    label=f"{label} ({count:,})",
                )
    ax.axhline(alpha, color="black", linestyle="--", linewidth=1, label=f"alpha = {alpha:g}")
    if pv.untested:
        # Untested decisions have no p to place: mark them along the top edge.
        ax.plot(
            _dates(pv.untested),
            [0.96] * len(pv.untested),
            transform=ax.get_xaxis_transform(),
            linestyle="none",
            marker="x",
            markersize=6,
            color=_OTHER_COLOR,
            label=f"no test ({pv.untested_count:,})",
        )
    ax.set_ylabel("p-value (Welch)")
    ax.legend(**_LEGEND)


def draw_report(data: ReportData) -> Figure:
    """A figure with the four panels over a shared UTC time axis.

    The alpha line on the p-value panel is the level the data's counts were
    made at (``prepare_report(alpha=…)``), so the picture and its legend agree.
    """
    alpha = data.p_values.alpha
    figure = Figure(figsize=FIGSIZE, layout="constrained")
    means, difference, status, p_axis = figure.subplots(
        4, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2, 1.4, 2.2]}
    )
    figure.suptitle(_title(data))
    _draw_means(means, data)
    _draw_differences(difference, data)
    _draw_status(status, data)
    _draw_p_values(p_axis, data, alpha)
    locator = mdates.AutoDateLocator(tz=UTC)  # type: ignore[no-untyped-call]
    p_axis.xaxis.set_major_locator(locator)
    formatter = mdates.ConciseDateFormatter(locator, tz=UTC)  # type: ignore[no-untyped-call]
    p_axis.xaxis.set_major_formatter(formatter)
    p_axis.set_xlabel("time (UTC)")
    for ax in (means, difference, status, p_axis):
        ax.grid(True, axis="x", alpha=0.3)
    return figure


def save_report(data: ReportData, path: Path) -> None:
    """Draw the report and write it as a PNG; raises OSError if it cannot be written."""
    draw_report(data).savefig(path, format="png", dpi=DPI)
