"""Rate-limited per-sensor notices (controller/storage/notices.py), driven by a hand-set clock."""

from __future__ import annotations

from controller.storage.notices import Notice, SensorNotices


def test_the_first_occurrence_is_told_at_once_then_counts_once_per_interval() -> None:
    notices: SensorNotices[str] = SensorNotices(interval=30.0)
    assert notices.add("s1", 3, "a", now=100.0) == Notice("s1", 3, "a", first=True, seconds=0.0)
    # Within the interval: counted, not told.
    assert notices.add("s1", 5, "b", now=110.0) is None
    assert notices.add("s1", 1, "c", now=120.0) is None
    assert notices.due(now=125.0) == []
    # The interval is over: one summary with everything since, and the latest detail.
    assert notices.add("s1", 2, "d", now=130.0) == Notice("s1", 8, "d", first=False, seconds=30.0)
    assert notices.add("s1", 4, "e", now=131.0) is None
    assert notices.due(now=160.0) == [Notice("s1", 4, "e", first=False, seconds=30.0)]


def test_an_episode_ends_after_a_quiet_interval_and_the_next_is_told_at_once() -> None:
    notices: SensorNotices[int] = SensorNotices(interval=10.0)
    assert notices.add("s1", 1, 0, now=0.0) is not None
    assert notices.due(now=10.0) == []  # nothing more happened: the episode is over
    assert len(notices) == 0
    again = notices.add("s1", 1, 7, now=11.0)
    assert again is not None
    assert again.first


def test_sensors_are_limited_independently() -> None:
    notices: SensorNotices[int] = SensorNotices(interval=10.0)
    assert notices.add("s1", 1, 0, now=0.0) is not None
    assert notices.add("s2", 1, 0, now=1.0) is not None
    assert notices.add("s1", 1, 0, now=2.0) is None
    assert [n.sensor_id for n in notices.due(now=10.5)] == ["s1"]
