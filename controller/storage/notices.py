"""Rate-limited notices about one sensor at a time (pure: the time is passed in).

A sensor whose clock lags, or two processes sending as one sensor run, make
the same thing happen to thousands of readings a second. The operator needs
a line naming the sensor as soon as it starts, then a count now and then
while it lasts: not a line per reading or per commit group.

An episode starts with the first occurrence for a sensor (told at once).
While occurrences keep coming they are counted and told at most once per
interval, with the latest detail; an interval without any ends the episode,
and the next occurrence starts a new one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["NOTICE_INTERVAL", "Notice", "SensorNotices"]

NOTICE_INTERVAL = 30.0
"""Seconds between two notices about the same sensor and the same thing."""

D = TypeVar("D")


@dataclass(frozen=True, slots=True)
class Notice(Generic[D]):
    """What to tell about one sensor now."""

    sensor_id: str
    count: int
    """Occurrences since the previous notice about this sensor (all of them, for the first)."""
    detail: D
    """About the latest occurrence."""
    first: bool
    """The first notice of an episode."""
    seconds: float
    """How long ``count`` took to gather (0 for the first notice)."""


@dataclass(slots=True)
class _Episode(Generic[D]):
    told_at: float
    pending: int
    detail: D


class SensorNotices(Generic[D]):
    """Decides when to tell about each sensor; the caller logs the notices."""

    def __init__(self, interval: float = NOTICE_INTERVAL) -> None:
        self.interval = interval
        self._episodes: dict[str, _Episode[D]] = {}

    def __len__(self) -> int:
        """Sensors with an episode going on."""
        return len(self._episodes)

    def add(self, sensor_id: str, count: int, detail: D, *, now: float) -> Notice[D] | None:
        """Record ``count`` occurrences for ``sensor_id``; the notice to tell now, if one is due."""
        episode = self._episodes.get(sensor_id)
        if episode is None:
            self._episodes[sensor_id] = _Episode(now, 0, detail)
            return Notice(sensor_id, count, detail, first=True, seconds=0.0)
        episode.pending += count
        episode.detail = detail
        if now - episode.told_at < self.interval:
            return None
        return self._tell(sensor_id, episode, now)

    def due(self, *, now: float) -> list[Notice[D]]:
        """Counts whose interval is over; episodes quiet for a whole interval end."""
        if not self._episodes:
            return []
        notices = []
        for sensor_id, episode in list(self._episodes.items()):
            if now - episode.told_at < self.interval:
                continue
            if episode.pending:
                notices.append(self._tell(sensor_id, episode, now))
            else:
                del self._episodes[sensor_id]
        return notices

    @staticmethod
    def _tell(sensor_id: str, episode: _Episode[D], now: float) -> Notice[D]:
        notice = Notice(
            sensor_id, episode.pending, episode.detail, first=False, seconds=now - episode.told_at
        )
        episode.told_at = now
        episode.pending = 0
        return notice
