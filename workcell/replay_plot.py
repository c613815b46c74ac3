"""Draw ``workcell replay -o replay.png``: both status tracks over the window means.

Two panels on one UTC time axis:

1. each window's mean (a line through the windows with two readings or more), with the
   windows where the replayed status differs from the issued one shaded;
2. two status tracks, issued above and replayed below, green while up and red while down,
   a status drawn from its window's end for one window length (when it was in force), with
   a tick where each changed.

The windows are kept as compact arrays (about 40 bytes a window), and each track is one
``broken_barh`` collection per status, however many windows. Like ``workcell.report`` it uses
matplotlib's object API (``Figure``, Agg), no pyplot.
"""

from __future__ import annotations

from array import array
from pathlib import Path

import matplotlib.dates as mdates
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from controller.decision.replay import Replayed
from workcell.report_data import FloatArray
from workcell.timeconv import US_PER_SECOND

__all__ = ["ReplayTrack", "draw_replay", "save_replay"]

FIGSIZE = (11.0, 6.0)
DPI = 100
_STATUS_COLOR = {"up": "#2e7d32", "down": "#c62828"}
_MEAN_COLOR = "#1f4e9c"
_DIFFER_COLOR = "#ffb300"
_US_PER_DAY = 86_400 * US_PER_SECOND


class ReplayTrack:
    """The windows of a replay, as drawn: times, means, both statuses and their changes."""

    def __init__(self) -> None:
        self.start = array("q")
        self.end = array("q")
        self.mean = array("d")
        self.issued = bytearray()  # 1: up, 0: down
        self.replayed = bytearray()
        self.issued_changed = bytearray()
        self.replayed_changed = bytearray()

    def __len__(self) -> int:
        return len(self.start)

    def add(self, replayed: Replayed) -> None:
        recorded = replayed.recorded
        current = replayed.decision.current
        self.start.append(recorded.window_start)
        self.end.append(recorded.window_end)
        self.mean.append(current.mean if current.count >= 2 else float("nan"))
        self.issued.append(recorded.status == "up")
        self.replayed.append(replayed.status == "up")
        self.issued_changed.append(recorded.changed)
        self.replayed_changed.append(replayed.changed)


def _dates(us: FloatArray) -> FloatArray:
    """Matplotlib date numbers (days since the epoch, UTC) of times in microseconds."""
    return us / _US_PER_DAY


def _spans(starts: FloatArray, widths: FloatArray, mask: FloatArray) -> list[tuple[float, float]]:
    return list(zip(starts[mask.astype(bool)], widths[mask.astype(bool)], strict=True))


def draw_replay(track: ReplayTrack, *, title: str) -> Figure:
    """The figure of ``track`` (at least one window)."""
    figure = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    means_ax, status_ax = figure.subplots(
        2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.3]}
    )
    start = _dates(np.asarray(track.start, dtype=np.float64))
    end = _dates(np.asarray(track.end, dtype=np.float64))
    width = end - start
    means_ax.plot(
        start + width / 2, np.asarray(track.mean), color=_MEAN_COLOR, marker=".", linewidth=1
    )
    issued = np.frombuffer(bytes(track.issued), dtype=np.uint8).astype(np.float64)
    replayed = np.frombuffer(bytes(track.replayed), dtype=np.uint8).astype(np.float64)
    differs = (issued != replayed).astype(np.float64)
    if differs.any():
        low, high = np.nanmin(track.mean), np.nanmax(track.mean)
        if not np.isfinite(low):
            low, high = 0.0, 1.0
        means_ax.broken_barh(
            _spans(start, width, differs),
            (low, max(high - low, 1.0)),
            facecolor=_DIFFER_COLOR,
            alpha=0.25,
            label="replayed status differs",
        )
        means_ax.legend(loc="upper left", fontsize="small")
    means_ax.set_ylabel("window mean")
    means_ax.set_title(title, fontsize="medium")
    for y, statuses, changed in (
        (1.0, issued, track.issued_changed),
        (0.0, replayed, track.replayed_changed),
    ):
        for value, name in ((1.0, "up"), (0.0, "down")):
            status_ax.broken_barh(
                _spans(end, width, (statuses == value).astype(np.float64)),
                (y - 0.35, 0.7),
                facecolor=_STATUS_COLOR[name],
            )
        moved = np.frombuffer(bytes(changed), dtype=np.uint8).astype(bool)
        status_ax.plot(
            end[moved], np.full(int(moved.sum()), y + 0.45), "v", color="black", markersize=4
        )
    status_ax.set_yticks([1.0, 0.0], ["issued", "replayed"])
    status_ax.set_ylim(-0.6, 1.7)
    status_ax.legend(
        handles=[Patch(color=_STATUS_COLOR["up"], label="up"),
                 Patch(color=_STATUS_COLOR["down"], label="down")],
        loc="upper right", fontsize="small", ncols=2,
    )  # fmt: skip
    locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
    status_ax.xaxis.set_major_locator(locator)
    status_ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    status_ax.set_xlabel("time (UTC); ▼ the status changed")
    return figure


def save_replay(track: ReplayTrack, path: Path, *, title: str) -> None:
    """Write the PNG (raises OSError when it cannot)."""
    draw_replay(track, title=title).savefig(path, format="png")
