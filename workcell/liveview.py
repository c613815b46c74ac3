"""What ``workcell run`` shows: the cell's state and two ways to draw it.

:class:`CellState` is fed the children's log lines (it keeps the latest report
of each kind), the last History entries and the children that exited. It is
pure: no clocks, no sockets. :class:`LiveScreen` redraws it in place with ANSI
escapes on a terminal; :class:`SummaryLines` prints one line every few seconds
for logs and pipes. Both only write to the stream they are given.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, TextIO

from workcell.history_table import format_p_value, format_table
from workcell.logs import log_message
from workcell.status import status_name
from workcell.v1.history_pb2 import HistoryEntry

__all__ = [
    "CellState",
    "ChildExit",
    "DecisionReport",
    "Display",
    "IngestReport",
    "LiveScreen",
    "SensorReport",
    "SummaryLines",
    "describe_exit",
    "render_screen",
    "render_summary",
]

# The exact log lines the services promise (see their __main__ modules).
_SENSOR = re.compile(
    r"sensor (?P<id>\S+): rate=(?P<rate>\S+)/s sent=(?P<sent>\d+) acked=(?P<acked>\d+) "
    r"buffered=(?P<buffered>\d+) dropped=(?P<dropped>\d+)"
)
_INGEST = re.compile(
    r"ingest: stored=(?P<stored>\d+) rate=(?P<rate>\S+)/s duplicates=(?P<duplicates>\d+) "
    r"stale=(?P<stale>\d+)"
)
_DECISION = re.compile(
    r"decision: command (?P<id>\d+) window \[(?P<start>[^,]+), (?P<end>[^)]+)\) "
    r"status=(?P<status>\w+) changed=(?P<changed>\w+) p=(?P<p>\S+) n=(?P<n>\d+)"
)
_ACK = re.compile(r"command (?P<id>\d+) acknowledged")

HISTORY_ROWS = 5
TAIL_ROWS = 3


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class SensorReport:
    """A sensor's latest ``sensor <id>: rate=...`` line."""

    sensor_id: str
    rate: float
    sent: int
    acked: int
    buffered: int
    dropped: int


@dataclass(frozen=True, slots=True)
class IngestReport:
    """The controller's latest ``ingest: stored=...`` line."""

    stored: int
    rate: float
    duplicates: int
    stale: int


@dataclass(frozen=True, slots=True)
class DecisionReport:
    """The controller's latest ``decision: command ...`` line."""

    command_id: int
    status: str
    changed: bool
    p_value: float | None
    count: int


@dataclass(frozen=True, slots=True)
class ChildExit:
    """A child that exited without being asked to, with its last output lines."""

    name: str
    code: int
    tail: tuple[str, ...]


