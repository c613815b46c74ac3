"""History entries as a table for people and as plain records for ``--json``.

Pure formatting: it takes ``HistoryEntry`` messages and returns strings and
dicts; fetching them is the caller's business (``workcell history``). The
writers take a page at a time, so a history is printed as it arrives and never
held whole.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from typing import Any

from workcell.status import status_name
from workcell.timeconv import from_timestamp, to_datetime, to_iso
from workcell.v1 import history_pb2
from workcell.v1.history_pb2 import HistoryEntry, WindowSummary

__all__ = [
    "STREAM_MIN_WIDTHS",
    "JsonArrayWriter",
    "TableWriter",
    "entry_record",
    "format_difference",
    "format_p_value",
    "format_table",
    "format_time",
]

PENDING = "pending"
_EMPTY = "no commands in that time range"
NO_VALUE = "-"


def format_time(us: int, *, same_day_as: int | None = None) -> str:
    """ISO 8601 UTC, milliseconds only when not on a whole second.

    With ``same_day_as``, a time on the same UTC date drops the date, so a row
    shows the date once (in its window start) and the rest stays short.
    """
    moment = to_datetime(us)
    fraction = f".{moment.microsecond // 1000:03d}" if moment.microsecond else ""
    clock = moment.strftime("%H:%M:%S") + fraction + "Z"
    if same_day_as is not None and to_datetime(same_day_as).date() == moment.date():
        return clock
    return moment.strftime("%Y-%m-%dT") + clock


def format_p_value(entry: HistoryEntry) -> str:
    """The p-value, or ``-`` when no test was possible."""
    if not entry.HasField("p_value"):
        return NO_VALUE
    p = entry.p_value
    # Tiny p-values would all read 0.0000; scientific notation keeps them apart.
    return f"{p:.1e}" if 0 < p < 1e-4 else f"{p:.4f}"


def format_difference(entry: HistoryEntry) -> str:
    """The difference of the means with its interval as ``+2.25 ±0.75``; ``-`` when unset.

    Welch's interval is symmetric about the difference, so its half-width is all of it.
    """
    if not entry.HasField("difference"):
        return NO_VALUE
    text = f"{entry.difference:+.2f}"
    if entry.HasField("difference_ci_low") and entry.HasField("difference_ci_high"):
        text += f" ±{(entry.difference_ci_high - entry.difference_ci_low) / 2:.2f}"
    return text


def _changed(entry: HistoryEntry) -> str:
    """``yes``/``no``, and why not when a guard held a significant change back."""
    if entry.changed:
        return "yes"
    if entry.outcome == history_pb2.DECISION_OUTCOME_UNCONFIRMED:
        confirm = entry.policy.confirm if entry.policy.HasField("confirm") else "?"
        return f"no (unconfirmed {entry.streak_length}/{confirm})"
    if entry.outcome == history_pb2.DECISION_OUTCOME_BELOW_MIN_EFFECT:
        return "no (< min effect)"
    return "no"


def _outcome(entry: HistoryEntry) -> str | None:
    """``significant``, ``unconfirmed``, …; None for a value this client does not know."""
    if entry.outcome == history_pb2.DECISION_OUTCOME_UNSPECIFIED:
        return None
    try:
        name = history_pb2.DecisionOutcome.Name(entry.outcome)
    except ValueError:
        return None
    return name.removeprefix("DECISION_OUTCOME_").lower()


def _status(entry: HistoryEntry) -> str:
    return _status_text(entry.status)


def _status_text(status: int) -> str:
    try:
        return status_name(status)
    except ValueError:
        return f"unknown({status})"


def _ids(entry: HistoryEntry) -> str:
    last = entry.last_command_id or entry.command_id
    return str(entry.command_id) if last == entry.command_id else f"{entry.command_id}-{last}"


def _row(entry: HistoryEntry, *, merged: bool) -> list[str]:
    start = from_timestamp(entry.from_datetime)
    window = (
        f"{format_time(start)} → "
        f"{format_time(from_timestamp(entry.to_datetime), same_day_as=start)}"
    )
    acknowledged = (
        format_time(from_timestamp(entry.acknowledged_at), same_day_as=start)
        if entry.HasField("acknowledged_at")
        else PENDING
    )
    row = [
        _ids(entry) if merged else str(entry.command_id),
        window,
        _status(entry),
        _changed(entry),
        format_p_value(entry),
        format_difference(entry),
        str(entry.window.count),
        f"{entry.window.mean:.2f}" if entry.window.count else NO_VALUE,
        f"{entry.window.std_dev:.2f}" if entry.window.count > 1 else NO_VALUE,
        format_time(from_timestamp(entry.issued_at), same_day_as=start),
        acknowledged,
    ]
    if merged:
        row.insert(1, str(entry.command_count))
    return row


_HEADER = [
    "id", "window", "status", "changed", "p-value", "difference", "n", "mean", "std", "issued",
    "acked",
]  # fmt: skip
# Numbers read best right-aligned.
_RIGHT = {"p-value", "difference", "n", "mean", "std", "commands"}
# Room for ids that grow while a long history streams by (up to 9,999,999:
# 1.5 years at 5 s), so later pages line up with the first.
STREAM_MIN_WIDTHS = {"id": 7, "ids": 15}


class TableWriter:
    """The table a page at a time, for a history too long to hold.

    The header goes out with the first page, and the column widths are fixed
    from it (and ``min_widths``): a later cell wider than its column (a window
    across midnight, with both dates) shifts the rest of its row rather than
    the whole table.
    """

    def __init__(self, *, merged: bool = False, min_widths: dict[str, int] | None = None) -> None:
        self._merged = merged
        self._header = list(_HEADER)
        if merged:
            self._header[0] = "ids"
            self._header.insert(1, "commands")
        self._min_widths = min_widths or {}
        self._widths: list[int] | None = None

    def page(self, entries: Sequence[HistoryEntry]) -> str:
        """One page's lines, oldest first, each ending in a newline; the header before the first."""
        return "".join(line + "\n" for line in self.page_lines(entries))

    def page_lines(self, entries: Sequence[HistoryEntry]) -> list[str]:
        """:meth:`page` as a list of lines without newlines."""
        if not entries:
            return []
        rows = [_row(entry, merged=self._merged) for entry in entries]
        lines = []
        if self._widths is None:
            self._widths = [
                max(
                    len(name),
                    self._min_widths.get(name, 0),
                    *(len(row[i]) for row in rows),
                )
                for i, name in enumerate(self._header)
            ]
            lines += [self._line(self._header), "  ".join("-" * w for w in self._widths)]
        return lines + [self._line(row) for row in rows]

    def finish(self) -> str:
        """A one-line note when no page had an entry; nothing otherwise."""
        return "" if self._widths is not None else _EMPTY + "\n"

    def _line(self, cells: list[str]) -> str:
        assert self._widths is not None
        padded = (
            cell.rjust(width) if name in _RIGHT else cell.ljust(width)
            for cell, width, name in zip(cells, self._widths, self._header, strict=True)
        )
        return "  ".join(padded).rstrip()


