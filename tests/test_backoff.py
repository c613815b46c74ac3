"""The one retry schedule (workcell.backoff), without a clock."""

from __future__ import annotations

import itertools

import pytest

from workcell.backoff import Backoff


def test_delays_double_up_to_the_cap_without_jitter() -> None:
    backoff = Backoff(initial=0.1, maximum=1.0, jitter=0.0)
    delays = list(itertools.islice(backoff.delays(), 7))
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])


def test_jitter_only_shortens_a_delay_by_its_fraction() -> None:
    backoff = Backoff(initial=1.0, maximum=8.0, jitter=0.5)
    assert backoff.delay(3, 0.0) == 4.0
    assert backoff.delay(3, 0.999) == pytest.approx(2.002)
    fractions = iter([0.0, 0.5, 0.25])
    assert list(itertools.islice(backoff.delays(lambda: next(fractions)), 3)) == [1.0, 1.5, 3.5]


@pytest.mark.parametrize(
    "arguments",
    [{"initial": 0}, {"initial": 2.0, "maximum": 1.0}, {"multiplier": 0.5}, {"jitter": 1.0}],
)
def test_a_schedule_that_cannot_work_is_refused(arguments: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="need"):
        Backoff(**arguments)
