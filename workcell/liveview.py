"""How the live view of a cell (``workcell watch`` and ``workcell run``) is drawn.

The state (:class:`~workcell.cell_state.CellState`) is fed by
:mod:`workcell.cell_watch`. Two ways to show it: :class:`LiveScreen` redraws
it in place on a terminal with ``rich``, at the terminal's size of the moment
(narrow terminals lose the less needed columns, short ones the last sensor
rows), and :class:`SummaryLines` prints plain lines for logs and pipes. Both
end with the same summary line, drawn from the same final state as the last
frame.
"""

from __future__ import annotations

import io
from typing import Protocol, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from workcell.cell_state import CellState, describe_exit
from workcell.history_table import format_p_value
from workcell.status import status_name
from workcell.timeconv import from_timestamp, to_datetime
from workcell.v1 import history_pb2
from workcell.v1.history_pb2 import HistoryEntry

__all__ = [
    "Display",
    "LiveScreen",
    "SummaryLines",
    "event_line",
    "render_screen",
    "render_summary",
    "screen",
]

TAIL_ROWS = 3
SUMMARY_SENSORS = 16
"""Sensors named in a summary line; the rest are counted."""
NARROW = 90
"""Below this many columns, the tables keep only their essential columns."""


# -- text ------------------------------------------------------------------------------


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _time(us: int) -> str:
    moment = to_datetime(us)
    return moment.strftime("%H:%M:%S") + f".{moment.microsecond // 1000:03d}"


def _ack_text(entry: HistoryEntry) -> str:
    if not entry.HasField("acknowledged_at"):
        return "pending"
    lag = (from_timestamp(entry.acknowledged_at) - from_timestamp(entry.issued_at)) / 1e6
    return f"acked +{lag:.3f}s"


def _command_text(entry: HistoryEntry) -> str:
    return (
        f"#{entry.command_id} {status_name(entry.status)} p={format_p_value(entry)} "
        f"n={entry.window.count} {_ack_text(entry).split(' ')[0]}"
    )


def event_line(event: history_pb2.WatchResponse) -> str:
    """One plain line per History/Watch event."""
    entry = event.command
    if event.kind == history_pb2.COMMAND_EVENT_KIND_ACKNOWLEDGED:
        return f"command {entry.command_id} acknowledged ({_ack_text(entry)})"
    start, end = from_timestamp(entry.from_datetime), from_timestamp(entry.to_datetime)
    window = f"[{_time(start)}, {_time(end)})"
    changed = " changed" if entry.changed else ""
    return (
        f"command {entry.command_id} issued: {status_name(entry.status)}{changed} "
        f"window {window} p={format_p_value(entry)} n={entry.window.count}"
    )


def render_summary(state: CellState, *, elapsed: float) -> str:
    """One line for logs and pipes: stored and rate (each node's too), commands, leader, sensors."""
    parts = [f"[{elapsed:6.1f}s]"]
    stored = state.stored
    if stored is None:
        parts.append("stored=- (no node answered yet)")
    else:
        parts.append(f"stored={stored} ({state.rate:.1f}/s)")
    if len(state.nodes) > 1:
        parts.append(
            "("
            + ", ".join(
                f"{n.name} {'-' if n.error or not n.period_us else f'{n.rate:.1f}'}/s"
                for n in state.nodes.values()
            )
            + ")"
        )
    parts.append(f"commands={state.issued} acked={state.acknowledged}")
    last = state.last_command()
    parts.append(f"last={'none yet' if last is None else _command_text(last)}")
    cadence = state.cadence()
    if cadence is not None:
        parts.append(f"every={cadence:.2f}s")
    parts.append(f"leader={state.leader() or '-'}")
    rates = state.sensor_rates()
    named = [
        f"{sensor_id} {'-' if rate is None else f'{rate:.1f}'}/s"
        for sensor_id, rate in list(rates.items())[:SUMMARY_SENSORS]
    ]
    if len(rates) > SUMMARY_SENSORS:
        named.append(f"… {len(rates) - SUMMARY_SENSORS} more")
    silent = sum(1 for s in state.sensors() if not s.live)
    line = " ".join(parts) + " | sensors: " + (", ".join(named) or "none yet")
    if silent:
        line += f" ({silent} silent)"
    unreachable = [n for n in state.nodes.values() if n.error is not None]
    if unreachable:
        line += " | unreachable: " + ", ".join(f"{n.address} ({n.error})" for n in unreachable)
    if state.exits:
        line += " | exited: " + ", ".join(
            f"{gone.name} ({describe_exit(gone.code)})" for gone in state.exits
        )
    return line


# -- the screen ------------------------------------------------------------------------