def describe_exit(code: int) -> str:
    """``exit code 2`` or ``killed by SIGKILL`` (asyncio reports signals as -N)."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


@dataclass
class CellState:
    """Everything the view shows, updated from log lines and History answers."""

    sensor_ids: Sequence[str] = ()
    controller_ids: Sequence[str] = ()
    """The controller nodes, in order: one line each on screen when there are several."""
    phase: str = "starting"
    sensors: dict[str, SensorReport] = field(default_factory=dict)
    ingests: dict[str, IngestReport] = field(default_factory=dict)
    """Each controller's latest ingest report, by the child's name."""
    last_decision: DecisionReport | None = None
    decisions: int = 0
    acknowledged: set[int] = field(default_factory=set)
    history: list[HistoryEntry] = field(default_factory=list)
    history_error: str | None = None
    exits: list[ChildExit] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ingest(self) -> IngestReport | None:
        """Every controller's latest ingest report added up; None before the first."""
        reports = list(self.ingests.values())
        if not reports:
            return None
        return IngestReport(
            stored=sum(r.stored for r in reports),
            rate=sum(r.rate for r in reports),
            duplicates=sum(r.duplicates for r in reports),
            stale=sum(r.stale for r in reports),
        )

    def observe(self, line: str, child: str = "controller") -> None:
        """Take one log line of any child (text or JSON); lines of no interest are ignored.

        ``child`` names the child that wrote it (which controller, for ingest reports).
        """
        line = log_message(line)
        if match := _SENSOR.search(line):
            report = SensorReport(
                sensor_id=match["id"],
                rate=_float(match["rate"]) or 0.0,
                sent=int(match["sent"]),
                acked=int(match["acked"]),
                buffered=int(match["buffered"]),
                dropped=int(match["dropped"]),
            )
            self.sensors[report.sensor_id] = report
        elif match := _INGEST.search(line):
            self.ingests[child] = IngestReport(
                stored=int(match["stored"]),
                rate=_float(match["rate"]) or 0.0,
                duplicates=int(match["duplicates"]),
                stale=int(match["stale"]),
            )
        elif match := _DECISION.search(line):
            self.decisions += 1
            self.last_decision = DecisionReport(
                command_id=int(match["id"]),
                status=match["status"],
                changed=match["changed"].lower() == "true",
                p_value=_float(match["p"]),
                count=int(match["n"]),
            )
        elif match := _ACK.search(line):
            # A resent command is acknowledged again; count it once.
            self.acknowledged.add(int(match["id"]))

    def set_history(self, entries: Sequence[HistoryEntry]) -> None:
        """Keep the last few History entries (oldest first)."""
        self.history = list(entries[-HISTORY_ROWS:])
        self.history_error = None

    def record_exit(self, name: str, code: int, tail: Sequence[str]) -> None:
        """Remember a child that exited unexpectedly."""
        self.exits.append(ChildExit(name, code, tuple(tail)))


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _last_decision_text(state: CellState) -> str:
    if state.history:
        entry = state.history[-1]
        acked = "acked" if entry.HasField("acknowledged_at") else "pending"
        return (
            f"#{entry.command_id} {status_name(entry.status)} "
            f"p={format_p_value(entry)} n={entry.window.count} {acked}"
        )
    if state.last_decision is not None:
        d = state.last_decision
        p = "-" if d.p_value is None else f"{d.p_value:.4f}"
        return f"#{d.command_id} {d.status} p={p} n={d.count}"
    return "none yet"


def _ingest_text(report: IngestReport) -> str:
    return (
        f"stored {report.stored} readings  {report.rate:.1f}/s  "
        f"duplicates {report.duplicates}  stale {report.stale}"
    )


def _controller_lines(state: CellState) -> list[str]:
    """One line for the controller, or one per node and their total when there are several."""
    names = list(state.controller_ids) or sorted(state.ingests)
    if len(names) <= 1:
        total = state.ingest
        if total is None:
            return ["controller  waiting for the first ingest report"]
        return [f"controller  {_ingest_text(total)}"]
    width = max(len(name) for name in names) + 2
    lines = []
    for name in names:
        report = state.ingests.get(name)
        text = "waiting for the first ingest report" if report is None else _ingest_text(report)
        lines.append(f"{name:<{width}}{text}")
    total = state.ingest
    if total is not None:
        lines.append(f"{'all':<{width}}{_ingest_text(total)}")
    return lines


def render_screen(state: CellState, *, elapsed: float, title: str = "workcell") -> list[str]:
    """The full live view as lines (no escapes, no trailing newlines)."""
    lines = [f"{title}  {state.phase} {_clock(elapsed)}  (Ctrl-C stops the cell)", ""]
    lines += _controller_lines(state)
    lines.append(
        f"commands    issued {state.decisions}  acknowledged {len(state.acknowledged)}  "
        f"last {_last_decision_text(state)}"
    )
    lines += [
        "",
        f"{'sensor':<16}{'rate/s':>10}{'sent':>12}{'acked':>12}{'buffered':>10}{'dropped':>9}",
    ]
    for sensor_id in state.sensor_ids or sorted(state.sensors):
        report = state.sensors.get(sensor_id)
        if report is None:
            lines.append(f"{sensor_id:<16}{'…':>10}  (no report yet)")
        else:
            lines.append(
                f"{sensor_id:<16}{report.rate:>10.1f}{report.sent:>12}{report.acked:>12}"
                f"{report.buffered:>10}{report.dropped:>9}"
            )
    lines += ["", "last decisions (History/Query)"]
    if state.history:
        lines += format_table(state.history).splitlines()
    elif state.history_error is not None:
        lines.append(f"  unavailable: {state.history_error}")
    else:
        lines.append("  none yet")
    for gone in state.exits:
        lines += ["", f"! {gone.name} exited unexpectedly ({describe_exit(gone.code)})"]
        lines += [f"  {gone.name}| {text}" for text in gone.tail[-TAIL_ROWS:]]
    lines += state.notes
    return lines


