"""Draw a ``workcell report``: three panels over one UTC time axis, saved as PNG.

1. each window's mean with its 95 % t-interval;
2. the status in force (up/down spans), with a marker per acknowledged command
   and a distinct one per command still pending;
3. the decisions' p-values on a log axis against alpha; untested decisions
   marked along the top.

It uses matplotlib's object API (``Figure``) without pyplot, so no GUI backend
and no global figure state are involved; PNG output goes through Agg.
"""

from __future__ import annotations

from datetime import UTC
from pathlib import Path
from typing import Any

import matplotlib.dates as mdates
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from workcell.report_data import CONFIDENCE, P_FLOOR, ReportData

__all__ = ["DPI", "FIGSIZE", "draw_report", "save_report"]

FIGSIZE = (11.0, 7.5)
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


def _title(data: ReportData) -> str:
    start = data.start.strftime(_TIME_FORMAT)
    # The end drops its date when it is the same day: shorter, nothing lost.
    same_day = data.end.date() == data.start.date()
    end = data.end.strftime("%H:%M:%SZ" if same_day else _TIME_FORMAT)
    noun = "command" if data.commands == 1 else "commands"
    return f"workcell decisions, {start} → {end} (UTC), {data.commands} {noun}"


def _draw_means(ax: Axes, data: ReportData) -> None:
    for i, band in enumerate(data.bands):
        times = np.array(band.times)
        ax.fill_between(
            times,
            band.low,
            band.high,
            color=_MEAN_COLOR,
            alpha=0.2,
            linewidth=0,
            label=f"{CONFIDENCE:.0%} t-interval" if i == 0 else None,
        )
        ax.plot(
            times,
            band.mean,
            color=_MEAN_COLOR,
            marker="o" if len(times) < 60 else None,
            markersize=3,
            linewidth=1.2,
            label="window mean" if i == 0 else None,
        )
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
    if data.bands:
        ax.legend(**_LEGEND)


def _draw_status(ax: Axes, data: ReportData) -> None:
    level = {"down": 0.0, "up": 1.0}
    for span in data.spans:
        color = _STATUS_COLOR.get(span.status, _OTHER_COLOR)
        ax.axvspan(span.start, span.end, ymin=0.0, ymax=1.0, color=color, alpha=0.18, lw=0)  # type: ignore[arg-type]
        y = level.get(span.status, 0.5)
        ax.hlines(y, span.start, span.end, color=color, linewidth=2.5)  # type: ignore[arg-type]
    acks = data.acknowledgements
    if acks.acknowledged:
        ax.plot(
            np.array(acks.acknowledged),
            [level.get(s, 0.5) for s in acks.acknowledged_status],
            linestyle="none",
            marker="|",
            markersize=12,
            color="black",
        )
    if acks.pending:
        ax.plot(
            np.array(acks.pending),
            [level.get(s, 0.5) for s in acks.pending_status],
            linestyle="none",
            marker="X",
            markersize=8,
            color="#ef6c00",
        )
    ax.set_ylim(-0.5, 1.5)
    ax.set_yticks([0.0, 1.0], ["down", "up"])
    ax.set_ylabel("status")
    handles = [
        Patch(color=_STATUS_COLOR["up"], alpha=0.4, label="up"),
        Patch(color=_STATUS_COLOR["down"], alpha=0.4, label="down"),
        Line2D([], [], linestyle="none", marker="|", markersize=10, color="black",
               label=f"acknowledged ({len(acks.acknowledged)})"),
        Line2D([], [], linestyle="none", marker="X", markersize=7, color="#ef6c00",
               label=f"pending ({len(acks.pending)})"),
    ]  # fmt: skip
    ax.legend(handles=handles, **_LEGEND)


def _draw_p_values(ax: Axes, data: ReportData, alpha: float) -> None:
    pv = data.p_values
    ax.set_yscale("log")
    low = float(pv.shown.min()) if len(pv.shown) else alpha
    ax.set_ylim(min(low, alpha) / 10, 3.0)
    if len(pv.times):
        times = np.array(pv.times)
        ax.plot(times, pv.shown, color=_OTHER_COLOR, linewidth=0.8)
        groups = [
            (pv.p >= alpha, "o", 4, _MEAN_COLOR, "p ≥ alpha"),
            ((pv.p < alpha) & ~pv.clipped, "o", 5, _SIGNIFICANT_COLOR, "p < alpha"),
            (pv.clipped, "v", 7, _SIGNIFICANT_COLOR, f"p < {P_FLOOR:g}, drawn at it"),
        ]
        for mask, marker, size, color, label in groups:
            if mask.any():
                ax.plot(
                    times[mask],
                    pv.shown[mask],
                    linestyle="none",
                    marker=marker,
                    markersize=size,
                    color=color,
                    label=f"{label} ({int(mask.sum())})",
                )
    ax.axhline(alpha, color="black", linestyle="--", linewidth=1, label=f"alpha = {alpha:g}")
    if pv.untested:
        # Untested decisions have no p to place: mark them along the top edge.
        ax.plot(
            np.array(pv.untested),
            [0.96] * len(pv.untested),
            transform=ax.get_xaxis_transform(),
            linestyle="none",
            marker="x",
            markersize=6,
            color=_OTHER_COLOR,
            label=f"no test ({len(pv.untested)})",
        )
    ax.set_ylabel("p-value (Welch)")
    ax.legend(**_LEGEND)


def draw_report(data: ReportData, *, alpha: float) -> Figure:
    """A figure with the three panels over a shared UTC time axis."""
    figure = Figure(figsize=FIGSIZE, layout="constrained")
    means, status, p_axis = figure.subplots(
        3, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.4, 2.2]}
    )
    figure.suptitle(_title(data))
    _draw_means(means, data)
    _draw_status(status, data)
    _draw_p_values(p_axis, data, alpha)
    locator = mdates.AutoDateLocator(tz=UTC)  # type: ignore[no-untyped-call]
    p_axis.xaxis.set_major_locator(locator)
    formatter = mdates.ConciseDateFormatter(locator, tz=UTC)  # type: ignore[no-untyped-call]
    p_axis.xaxis.set_major_formatter(formatter)
    p_axis.set_xlabel("time (UTC)")
    for ax in (means, status, p_axis):
        ax.grid(True, axis="x", alpha=0.3)
    return figure


def save_report(data: ReportData, path: Path, *, alpha: float) -> None:
    """Draw the report and write it as a PNG; raises OSError if it cannot be written."""
    draw_report(data, alpha=alpha).savefig(path, format="png", dpi=DPI)