def _nodes_table(state: CellState, narrow: bool) -> Table:
    table = Table(title=None, box=None, pad_edge=False, expand=False, header_style="bold")
    table.add_column("controller", no_wrap=True, overflow="ellipsis")
    table.add_column("role", no_wrap=True)
    if not narrow:
        table.add_column("term", justify="right")
    table.add_column("stored", justify="right")
    table.add_column("rate/s", justify="right")
    for node in state.nodes.values():
        if node.error is not None:
            role = Text(f"unreachable: {node.error}", style="red", overflow="ellipsis")
        elif node.leading is None:
            role = Text("…")
        else:
            role = Text("leader", style="bold green") if node.leading else Text("standby")
        label = node.name if node.name == node.address else f"{node.name} {node.address}"
        cells: list[RenderableType] = [label, role]
        if not narrow:
            cells.append(str(node.epoch) if node.leading is not None else "")
        cells += [str(node.stored), f"{node.rate:.1f}"]
        table.add_row(*cells)
    return table


def _commands_table(state: CellState, narrow: bool) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    if not narrow:
        table.add_column("window (UTC)", no_wrap=True)
    table.add_column("p", justify="right", no_wrap=True)
    table.add_column("n", justify="right", no_wrap=True)
    table.add_column("ack", no_wrap=True)
    for command_id in sorted(state.commands):
        entry = state.commands[command_id]
        status = status_name(entry.status) + (" *" if entry.changed else "")
        cells: list[RenderableType] = [
            str(command_id),
            Text(status, style="bold" if entry.changed else ""),
        ]
        if not narrow:
            cells.append(
                f"{_time(from_timestamp(entry.from_datetime))}-"
                f"{_time(from_timestamp(entry.to_datetime))}"
            )
        ack = _ack_text(entry)
        cells += [
            format_p_value(entry),
            str(entry.window.count),
            Text(ack, style="yellow" if ack == "pending" else "green"),
        ]
        table.add_row(*cells)
    return table


def _sensors_table(state: CellState, narrow: bool, rows: int, now_us: int) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("sensor", no_wrap=True, overflow="ellipsis", max_width=24)
    if not narrow:
        table.add_column("boot", no_wrap=True, max_width=8, overflow="crop")
    table.add_column("state", no_wrap=True)
    table.add_column("rate/s", justify="right", no_wrap=True)
    table.add_column("stale", justify="right", no_wrap=True)
    if not narrow:
        table.add_column("stored", justify="right", no_wrap=True)
        table.add_column("dup", justify="right", no_wrap=True)
    table.add_column("last", justify="right", no_wrap=True)
    period = state.period_us
    sensors = state.sensors()
    seen = {s.sensor_id for s in sensors}
    missing = [sensor_id for sensor_id in state.sensor_ids if sensor_id not in seen]
    shown = 0
    for sensor_id in missing:
        if shown >= rows:
            break
        cells: list[RenderableType] = [sensor_id]
        if not narrow:
            cells.append("")
        cells += [Text("not seen", style="yellow"), "-", "-"]
        if not narrow:
            cells += ["-", "-"]
        cells.append("-")
        table.add_row(*cells)
        shown += 1
    for sensor in sensors:
        if shown >= rows:
            break
        rate = sensor.last_window * 1e6 / period if period else 0.0
        cells = [sensor.sensor_id]
        if not narrow:
            cells.append(sensor.boot_id)
        cells += [
            Text("live", style="green") if sensor.live else Text("silent", style="red"),
            f"{rate:.1f}",
            str(sensor.stale),
        ]
        if not narrow:
            cells += [str(sensor.stored), str(sensor.duplicates)]
        cells.append(f"{max(0.0, (now_us - sensor.last_received_us) / 1e6):.1f}s ago")
        table.add_row(*cells)
        shown += 1
    hidden = len(missing) + len(sensors) - shown
    if hidden > 0:
        table.caption = f"… {hidden} more sensors (the terminal is too short)"
    return table


