"""The sensor's live rate display: a tqdm bar on a terminal, else a log line every 5 s.

The log line has a stable format that ``workcell run`` parses::

    sensor <id>: rate=<readings/s, 1 decimal>/s sent=<n> acked=<n> buffered=<n> dropped=<n>

where rate is the readings *created* per second over the last interval. Once
the controller has rejected readings (dropped: see ``Delivery.rejected``), the
line goes on with `` rejected=<n>``; once it has reported stale readings
(stored too late to count in a decision: the sensor's clock is behind, or its
delivery late), it ends with `` stale=<n>``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

__all__ = ["Counters", "ProgressReporter", "RateMeter", "progress_line"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Counters:
    """A snapshot of a sensor's counters."""

    created: int
    sent: int
    acked: int
    buffered: int
    dropped: int
    reconnects: int = 0
    stale: int = 0
    """Acknowledged readings the controller stored too late to count in a decision."""
    rejected: int = 0
    """Readings dropped because the controller refuses them as invalid."""
    undelivered: int = 0
    """Readings not yet acknowledged, rejected or dropped (held, or evicted in flight)."""


def progress_line(sensor_id: str, rate: float, counters: Counters) -> str:
    """The progress log line (format parsed by ``workcell run``: keep it stable)."""
    line = (
        f"sensor {sensor_id}: rate={rate:.1f}/s sent={counters.sent} acked={counters.acked} "
        f"buffered={counters.buffered} dropped={counters.dropped}"
    )
    # Only once there are any, so the usual line stays as it always was.
    if counters.rejected:
        line += f" rejected={counters.rejected}"
    return f"{line} stale={counters.stale}" if counters.stale else line


class RateMeter:
    """Events per second between successive samples of a growing count."""

    def __init__(self, count: int, now: float) -> None:
        self._count = count
        self._time = now

    def sample(self, count: int, now: float) -> float:
        """The rate since the previous sample (0 when no time passed)."""
        elapsed = now - self._time
        rate = (count - self._count) / elapsed if elapsed > 0 else 0.0
        self._count = count
        self._time = now
        return rate


class ProgressReporter:
    """Shows a sensor's progress until cancelled: tqdm bar when ``bar``, else log lines."""

    def __init__(
        self,
        sensor_id: str,
        counters: Callable[[], Counters],
        *,
        bar: bool,
        total: int | None = None,
        log_interval: float = 5.0,
        bar_interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sensor_id = sensor_id
        self._counters = counters
        self._bar = bar
        self._total = total
        self._log_interval = log_interval
        self._bar_interval = bar_interval
        self._clock = clock
        self.rate = 0.0
        """Readings created per second over the last ``log_interval`` (0 until one has passed)."""

    async def run(self) -> None:
        """Report until cancelled."""
        if self._bar:
            await self._run_bar()
        else:
            await self._run_log()

    async def _run_log(self) -> None:
        meter = RateMeter(self._counters().created, self._clock())
        while True:
            await asyncio.sleep(self._log_interval)
            counters = self._counters()
            rate = self.rate = meter.sample(counters.created, self._clock())
            log.info(
                "%s",
                progress_line(self._sensor_id, rate, counters),
                extra={
                    "sensor_id": self._sensor_id,
                    "rate": round(rate, 1),
                    "sent": counters.sent,
                    "acked": counters.acked,
                    "buffered": counters.buffered,
                    "dropped": counters.dropped,
                    "rejected": counters.rejected,
                    "stale": counters.stale,
                },
            )

    async def _run_bar(self) -> None:
        # While the bar is up, log lines on the terminal go through tqdm.write,
        # which clears the bar, writes the line and redraws the bar below it:
        # written directly, a line would continue the bar's (it ends in no newline).
        with logging_redirect_tqdm(tqdm_class=tqdm):
            await self._draw_bar()

    async def _draw_bar(self) -> None:
        bar: Any = tqdm(
            total=self._total,
            desc=self._sensor_id,
            unit=" readings",
            file=sys.stderr,
            dynamic_ncols=True,
        )
        shown = 0
        meter = RateMeter(self._counters().created, self._clock())
        sampled_at = self._clock()

        def refresh() -> None:
            nonlocal shown, sampled_at
            counters = self._counters()
            now = self._clock()
            if now - sampled_at >= self._log_interval:
                # The same interval as the log lines, so ``rate`` means the same with a bar.
                self.rate = meter.sample(counters.created, now)
                sampled_at = now
            postfix = (
                f"acked={counters.acked} buffered={counters.buffered} dropped={counters.dropped}"
            )
            if counters.rejected:
                postfix += f" rejected={counters.rejected}"
            if counters.stale:
                postfix += f" stale={counters.stale}"
            bar.set_postfix_str(postfix, refresh=False)
            bar.update(counters.created - shown)
            shown = counters.created

        try:
            while True:
                refresh()
                await asyncio.sleep(self._bar_interval)
        finally:
            refresh()  # the final counts stay on screen
            bar.close()