def format_table(entries: Sequence[HistoryEntry], *, merged: bool = False) -> str:
    """A fixed-width table, one line per entry, oldest first, with a header.

    ``merged`` adds the run's command count and shows ids as ``first-last``.
    An empty sequence gives a one-line note instead of an empty table.
    """
    if not entries:
        return _EMPTY
    return "\n".join(TableWriter(merged=merged).page_lines(entries))


class JsonArrayWriter:
    """``--json``'s array a page at a time, laid out as ``json.dump(indent=2)`` would.

    A reader sees ``[`` and the entries as they come; the closing ``]`` only
    comes with :meth:`finish`, so output cut short by an error is not valid JSON.
    """

    def __init__(self) -> None:
        self._started = False

    def page(self, entries: Sequence[HistoryEntry]) -> str:
        """The text for one page's entries."""
        if not entries:
            return ""
        items = [
            textwrap.indent(json.dumps(entry_record(entry), indent=2), "  ") for entry in entries
        ]
        text = ("[\n" if not self._started else ",\n") + ",\n".join(items)
        self._started = True
        return text

    def finish(self) -> str:
        """The array's end (``[]`` when it had no entry), with a final newline."""
        return "\n]\n" if self._started else "[]\n"


def _summary(window: WindowSummary) -> dict[str, Any]:
    return {"count": window.count, "mean": window.mean, "std_dev": window.std_dev}


def _optional(entry: HistoryEntry | history_pb2.DecisionPolicy, field: str) -> Any:
    return getattr(entry, field) if entry.HasField(field) else None


def entry_record(entry: HistoryEntry) -> dict[str, Any]:
    """A JSON-ready dict: ISO times, ``"up"``/``"down"``, ``None`` for unset values."""
    policy = entry.policy
    return {
        "command_id": entry.command_id,
        "last_command_id": entry.last_command_id or entry.command_id,
        "command_count": entry.command_count,
        "from_datetime": to_iso(from_timestamp(entry.from_datetime)),
        "to_datetime": to_iso(from_timestamp(entry.to_datetime)),
        "status": _status(entry),
        "changed": entry.changed,
        "p_value": entry.p_value if entry.HasField("p_value") else None,
        "window": _summary(entry.window),
        "previous_window": _summary(entry.previous_window),
        "issued_at": to_iso(from_timestamp(entry.issued_at)),
        "acknowledged_at": (
            to_iso(from_timestamp(entry.acknowledged_at))
            if entry.HasField("acknowledged_at")
            else None
        ),
        "outcome": _outcome(entry),
        "difference": _optional(entry, "difference"),
        "difference_ci_low": _optional(entry, "difference_ci_low"),
        "difference_ci_high": _optional(entry, "difference_ci_high"),
        "effect_size": _optional(entry, "effect_size"),
        "policy": {
            "alpha": policy.alpha,
            "min_effect": _optional(policy, "min_effect"),
            "confirm": _optional(policy, "confirm"),
        },
        "streak": (
            {"status": _status_text(entry.streak_status), "length": entry.streak_length}
            if entry.streak_length
            else None
        ),
        # Exact decimal integers, as strings: JSON numbers are doubles to most readers.
        "window_total": entry.window.total or None,
        "window_total_sq": entry.window.total_sq or None,
    }
