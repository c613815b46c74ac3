"""``workcell replay``'s text and ``--json`` output (pure: replayed windows in, strings out).

Both are written a page at a time, as the windows are replayed, so a long range is printed as
it arrives and never held whole; the summary (:class:`~workcell.replay_data.ReplayTally`)
comes last.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Sequence
from typing import Any

from controller.decision.policy import PolicyOutcome
from controller.decision.replay import PolicyOverride, Replayed
from workcell.history_table import format_time
from workcell.replay_data import ReplayTally

__all__ = ["JsonReplayWriter", "TableReplayWriter", "describe_override", "summary_lines"]

NO_VALUE = "-"
_HEADER = ("id", "window", "n", "mean", "p-value", "difference", "issued", "replayed", "")
_RIGHT = {"id", "n", "mean", "p-value", "difference"}
# Fixed widths (a window within one day; a wider cell shifts the rest of its row only).
_WIDTHS = (5, 32, 6, 9, 8, 10, 14, 24, 7)


def describe_override(override: PolicyOverride) -> str:
    """``alpha 0.05, min effect 4, confirm as recorded``: the policy a replay applies."""
    parts = []
    for name, value in (
        ("alpha", override.alpha),
        ("min effect", override.min_effect),
        ("confirm", override.confirm),
    ):
        parts.append(f"{name} as recorded" if value is None else f"{name} {value:g}")
    return ", ".join(parts)


def _outcome(outcome: PolicyOutcome, changed: bool, streak: int, confirm: int) -> str:
    if changed:
        return "changed"
    if outcome is PolicyOutcome.UNCONFIRMED:
        return f"unconfirmed {streak}/{confirm}"
    if outcome is PolicyOutcome.BELOW_MIN_EFFECT:
        return "< min effect"
    return str(outcome).replace("_", " ")


def _issued(replayed: Replayed) -> str:
    recorded = replayed.recorded
    # The recorded outcome is not needed to compare: the status and the change are.
    return f"{recorded.status} (changed)" if recorded.changed else recorded.status


def _replayed(replayed: Replayed) -> str:
    verdict = replayed.verdict
    why = _outcome(verdict.outcome, verdict.changed, verdict.streak.length, replayed.policy.confirm)
    return f"{verdict.status} ({why})"


def _number(value: float | None, spec: str) -> str:
    return NO_VALUE if value is None or not math.isfinite(value) else format(value, spec)


def _p_value(p: float | None) -> str:
    if p is None:
        return NO_VALUE
    return f"{p:.1e}" if 0 < p < 1e-4 else f"{p:.4f}"


def _row(replayed: Replayed) -> list[str]:
    recorded, decision = replayed.recorded, replayed.decision
    window = (
        f"{format_time(recorded.window_start)} → "
        f"{format_time(recorded.window_end, same_day_as=recorded.window_start)}"
    )
    marks = []
    if replayed.differs:
        marks.append("differs")
    if not recorded.exact:
        marks.append("~")  # decided from float summaries (before revision 0006)
    return [
        str(recorded.command_id),
        window,
        str(decision.current.count),
        _number(decision.current.mean if decision.current.count else None, ".2f"),
        _p_value(decision.p_value),
        _number(decision.effect.difference, "+.2f"),
        _issued(replayed),
        _replayed(replayed),
        " ".join(marks),
    ]


def _line(cells: Sequence[str]) -> str:
    padded = (
        cell.rjust(width) if name in _RIGHT else cell.ljust(width)
        for cell, width, name in zip(cells, _WIDTHS, _HEADER, strict=True)
    )
    return "  ".join(padded).rstrip()


class TableReplayWriter:
    """Issued and replayed status side by side, one line per window, the header first."""

    def __init__(self, override: PolicyOverride) -> None:
        self._override = override
        self._started = False

    def page(self, windows: Sequence[Replayed]) -> str:
        if not windows:
            return ""
        lines = []
        if not self._started:
            lines += [_line(_HEADER), "  ".join("-" * width for width in _WIDTHS).rstrip()]
            self._started = True
        lines += [_line(_row(replayed)) for replayed in windows]
        return "".join(line + "\n" for line in lines)

    def finish(self, tally: ReplayTally) -> str:
        return "\n" + "".join(line + "\n" for line in summary_lines(tally, self._override))


def _ranges(tally: ReplayTally, limit: int = 20) -> str:
    shown = [
        str(first) if first == last else f"{first}-{last}"
        for first, last in tally.differing[:limit]
    ]
    more = len(tally.differing) - limit
    return ", ".join(shown) + (f", … ({more} more ranges)" if more > 0 else "")


def summary_lines(tally: ReplayTally, override: PolicyOverride) -> list[str]:
    """What the replay found, in a few lines."""
    assert tally.first_start is not None
    assert tally.last_end is not None
    lines = [
        f"replayed {tally.windows} windows, {format_time(tally.first_start)} → "
        f"{format_time(tally.last_end, same_day_as=tally.first_start)}, under "
        f"{describe_override(override)}",
        f"status changes: issued {tally.issued_changes}, replayed {tally.replayed_changes}",
    ]
    if tally.differing:
        lines.append(f"windows that differ: {tally.differing_windows} (commands {_ranges(tally)})")
    else:
        lines.append("windows that differ: none")
    if tally.inexact:
        lines.append(
            f"~ {tally.inexact} windows recorded before revision 0006 have no exact sums: "
            "replayed from their n / mean / std, which agrees with the test up to float rounding"
        )
    return lines


def _window_record(replayed: Replayed) -> dict[str, Any]:
    recorded, decision, verdict = replayed.recorded, replayed.decision, replayed.verdict
    return {
        "command_id": recorded.command_id,
        "window_start": format_time(recorded.window_start),
        "window_end": format_time(recorded.window_end),
        "count": decision.current.count,
        "mean": decision.current.mean if decision.current.count else None,
        "p_value": decision.p_value,
        "difference": decision.effect.difference,
        "exact": recorded.exact,
        "issued": {"status": recorded.status, "changed": recorded.changed},
        "replayed": {
            "status": verdict.status,
            "changed": verdict.changed,
            "outcome": str(verdict.outcome),
            "streak_status": verdict.streak.direction,
            "streak_length": verdict.streak.length,
            "policy": {
                "alpha": replayed.policy.alpha,
                "min_effect": replayed.policy.min_effect,
                "confirm": replayed.policy.confirm,
            },
        },
        "differs": replayed.differs,
    }


class JsonReplayWriter:
    """``--json``: one object, ``{"policy", "windows": [...], "summary"}``, streamed.

    The windows appear as they are replayed; the object closes with the summary only at
    :meth:`finish`, so output cut short by an error is not valid JSON.
    """

    def __init__(self, override: PolicyOverride, initial_status: str | None) -> None:
        self._started = False
        self._head = {
            "policy": {
                "alpha": override.alpha,
                "min_effect": override.min_effect,
                "confirm": override.confirm,
            },
            "initial_status": initial_status,
        }

    def _open(self) -> str:
        head = json.dumps(self._head, indent=2)
        return head[: head.rindex("}")].rstrip() + ',\n  "windows": ['

    def page(self, windows: Sequence[Replayed]) -> str:
        if not windows:
            return ""
        items = [textwrap.indent(json.dumps(_window_record(r), indent=2), "    ") for r in windows]
        text = ("\n" if not self._started else ",\n") + ",\n".join(items)
        if not self._started:
            text = self._open() + text
            self._started = True
        return text

    def finish(self, tally: ReplayTally) -> str:
        summary = {
            "windows": tally.windows,
            "issued_changes": tally.issued_changes,
            "replayed_changes": tally.replayed_changes,
            "differing_windows": tally.differing_windows,
            "differing": [list(pair) for pair in tally.differing],
            "inexact_windows": tally.inexact,
        }
        body = textwrap.indent(json.dumps(summary, indent=2), "  ").lstrip()
        start = self._open() if not self._started else "\n  "
        return f'{start}],\n  "summary": {body}\n}}\n'
