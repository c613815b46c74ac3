"""Commands as History entries, and runs of equal status merged (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from controller.records import CommandRecord
from workcell.status import status_from_name
from workcell.timeconv import to_timestamp
from workcell.v1 import history_pb2

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
    entry = history_pb2.HistoryEntry(
        from_datetime=to_timestamp(first.window_start),
        to_datetime=to_timestamp(last.window_end),
        status=status_from_name(first.status),  # type: ignore[arg-type]
        command_id=first.id,
        issued_at=to_timestamp(first.issued_at),
        window=_summary(first.window),
        previous_window=_summary(first.previous),
        changed=first.changed,
        command_count=len(run.commands),
        last_command_id=last.id,
    )
    if all(c.acknowledged_at is not None for c in run.commands):
        assert last.acknowledged_at is not None
        entry.acknowledged_at.CopyFrom(to_timestamp(last.acknowledged_at))
    if first.p_value is not None:
        entry.p_value = first.p_value
    return entry


def _summary(summary: object) -> history_pb2.WindowSummary:
    count, mean, std = (getattr(summary, name) for name in ("count", "mean", "std"))
    return history_pb2.WindowSummary(count=count, mean=mean, std_dev=std)
