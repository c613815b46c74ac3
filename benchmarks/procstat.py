"""CPU time and memory of a process, read from ``/proc`` (Linux).

The parsing functions are pure (they take the file's text), so they are tested without a
process; :func:`read_usage` does the reading.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["CLOCK_TICKS", "Usage", "parse_stat_cpu", "parse_status_memory", "read_usage"]

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