def screen(
    state: CellState,
    *,
    elapsed: float,
    now_us: int,
    width: int,
    height: int,
    title: str = "workcell",
) -> RenderableType:
    """The whole view for a terminal of ``width`` columns and ``height`` rows."""
    narrow = width < NARROW
    header = Text(f"{title}  {state.phase} {_clock(elapsed)}  ", style="bold")
    header.append("(Ctrl-C stops)", style="dim")
    cadence = state.cadence()
    last = state.last_command()
    decisions = Text(
        f"commands: {state.issued} issued, {state.acknowledged} acknowledged since the view began"
    )
    if cadence is not None:
        decisions.append(f"; one every {cadence:.2f}s")
    if state.issue_times:
        decisions.append(f", the last {(now_us - state.issue_times[-1]) / 1e6:.1f}s ago")
    parts: list[RenderableType] = [header, Text(""), _nodes_table(state, narrow), Text("")]
    parts.append(decisions)
    if state.watch_error is not None:
        parts.append(Text(f"History/Watch: {state.watch_error}", style="red"))
    if last is not None:
        parts.append(_commands_table(state, narrow))
    else:
        parts.append(Text("  no command yet", style="dim"))
    parts.append(Text(""))
    sensors = state.sensors()
    live = sum(1 for s in sensors if s.live)
    parts.append(Text(f"sensors: {live} live, {len(sensors) - live} silent"))
    exits: list[RenderableType] = []
    for gone in state.exits:
        exits.append(
            Text(f"! {gone.name} exited unexpectedly ({describe_exit(gone.code)})", style="red")
        )
        exits += [
            Text(f"  {gone.name}| {line}", overflow="ellipsis") for line in gone.tail[-TAIL_ROWS:]
        ]
    notes = [Text(note) for note in state.notes]
    # Every line but the sensor rows (the decisions line may wrap once): the rows
    # that fit below them are shown, the others counted.
    used = 11 + len(state.nodes) + len(state.commands) + len(exits) + len(notes)
    parts.append(_sensors_table(state, narrow, max(1, height - used), now_us))
    return Group(*parts, *exits, *notes)


def render_screen(
    state: CellState,
    *,
    elapsed: float,
    now_us: int = 0,
    width: int = 120,
    height: int = 60,
    title: str = "workcell",
) -> list[str]:
    """The view as plain lines at that size (for tests and for reading)."""
    out = io.StringIO()
    console = Console(file=out, width=width, height=height, color_system=None, legacy_windows=False)
    console.print(
        screen(state, elapsed=elapsed, now_us=now_us, width=width, height=height, title=title)
    )
    return [line.rstrip() for line in out.getvalue().splitlines()]


# -- displays ---------------------------------------------------------------------------


class Display(Protocol):
    """Something that shows the state now and then, and once more at the end."""

    def refresh(self, state: CellState, *, elapsed: float, now_us: int) -> None: ...

    def event(self, event: history_pb2.WatchResponse) -> None: ...

    def close(self, state: CellState, *, elapsed: float, now_us: int) -> None: ...


class LiveScreen:
    """Redraws the view in place on a terminal (``rich.live``), at its size of the moment."""

    def __init__(self, stream: TextIO, *, title: str = "workcell") -> None:
        self._console = Console(file=stream)
        self._title = title
        self._live: Live | None = None

    def _renderable(self, state: CellState, elapsed: float, now_us: int) -> RenderableType:
        width, height = self._console.size  # asked again at every frame
        return screen(
            state, elapsed=elapsed, now_us=now_us, width=width, height=height, title=self._title
        )

    def refresh(self, state: CellState, *, elapsed: float, now_us: int) -> None:
        """Draw the current view over the previous one."""
        view = self._renderable(state, elapsed, now_us)
        if self._live is None:
            self._live = Live(
                view,
                console=self._console,
                auto_refresh=False,
                vertical_overflow="crop",
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start(refresh=True)
        else:
            self._live.update(view, refresh=True)

    def event(self, event: history_pb2.WatchResponse) -> None:
        """Events show in the next frame."""

    def close(self, state: CellState, *, elapsed: float, now_us: int) -> None:
        """Leave the final view on screen, then the summary line drawn from the same state."""
        self.refresh(state, elapsed=elapsed, now_us=now_us)
        assert self._live is not None
        self._live.stop()
        self._live = None
        if not self._console.is_terminal:
            # Off a terminal rich leaves the last frame without its line end.
            self._console.line()
        self._console.print(render_summary(state, elapsed=elapsed), highlight=False, soft_wrap=True)


class SummaryLines:
    """Plain lines: one per command event (with ``events``), a summary every ``every``
    seconds, and a last summary at close."""

    def __init__(self, stream: TextIO, *, every: float = 5.0, events: bool = False) -> None:
        self._stream = stream
        self._every = every
        self._next = every
        self._events = events

    def refresh(self, state: CellState, *, elapsed: float, now_us: int) -> None:
        """Print a summary when the next multiple of ``every`` has passed."""
        if elapsed >= self._next:
            self._print(render_summary(state, elapsed=elapsed))
            while self._next <= elapsed:
                self._next += self._every

    def event(self, event: history_pb2.WatchResponse) -> None:
        if self._events:
            self._print(event_line(event))

    def close(self, state: CellState, *, elapsed: float, now_us: int) -> None:
        """Print the final summary."""
        self._print(render_summary(state, elapsed=elapsed))

    def _print(self, line: str) -> None:
        self._stream.write(line + "\n")
        self._stream.flush()
