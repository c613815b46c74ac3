"""``workcell report`` draws each decision's difference of the means with its interval."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from tests.builders import history_entry
from tests.history_server import PERIOD_US, START_US, ScriptedHistory, serving, synthetic_entry
from tests.test_report import held
from workcell.cli import HistoryConfig, report_command
from workcell.flags import address as address_flag
from workcell.report import DPI, FIGSIZE, draw_report, save_report
from workcell.report_data import differences, prepare_report
from workcell.timeconv import to_datetime
from workcell.v1 import history_pb2

START = START_US


def entry(
    k: int,
    difference: float | None,
    *,
    half: float | None = 0.5,
    changed: bool = False,
    min_effect: float | None = None,
    alpha: float = 0.05,
) -> history_pb2.HistoryEntry:
    """The command deciding window k, with its difference ± ``half`` (None: unset)."""
    made = history_entry(
        k + 1,
        window_start=START + k * PERIOD_US,
        period_us=PERIOD_US,
        window=history_pb2.WindowSummary(count=100, mean=10.0, std_dev=1.0),
        p_value=0.01,
        changed=changed,
    )
    made.policy.alpha = alpha
    if min_effect is not None:
        made.policy.min_effect = min_effect
        made.policy.confirm = 2
    if difference is not None:
        made.difference = difference
        if half is not None:
            made.difference_ci_low = difference - half
            made.difference_ci_high = difference + half
    return made


def test_each_decision_is_a_point_at_its_window_end_with_its_interval() -> None:
    got = differences([entry(0, 1.5), entry(1, -0.25, changed=True), entry(2, 3.0, half=None)])
    assert got.times == tuple(to_datetime(START + (k + 1) * PERIOD_US) for k in range(3))
    assert got.difference.tolist() == [1.5, -0.25, 3.0]
    assert got.low[:2].tolist() == [1.0, -0.75]
    assert got.high[:2].tolist() == [2.0, 0.25]
    assert math.isnan(got.low[2])  # a difference without an interval
    assert math.isnan(got.high[2])
    assert got.moved.tolist() == [False, True, False]


def test_decisions_without_a_difference_are_left_out() -> None:
    got = differences([entry(0, None), entry(1, 2.0), entry(2, None)])
    assert got.difference.tolist() == [2.0]
    assert differences([entry(0, None)]).times == ()


def test_the_latest_guard_and_level_are_kept_for_the_picture() -> None:
    got = differences([entry(0, 1.0, min_effect=2.0), entry(1, 1.0, min_effect=0.5, alpha=0.01)])
    assert got.min_effect == 0.5
    assert got.confidence == pytest.approx(0.99)
    assert differences([entry(0, 1.0)]).min_effect == 0.0


def test_a_long_range_averages_differences_and_envelopes_intervals() -> None:
    entries = [entry(k, float(k % 2), changed=k == 5) for k in range(16)]
    data = prepare_report(entries, max_buckets=4)
    got = data.differences
    assert data.summarized
    assert int(got.decisions.sum()) == 16
    assert len(got.times) < 16
    # Each point: the mean of its decisions' differences, inside the envelope of their intervals.
    assert float((got.difference * got.decisions).sum()) == pytest.approx(8.0)
    assert (got.low <= got.difference - 0.5).all()
    assert (got.high >= got.difference + 0.5).all()
    assert (got.low.min(), got.high.max()) == (-0.5, 1.5)
    assert int(got.moved.sum()) == 1
    assert got.changes == 1


def test_the_difference_panel_draws(tmp_path: Path) -> None:
    entries = [entry(k, 0.3 * (-1) ** k, min_effect=0.5) for k in range(10)]
    entries += [entry(10, 80.0, half=0.6, changed=True), entry(11, None)]
    figure = draw_report(prepare_report(entries))
    axes = figure.get_axes()
    assert len(axes) == 4
    panel = axes[1]
    assert panel.get_ylabel() == "difference of means"
    labels = panel.get_legend_handles_labels()[1]
    assert "±min effect 0.5" in labels
    assert "status moved (1)" in labels
    assert panel.get_yscale() == "symlog"  # a step of 80 among differences of 0.3
    path = tmp_path / "r.png"
    save_report(prepare_report(entries), path)
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (FIGSIZE[1] * DPI, FIGSIZE[0] * DPI)


def test_a_history_without_differences_says_so() -> None:
    figure = draw_report(prepare_report([entry(0, None), entry(1, None)]))
    texts = [t.get_text() for t in figure.get_axes()[1].texts]
    assert any("no differences recorded" in t for t in texts)


def with_difference(i: int) -> history_pb2.HistoryEntry:
    made = synthetic_entry(i)
    made.difference = math.sin(i)
    made.difference_ci_low = made.difference - 0.5
    made.difference_ci_high = made.difference + 0.5
    return made


def test_differences_stay_bounded_whatever_the_number_of_commands() -> None:
    small = prepare_report(with_difference(i) for i in range(10_000))
    large = prepare_report(with_difference(i) for i in range(100_000))
    assert int(large.differences.decisions.sum()) == 100_000
    assert len(large.differences.times) <= 2048
    assert held(large) < 2 * held(small)


def test_report_of_a_history_with_differences_from_a_real_history_server(
    tmp_path: Path,
) -> None:
    servicer = ScriptedHistory(300, make_entry=with_difference)
    with serving(servicer) as address:
        config = HistoryConfig(
            controller=address_flag(address),
            from_us=START_US,
            to_us=START_US + 10**9 * PERIOD_US,
            page_size=100,
        )
        assert report_command(config, alpha=0.05, output=tmp_path / "r.png") == 0
    pixels = matplotlib.image.imread(tmp_path / "r.png")
    assert np.ptp(pixels[..., :3]) > 0.5
