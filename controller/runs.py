"""Commands as History entries, and runs of equal status merged (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from google.protobuf.timestamp_pb2 import Timestamp

from controller.decision import WindowSummary
from controller.records import CommandRecord
from workcell.timeconv import to_timestamp
from workcell.v1 import command_pb2, history_pb2

__all__ = ["Run", "RunGrouper", "entry_for_run"]


@dataclass(slots=True)
class Run:
    """Consecutive commands of one status; the first decided the run."""

    commands: list[CommandRecord] = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.commands[0].status

    @property
    def last_id(self) -> int:
        return self.commands[-1].id


class RunGrouper:
    """Groups commands (fed oldest first) into runs, or one run per command.

    ``feed`` returns the runs that are complete; a run is complete once a
    command of another status follows it (or, without merging, at once).
    ``finish`` returns the run still open at the end of the data.
    """

    def __init__(self, *, merge: bool) -> None:
        self._merge = merge
        self._open: Run | None = None

    def feed(self, records: Iterable[CommandRecord]) -> list[Run]:
        done: list[Run] = []
        for record in records:
            if not self._merge:
                done.append(Run([record]))
                continue
            if self._open is not None and self._open.status != record.status:
                done.append(self._open)
                self._open = None
            if self._open is None:
                self._open = Run([])
            self._open.commands.append(record)
        return done

    def finish(self) -> list[Run]:
        run, self._open = self._open, None
        return [] if run is None else [run]


def entry_for_run(run: Run) -> history_pb2.HistoryEntry:
    """The History entry of a run (a single command is a run of one)."""
    first, last = run.commands[0], run.commands[-1]
    # Built in one constructor call: a page holds up to 1000 of these.
    entry = history_pb2.HistoryEntry(
        from_datetime=to_timestamp(first.window_start),
        to_datetime=to_timestamp(last.window_end),
        status=_STATUS[first.status],
        command_id=first.id,
        issued_at=to_timestamp(first.issued_at),
        acknowledged_at=_acknowledged(run),
        window=_summary(first.window),
        previous_window=_summary(first.previous),
        p_value=first.p_value,
        changed=first.changed,
        command_count=len(run.commands),
        last_command_id=last.id,
    )
    return entry


_STATUS = {"up": command_pb2.STATUS_UP, "down": command_pb2.STATUS_DOWN}


def _acknowledged(run: Run) -> Timestamp | None:
    """The last acknowledgement, once every command of the run has one."""
    last = run.commands[-1].acknowledged_at
    if last is None or any(c.acknowledged_at is None for c in run.commands):
        return None
    return to_timestamp(last)


def _summary(summary: WindowSummary) -> history_pb2.WindowSummary:
    return history_pb2.WindowSummary(count=summary.count, mean=summary.mean, std_dev=summary.std)
