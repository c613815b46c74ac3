"""The state of the live view (``workcell watch``, ``workcell run``), from the live API (pure).

:class:`CellState` holds what the controllers said: History/Watch events
(:meth:`CellState.apply_event`), each node's Nodes/GetLeadership and
Sensors/ListRuns answers, and, under ``workcell run``, the children that
exited. No clocks (times are passed in), no sockets: the RPCs are made by
:mod:`workcell.cell_watch`, the drawing is :mod:`workcell.liveview`'s. No log
text is read for it.
"""

from __future__ import annotations

import signal
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from workcell.timeconv import from_timestamp
from workcell.v1 import history_pb2, nodes_pb2, sensors_pb2
from workcell.v1.history_pb2 import HistoryEntry

__all__ = [
    "HISTORY_ROWS",
    "CellState",
    "ChildExit",
    "NodeView",
    "SensorView",
    "describe_exit",
]

HISTORY_ROWS = 8
"""The last commands kept and shown."""
CADENCE_SAMPLES = 12


def describe_exit(code: int) -> str:
    """``exit code 2`` or ``killed by SIGKILL`` (asyncio reports signals as -N)."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


@dataclass(frozen=True, slots=True)
class ChildExit:
    """A child that exited without being asked to, with its last output lines."""

    name: str
    code: int
    tail: tuple[str, ...]


@dataclass(slots=True)
class NodeView:
    """One controller node as its last answers describe it."""

    name: str
    address: str
    node: str = ""
    leading: bool | None = None
    """None until it answered."""
    epoch: int = 0
    leader_address: str = ""
    runs: list[sensors_pb2.SensorRun] = field(default_factory=list)
    period_us: int = 0
    error: str | None = None

    @property
    def stored(self) -> int:
        return sum(run.stored for run in self.runs)

    @property
    def rate(self) -> float:
        """Readings per second this node stored in the last complete window."""
        if not self.period_us:
            return 0.0
        return sum(run.last_window_readings for run in self.runs) * 1e6 / self.period_us


@dataclass(slots=True)
class SensorView:
    """One sensor run, added up over every node that stored readings of it."""

    sensor_id: str
    boot_id: str
    live: bool = False
    last_window: int = 0
    current_window: int = 0
    stored: int = 0
    stale: int = 0
    duplicates: int = 0
    last_received_us: int = 0


@dataclass
class CellState:
    """Everything the view shows."""

    sensor_ids: Sequence[str] = ()
    """Sensors expected (``workcell run`` starts them): listed before they are seen."""
    controller_ids: Sequence[str] = ()
    """Names of the nodes, in the order of :attr:`addresses` (default: the addresses)."""
    phase: str = "starting"
    commands: dict[int, HistoryEntry] = field(default_factory=dict)
    """The last :data:`HISTORY_ROWS` commands, by id."""
    issued: int = 0
    """Commands told issued since the view began."""
    acknowledged: int = 0
    """Of the commands shown or told, how many were told acknowledged since the view began."""
    issue_times: deque[int] = field(default_factory=lambda: deque(maxlen=CADENCE_SAMPLES))
    nodes: dict[str, NodeView] = field(default_factory=dict)
    """By address, in the order given."""
    watch_error: str | None = None
    exits: list[ChildExit] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def watch_nodes(self, addresses: Sequence[str]) -> None:
        """The nodes to show, named by :attr:`controller_ids` when there are as many."""
        names = list(self.controller_ids)
        if len(names) != len(addresses):
            names = list(addresses)
        for name, address in zip(names, addresses, strict=True):
            self.nodes.setdefault(address, NodeView(name, address))

    # -- what the API said ---------------------------------------------------------

    def set_recent(self, entries: Sequence[HistoryEntry]) -> None:
        """The commands issued before the view began (History/Query), oldest first."""
        for entry in entries[-HISTORY_ROWS:]:
            self.commands[entry.command_id] = entry
            self.issue_times.append(from_timestamp(entry.issued_at))
        self._trim()

    def apply_event(self, event: history_pb2.WatchResponse) -> None:
        """One History/Watch event (told once each: a resumed watch repeats none)."""
        entry = event.command
        if event.kind == history_pb2.COMMAND_EVENT_KIND_ISSUED:
            self.issued += 1
            self.issue_times.append(from_timestamp(entry.issued_at))
        elif event.kind == history_pb2.COMMAND_EVENT_KIND_ACKNOWLEDGED:
            self.acknowledged += 1
        else:
            return
        known = self.commands.get(entry.command_id)
        if known is None and self.commands and entry.command_id < min(self.commands):
            return  # older than every command shown
        self.commands[entry.command_id] = entry
        self._trim()
        self.watch_error = None

    def set_leadership(self, address: str, answer: nodes_pb2.GetLeadershipResponse) -> None:
        node = self.nodes[address]
        node.node, node.leading, node.epoch = answer.node, answer.leading, answer.epoch
        node.leader_address = answer.leader_address
        node.error = None

    def set_runs(self, address: str, answer: sensors_pb2.ListRunsResponse) -> None:
        node = self.nodes[address]
        node.runs = list(answer.runs)
        node.period_us = answer.period.ToMicroseconds()
        node.error = None

    def set_error(self, address: str, error: str) -> None:
        self.nodes[address].error = error

    def record_exit(self, name: str, code: int, tail: Sequence[str]) -> None:
        """Remember a child that exited unexpectedly."""
        self.exits.append(ChildExit(name, code, tuple(tail)))

    def _trim(self) -> None:
        for old in sorted(self.commands)[:-HISTORY_ROWS]:
            del self.commands[old]

    # -- what follows from it ------------------------------------------------------

    @property
    def period_us(self) -> int:
        return max((node.period_us for node in self.nodes.values()), default=0)

    @property
    def stored(self) -> int | None:
        """Readings stored by every node (None before any node answered)."""
        answered = [n for n in self.nodes.values() if n.period_us]
        return sum(n.stored for n in answered) if answered else None

    @property
    def rate(self) -> float:
        return sum(node.rate for node in self.nodes.values())

    def leader(self) -> str | None:
        """The leader's address as the nodes name it (None: nobody leads, or unknown)."""
        for node in self.nodes.values():
            if node.leading:
                return node.address
        for node in self.nodes.values():
            if node.leader_address:
                return node.leader_address
        return None

    def sensors(self) -> list[SensorView]:
        """Every run any node knows of, added up over the nodes; silent ones first."""
        merged: dict[tuple[str, str], SensorView] = {}
        for node in self.nodes.values():
            for run in node.runs:
                key = (run.sensor_id, run.boot_id)
                view = merged.get(key)
                if view is None:
                    view = merged[key] = SensorView(run.sensor_id, run.boot_id)
                view.live = view.live or run.live
                view.last_window += run.last_window_readings
                view.current_window += run.current_window_readings
                view.stored += run.stored
                view.stale += run.stale
                view.duplicates += run.duplicates
                view.last_received_us = max(
                    view.last_received_us, from_timestamp(run.last_received_at)
                )
        return sorted(merged.values(), key=lambda s: (s.live, s.sensor_id, s.boot_id))

    def sensor_rates(self) -> dict[str, float | None]:
        """Readings per second of each sensor (its live runs, last window); None: not seen.

        Expected sensors first, in order, then the others by id.
        """
        period = self.period_us
        rates: dict[str, float | None] = dict.fromkeys(self.sensor_ids)
        for view in sorted(self.sensors(), key=lambda s: s.sensor_id):
            rate = view.last_window * 1e6 / period if period and view.live else 0.0
            rates[view.sensor_id] = (rates.get(view.sensor_id) or 0.0) + rate
        return rates

    def cadence(self) -> float | None:
        """Seconds between decisions, over the last few issued (None: fewer than two)."""
        times = list(self.issue_times)
        if len(times) < 2:
            return None
        return (times[-1] - times[0]) / (len(times) - 1) / 1e6

    def last_command(self) -> HistoryEntry | None:
        return self.commands[max(self.commands)] if self.commands else None
