"""The live view (``workcell watch``, ``workcell run``): its state from the API's answers,
and its layout at the terminal's size (pure: no sockets, no clock)."""

from __future__ import annotations

import io
import re

from google.protobuf.duration_pb2 import Duration

from tests.builders import history_entry
from workcell.cell_state import CellState
from workcell.liveview import (
    LiveScreen,
    SummaryLines,
    event_line,
    render_screen,
    render_summary,
)
from workcell.timeconv import US_PER_SECOND, to_timestamp
from workcell.v1 import command_pb2, history_pb2, nodes_pb2, sensors_pb2

T0 = 1_740_830_400 * US_PER_SECOND  # 2025-03-01T12:00:00Z
PERIOD = 5 * US_PER_SECOND
NOW = T0 + 20 * PERIOD


def event(command_id: int, *, acked: bool, kind: int) -> history_pb2.WatchResponse:
    entry = history_entry(
        command_id,
        window_start=T0 + command_id * PERIOD,
        period_us=PERIOD,
        status=command_pb2.STATUS_DOWN if command_id % 3 else command_pb2.STATUS_UP,
        p_value=0.0012,
        acked=acked,
        window=history_pb2.WindowSummary(count=1498, mean=1.0, std_dev=1.0),
    )
    return history_pb2.WatchResponse(
        kind=kind,  # type: ignore[arg-type]
        command=entry,
        resume_after_command_id=command_id,
        resume_acknowledged_through=command_id if acked else command_id - 1,
    )


def runs(node: str, *sensors: tuple[str, int, bool]) -> sensors_pb2.ListRunsResponse:
    """One node's answer: (sensor id, readings in the last window, live) per run."""
    period = Duration()
    period.FromMicroseconds(PERIOD)
    return sensors_pb2.ListRunsResponse(
        node=node,
        period=period,
        observed_at=to_timestamp(NOW),
        runs=[
            sensors_pb2.SensorRun(
                sensor_id=sensor_id,
                boot_id="b00t" + sensor_id,
                last_window_readings=last,
                stored=last * 4,
                stale=1,
                live=live,
                last_received_at=to_timestamp(NOW - US_PER_SECOND),
            )
            for sensor_id, last, live in sensors
        ],
    )


def two_node_state() -> CellState:
    state = CellState(sensor_ids=["sensor-1", "sensor-2", "sensor-3"])
    state.controller_ids = ["controller-1", "controller-2"]
    state.watch_nodes(["127.0.0.1:50051", "127.0.0.1:50052"])
    state.set_leadership(
        "127.0.0.1:50051",
        nodes_pb2.GetLeadershipResponse(
            node="a", leading=True, epoch=3, leader_address="127.0.0.1:50051"
        ),
    )
    state.set_leadership(
        "127.0.0.1:50052",
        nodes_pb2.GetLeadershipResponse(
            node="b", leading=False, epoch=3, leader_address="127.0.0.1:50051"
        ),
    )
    # sensor-1 streams to both nodes (round robin): the view adds the two up.
    state.set_runs("127.0.0.1:50051", runs("a", ("sensor-1", 750, True), ("sensor-2", 1500, True)))
    state.set_runs("127.0.0.1:50052", runs("b", ("sensor-1", 750, True), ("gone", 0, False)))
    for i in (1, 2, 3):
        state.apply_event(event(i, acked=False, kind=history_pb2.COMMAND_EVENT_KIND_ISSUED))
        state.apply_event(event(i, acked=True, kind=history_pb2.COMMAND_EVENT_KIND_ACKNOWLEDGED))
    state.apply_event(event(4, acked=False, kind=history_pb2.COMMAND_EVENT_KIND_ISSUED))
    return state


def test_state_adds_up_the_nodes_and_follows_the_events() -> None:
    state = two_node_state()
    assert (state.issued, state.acknowledged) == (4, 3)
    assert state.leader() == "127.0.0.1:50051"
    assert state.stored == (750 + 1500 + 750 + 0) * 4
    assert state.rate == (750 + 1500 + 750) / 5
    assert state.cadence() == 5.0
    rates = state.sensor_rates()
    assert rates == {"sensor-1": 300.0, "sensor-2": 300.0, "sensor-3": None, "gone": 0.0}
    summary = render_summary(state, elapsed=10)
    assert "stored=12000 (600.0/s) (controller-1 450.0/s, controller-2 150.0/s)" in summary
    assert "commands=4 acked=3 last=#4 down p=0.0012 n=1498 pending" in summary
    assert "leader=127.0.0.1:50051" in summary
    assert "sensor-1 300.0/s, sensor-2 300.0/s, sensor-3 -/s, gone 0.0/s (1 silent)" in summary
    # The older commands beyond the rows kept drop out; an ack of one is still counted.
    for i in range(5, 15):
        state.apply_event(event(i, acked=True, kind=history_pb2.COMMAND_EVENT_KIND_ISSUED))
    assert sorted(state.commands) == list(range(7, 15))