def render_summary(state: CellState, *, elapsed: float) -> str:
    """One line for logs and pipes: stored rate (each node's too), commands, sensor rates, exits."""
    parts = [f"[{elapsed:6.1f}s]"]
    if state.ingest is None:
        parts.append("stored=- (no report yet)")
    else:
        parts.append(f"stored={state.ingest.stored} ({state.ingest.rate:.1f}/s)")
    controllers = list(state.controller_ids) or sorted(state.ingests)
    if len(controllers) > 1:
        each = []
        for name in controllers:
            node = state.ingests.get(name)
            each.append(f"{name} {'-' if node is None else f'{node.rate:.1f}'}/s")
        parts.append("(" + ", ".join(each) + ")")
    parts.append(f"commands={state.decisions} acked={len(state.acknowledged)}")
    parts.append(f"last={_last_decision_text(state)}")
    rates = []
    for sensor_id in state.sensor_ids or sorted(state.sensors):
        report = state.sensors.get(sensor_id)
        rates.append(f"{sensor_id} {'-' if report is None else f'{report.rate:.1f}'}/s")
    line = " ".join(parts) + " | sensors: " + ", ".join(rates)
    if state.exits:
        line += " | exited: " + ", ".join(
            f"{gone.name} ({describe_exit(gone.code)})" for gone in state.exits
        )
    return line


class Display(Protocol):
    """Something that shows the state now and then, and once more at the end."""

    def refresh(self, state: CellState, *, elapsed: float) -> None: ...

    def close(self, state: CellState, *, elapsed: float) -> None: ...


class LiveScreen:
    """Redraws the view in place on a terminal (ANSI cursor movement)."""

    def __init__(self, stream: TextIO, *, width: int = 120) -> None:
        self._stream = stream
        self._width = width
        self._drawn = 0

    def refresh(self, state: CellState, *, elapsed: float) -> None:
        """Draw the current view over the previous one."""
        # Lines wider than the terminal would wrap and break the cursor arithmetic.
        lines = [line[: self._width] for line in render_screen(state, elapsed=elapsed)]
        out = []
        if self._drawn:
            out.append(f"\x1b[{self._drawn}F")
        else:
            out.append("\x1b[?25l")  # hide the cursor while redrawing
        out += [f"{line}\x1b[K\n" for line in lines]
        out.append("\x1b[J")
        self._stream.write("".join(out))
        self._stream.flush()
        self._drawn = len(lines)

    def close(self, state: CellState, *, elapsed: float) -> None:
        """Leave the final view on screen and give the cursor back."""
        self.refresh(state, elapsed=elapsed)
        self._stream.write("\x1b[?25h")
        self._stream.flush()


class SummaryLines:
    """One summary line every ``every`` seconds, and a last one at close."""

    def __init__(self, stream: TextIO, *, every: float = 5.0) -> None:
        self._stream = stream
        self._every = every
        self._next = every

    def refresh(self, state: CellState, *, elapsed: float) -> None:
        """Print a line when the next multiple of ``every`` has passed."""
        if elapsed >= self._next:
            self._print(state, elapsed)
            while self._next <= elapsed:
                self._next += self._every

    def close(self, state: CellState, *, elapsed: float) -> None:
        """Print the final line."""
        self._print(state, elapsed)

    def _print(self, state: CellState, elapsed: float) -> None:
        self._stream.write(render_summary(state, elapsed=elapsed) + "\n")
        self._stream.flush()
