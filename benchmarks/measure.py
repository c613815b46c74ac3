"""A measurement window: CPU of each process and durable counts at both ends of it.

Shared by every scenario that runs processes. A process counts if it can be sampled
(:class:`Sampled`: a harness child, or the PostgreSQL server with its backends); a
process that dies inside the window makes the window meaningless, so it raises.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from benchmarks.children import ChildError
from benchmarks.procstat import Usage
from benchmarks.report import Measured

__all__ = ["Sampled", "Window", "fresh_dir", "measure"]


class Sampled(Protocol):
    """Something the window samples: its CPU and memory, whether it still runs, its log."""

    @property
    def process(self) -> subprocess.Popen[Any]:
        """The process started (its exit ends the measurement)."""
        ...

    def usage(self) -> Usage:
        """A sample now."""
        ...

    def log_text(self) -> str:
        """What it logged, for the error when it died."""
        ...


@dataclass(frozen=True, slots=True)
class Window:
    """One measurement: its length, the durable count over it, and samples at both ends.

    ``tallies`` are further counts taken next to the durable count at both ends (for
    example the readings acknowledged to each node's generators), as differences.
    """

    seconds: float
    count: int
    before: dict[str, Usage]
    after: dict[str, Usage]
    tallies: dict[str, int] = field(default_factory=dict)

    def measured(self, run: str, name: str, *, label: str = "", note: str = "") -> Measured:
        """The row of process ``name``, its CPU per reading taken over the whole count."""
        cpu = self.cpu(name)
        return Measured(
            run=run,
            process=label or name,
            readings_per_s=self.count / self.seconds,
            cpu_percent=100.0 * cpu / self.seconds,
            cpu_s_per_million=cpu / self.count * 1e6 if self.count else None,
            peak_rss_mib=self.after[name].hwm_kib / 1024,
            note=note,
        )

    def cpu(self, name: str) -> float:
        """CPU seconds process ``name`` used in the window."""
        return self.after[name].total_cpu - self.before[name].total_cpu


def _no_tallies() -> dict[str, int]:
    return {}


def measure(
    processes: Mapping[str, Sampled],
    count: Callable[[], int],
    seconds: float,
    *,
    tallies: Callable[[], dict[str, int]] = _no_tallies,
) -> Window:
    """CPU and the durable count (and ``tallies``) at both ends of a window of ``seconds``."""
    before = {name: process.usage() for name, process in processes.items()}
    first = count()
    first_tallies = tallies()
    started = time.monotonic()
    time.sleep(seconds)
    after = {name: process.usage() for name, process in processes.items()}
    last = count()
    last_tallies = tallies()
    for name, process in processes.items():
        if process.process.poll() is not None:
            # A process that died mid-window makes every figure of the run meaningless.
            tail = "\n".join(process.log_text().splitlines()[-10:])
            raise ChildError(f"{name} exited during the measurement window:\n{tail}")
    differences = {key: last_tallies[key] - first_tallies[key] for key in last_tallies}
    return Window(time.monotonic() - started, last - first, before, after, differences)


@contextlib.contextmanager
def fresh_dir(path: Path) -> Iterator[Path]:
    """An empty ``path`` for one run; its databases are deleted afterwards, its logs kept."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        # Databases of saturation runs reach gigabytes: keep only the logs.
        for item in path.glob("*.db*"):
            item.unlink()
