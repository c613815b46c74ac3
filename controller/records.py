"""Plain values passed between the controller's parts (no I/O)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from controller.decision.effect import NO_EFFECT, Effect
from controller.decision.policy import Streak
from controller.decision.rule import WindowStats, WindowSummary
from controller.errors import InvalidReading, StorageError

__all__ = [
    "BOOT_ID",
    "PAYLOAD",
    "RECEIVED_AT",
    "SENSOR_ID",
    "SEQ",
    "TIMESTAMP",
    "BatchResult",
    "CloseWindows",
    "ClosedWindows",
    "CommandRecord",
    "LeadershipRecord",
    "ReadingRow",
    "StreamTally",
]

# (sensor_id, boot_id, seq, payload, timestamp_us, received_at_us): a tuple,
# not an object, because ingest builds thousands of them per second. Code
# that reads one by position names the position with these constants.
ReadingRow = tuple[str, str, int, int, int, int]
SENSOR_ID: Final = 0
BOOT_ID: Final = 1
SEQ: Final = 2
PAYLOAD: Final = 3
TIMESTAMP: Final = 4
RECEIVED_AT: Final = 5


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What became of one batch of readings once committed."""

    stored: int = 0
    duplicates: int = 0
    stale: int = 0
    conflicts: int = 0
    """Duplicates whose stored payload or timestamp differs (included in duplicates)."""

    def __add__(self, other: BatchResult) -> BatchResult:
        return BatchResult(
            self.stored + other.stored,
            self.duplicates + other.duplicates,
            self.stale + other.stale,
            self.conflicts + other.conflicts,
        )


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """One command and the decision record it was issued from."""

    id: int
    status: str
    window_start: int
    window_end: int
    issued_at: int
    outcome: str
    changed: bool
    p_value: float | None
    alpha: float
    window: WindowSummary
    previous: WindowSummary
    acknowledged_at: int | None = None
    epoch: int = 0
    """The leadership term of the node that issued it (0: before terms existed)."""
    effect: Effect = NO_EFFECT
    """The difference of the means, its interval at 1 - alpha, Hedges' g (None: undefined,
    or recorded before revision 0006)."""
    min_effect: float | None = None
    """The guards of the policy that decided it, with ``alpha`` (0 and 1: off, the plain
    rule); None: recorded before revision 0006."""
    confirm: int | None = None
    streak: Streak | None = None
    """The streak after this decision; None: recorded before revision 0006 (unknown)."""
    window_sums: tuple[int, int] | None = None
    """The window's exact sum and sum of squares of payloads, so that a decision can be
    recomputed exactly; None: recorded before revision 0006."""


class StreamTally:
    """What became of one stream's readings, filled in by the writer as its groups commit."""

    __slots__ = ("conflicts", "duplicates", "failure", "rejected", "stale", "stored")

    def __init__(self) -> None:
        self.stored = 0
        self.duplicates = 0
        self.stale = 0
        self.conflicts = 0
        # Set when a group holding some of this stream's readings failed:
        # then the stream must not be acknowledged.
        self.failure: StorageError | None = None
        # Set when the database refused a value of one of this stream's
        # readings (a data error validation let through): that reading and
        # the rest of the stream are not stored, the stream fails with
        # INVALID_ARGUMENT, and the other streams of the group commit.
        self.rejected: InvalidReading | None = None

    def result(self) -> BatchResult:
        return BatchResult(self.stored, self.duplicates, self.stale, self.conflicts)


@dataclass(frozen=True, slots=True)
class CloseWindows:
    """Close every window before ``until_us``, deciding the last one of them.

    ``decide`` turns the summed statistics of window [``window_start``,
    ``until_us``) into its command (id ``next_id``); None closes without a
    command (windows skipped when a leader takes over late).
    """

    epoch: int
    until_us: int
    window_start: int
    next_id: int
    decide: Callable[[WindowStats], CommandRecord] | None


@dataclass(frozen=True, slots=True)
class ClosedWindows:
    """What a close did: the command recorded (None for a skip) and the window's statistics."""

    record: CommandRecord | None
    stats: WindowStats


@dataclass(frozen=True, slots=True)
class LeadershipRecord:
    """The ``leadership`` row as the database sees it now."""

    epoch: int
    node: str | None
    address: str | None
    expires_at: int | None
    """When the lease expires (µs, the database's clock); None on SQLite or when released."""
    held: bool
    """Whether a node holds the term now (its lease has not expired, or SQLite's sole node)."""