def test_the_screen_shows_nodes_commands_and_sensors() -> None:
    state = two_node_state()
    state.record_exit("sensor-3", -9, ["line a", "line b"])
    screen = "\n".join(render_screen(state, elapsed=65, now_us=NOW, width=120, height=60))
    assert "00:01:05" in screen
    assert re.search(r"controller-1 127\.0\.0\.1:50051\s+leader\s+3\s+9000\s+450\.0", screen)
    assert re.search(r"controller-2 127\.0\.0\.1:50052\s+standby\s+3\s+3000\s+150\.0", screen)
    assert re.search(r"\b4\s+down\s+12:00:20\.000-12:00:25\.000\s+0\.0012\s+1498\s+pending", screen)
    assert re.search(r"\b3\s+up\s+.*acked \+", screen)
    assert re.search(r"sensor-1\s+b00tsens\s+live\s+300\.0\s+2\s+6000", screen), screen
    assert re.search(r"sensor-3\s+not seen", screen)
    assert re.search(r"gone\s+b00tgone\s+silent", screen)
    assert "sensors: 2 live, 1 silent" in screen
    assert "sensor-3 exited unexpectedly (killed by SIGKILL)" in screen
    assert "sensor-3| line b" in screen


def test_the_layout_follows_the_terminal_width_and_height() -> None:
    state = two_node_state()
    for width in (60, 80, 100, 160):
        lines = render_screen(state, elapsed=1, now_us=NOW, width=width, height=60)
        assert max(len(line) for line in lines) <= width, (width, lines)
    wide = "\n".join(render_screen(state, elapsed=1, now_us=NOW, width=160, height=60))
    narrow = "\n".join(render_screen(state, elapsed=1, now_us=NOW, width=60, height=60))
    assert "window (UTC)" in wide
    assert "window (UTC)" not in narrow  # dropped, the essentials kept
    assert re.search(r"\b4\s+down\s+0\.0012\s+1498\s+pending", narrow)
    # A short terminal shows fewer sensor rows and says how many it left out.
    short = render_screen(state, elapsed=1, now_us=NOW, width=100, height=20)
    assert "more sensors (the terminal is too short)" in "\n".join(short)
    assert len(short) <= 20


def test_plain_lines_tell_each_event_and_a_summary() -> None:
    issued = event(4, acked=False, kind=history_pb2.COMMAND_EVENT_KIND_ISSUED)
    assert event_line(issued) == (
        "command 4 issued: down window [12:00:20.000, 12:00:25.000) p=0.0012 n=1498"
    )
    acked = event(4, acked=True, kind=history_pb2.COMMAND_EVENT_KIND_ACKNOWLEDGED)
    assert event_line(acked).startswith("command 4 acknowledged (acked +")
    out = io.StringIO()
    lines = SummaryLines(out, every=5.0, events=True)
    state = two_node_state()
    lines.event(issued)
    for second in range(1, 12):
        lines.refresh(state, elapsed=float(second), now_us=NOW)
    lines.close(state, elapsed=11.5, now_us=NOW)
    printed = out.getvalue().splitlines()
    assert printed[0].startswith("command 4 issued")
    assert len(printed) == 4  # the event, at 5 s, at 10 s and the final one


def test_the_final_frame_agrees_with_the_summary() -> None:
    out = io.StringIO()
    screen = LiveScreen(out)
    state = two_node_state()
    screen.refresh(state, elapsed=1, now_us=NOW)
    state.apply_event(event(4, acked=True, kind=history_pb2.COMMAND_EVENT_KIND_ACKNOWLEDGED))
    state.set_runs("127.0.0.1:50052", runs("b", ("sensor-1", 800, True)))
    state.phase = "stopped"
    screen.close(state, elapsed=2, now_us=NOW)
    text = out.getvalue()
    summary = text.rstrip().splitlines()[-1]
    assert summary == render_summary(state, elapsed=2)
    final = text[text.rindex("workcell  stopped") :]
    assert "commands: 4 issued, 4 acknowledged" in final
    assert re.search(r"controller-2 127\.0\.0\.1:50052\s+standby\s+(3\s+)?3200", final)
    assert "commands=4 acked=4" in summary
    assert "(controller-1 450.0/s, controller-2 160.0/s)" in summary
