"""Plain values passed between the controller's parts (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

from controller.decision import WindowSummary

__all__ = ["BatchResult", "CommandRecord", "ReadingRow"]

# (sensor_id, boot_id, seq, payload, timestamp_us, received_at_us): a tuple,
# not an object, because ingest builds thousands of them per second.
ReadingRow = tuple[str, str, int, int, int, int]


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
