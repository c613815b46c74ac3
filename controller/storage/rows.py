"""A command as a ``commands`` row and back: shared by the reads and both write backends."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.decision.effect import Effect
from controller.decision.policy import Streak
from controller.decision.rule import WindowSummary
from controller.records import CommandRecord

__all__ = ["command_from_row", "command_values"]


def command_from_row(m: Mapping[Any, Any]) -> CommandRecord:
    """A CommandRecord from a ``commands`` row (as a mapping of its columns)."""
    return CommandRecord(
        id=m["id"],
        status=m["status"],
        window_start=m["window_start"],
        window_end=m["window_end"],
        issued_at=m["issued_at"],
        acknowledged_at=m["acknowledged_at"],
        outcome=m["outcome"],
        changed=bool(m["changed"]),
        p_value=m["p_value"],
        alpha=m["alpha"],
        window=WindowSummary(m["window_count"], m["window_mean"], m["window_std"]),
        previous=WindowSummary(m["previous_count"], m["previous_mean"], m["previous_std"]),
        epoch=m["epoch"],
        effect=Effect(m["difference"], m["ci_low"], m["ci_high"], m["effect_size"]),
        min_effect=m["min_effect"],
        confirm=m["confirm"],
        # NULL length: recorded before revision 0006, the streak is unknown.
        streak=(
            None
            if m["streak_length"] is None
            else Streak(m["streak_direction"], int(m["streak_length"]))
        ),
        window_sums=(
            None
            if m["window_total"] is None or m["window_total_sq"] is None
            else (int(m["window_total"]), int(m["window_total_sq"]))
        ),
    )


def command_values(record: CommandRecord) -> dict[str, Any]:
    """The ``commands`` row for a CommandRecord."""
    return {
        "id": record.id,
        "status": record.status,
        "window_start": record.window_start,
        "window_end": record.window_end,
        "issued_at": record.issued_at,
        "acknowledged_at": record.acknowledged_at,
        "outcome": record.outcome,
        "changed": record.changed,
        "p_value": record.p_value,
        "alpha": record.alpha,
        "window_count": record.window.count,
        "window_mean": record.window.mean,
        "window_std": record.window.std,
        "previous_count": record.previous.count,
        "previous_mean": record.previous.mean,
        "previous_std": record.previous.std,
        "epoch": record.epoch,
        "difference": record.effect.difference,
        "ci_low": record.effect.ci_low,
        "ci_high": record.effect.ci_high,
        "effect_size": record.effect.effect_size,
        "min_effect": record.min_effect,
        "confirm": record.confirm,
        "streak_direction": None if record.streak is None else record.streak.direction,
        "streak_length": None if record.streak is None else record.streak.length,
        "window_total": None if record.window_sums is None else str(record.window_sums[0]),
        "window_total_sq": None if record.window_sums is None else str(record.window_sums[1]),
    }
