"""CPU time and memory of a process, read from ``/proc`` (Linux).

The parsing functions are pure (they take the file's text), so they are tested without a
process; :func:`read_usage` (one process) and :func:`read_tree_cpu` (a process and all its
descendants) do the reading.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "CLOCK_TICKS",
    "Usage",
    "descendants",
    "parse_stat_cpu",
    "parse_stat_parent",
    "parse_status_memory",
    "read_tree_cpu",
    "read_usage",
]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Usage:
    """One sample: CPU seconds (own, and of waited-for children) and memory in KiB."""

    cpu: float
    children_cpu: float
    rss_kib: int
    hwm_kib: int

    @property
    def total_cpu(self) -> float:
        """Own CPU plus that of children the process has waited for."""
        return self.cpu + self.children_cpu


def parse_stat_cpu(text: str, ticks: int = CLOCK_TICKS) -> tuple[float, float]:
    """(utime + stime, cutime + cstime) in seconds from a ``/proc/<pid>/stat`` line.

    The command name (field 2) is in parentheses and may itself hold spaces or parentheses,
    so fields are counted from the last ``)``.
    """
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime, stime, cutime, cstime are fields 14-17.
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return (utime + stime) / ticks, (cutime + cstime) / ticks


def parse_stat_parent(text: str) -> int:
    """The parent's pid (field 4) from a ``/proc/<pid>/stat`` line."""
    return int(text[text.rindex(")") + 2 :].split()[1])


def descendants(parents: Mapping[int, int], root: int) -> set[int]:
    """Every pid below ``root`` in the tree that ``parents`` (pid -> parent pid) describes."""
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found: set[int] = set()
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def parse_status_memory(text: str) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB from ``/proc/<pid>/status``; 0 for a missing line (a zombie)."""
    values = {"VmRSS": 0, "VmHWM": 0}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in values:
            values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


def read_usage(pid: int) -> Usage:
    """Sample process ``pid`` now; raises OSError once it is gone."""
    with open(f"/proc/{pid}/stat") as stat:
        cpu, children_cpu = parse_stat_cpu(stat.read())
    with open(f"/proc/{pid}/status") as status:
        rss, hwm = parse_status_memory(status.read())
    return Usage(cpu, children_cpu, rss, hwm)


def _stat_lines() -> dict[int, str]:
    lines = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            # A process may end between the listing and the read: it is simply not there.
            with contextlib.suppress(OSError), open(f"/proc/{entry.name}/stat") as stat:
                lines[int(entry.name)] = stat.read()
    return lines


def read_tree_cpu(pid: int) -> float:
    """CPU seconds of process ``pid`` and every process below it, now.

    For a server of many processes (PostgreSQL: a postmaster, a backend per connection and
    background workers). Each live process counts its own time and that of the children it
    has reaped, so a backend that exits moves from the sum of the live ones into its
    parent's reaped time and is counted once either way. Raises OSError once ``pid`` is gone.
    """
    lines = _stat_lines()
    if pid not in lines:
        raise OSError(f"no process {pid}")
    parents = {child: parse_stat_parent(text) for child, text in lines.items()}
    total = 0.0
    for member in {pid} | descendants(parents, pid):
        own, reaped = parse_stat_cpu(lines[member])
        total += own + reaped
    return total
