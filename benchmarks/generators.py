"""The load generator processes (``benchmarks.loadgen``) of a run: start, count, stop."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from benchmarks.children import Child, Children

__all__ = ["Load", "acked", "acked_by", "start_generators", "stop_generators"]


@dataclass(frozen=True, slots=True)
class Load:
    """What each flooding stream sends: readings per message, messages per stream."""

    batch: int
    stream_messages: int

    def args(self) -> list[str]:
        """The generator's flags for it."""
        return ["--batch", str(self.batch), "--stream-messages", str(self.stream_messages)]


def start_generators(
    kids: Children,
    ports: Sequence[int],
    *,
    processes: int,
    senders: int,
    extra: Sequence[str],
) -> list[Child]:
    """``processes`` generators of ``senders`` each; generator i targets ``ports[i % len]``."""
    generators = []
    for index in range(processes):
        generator = kids.start(
            f"loadgen-{index}",
            "benchmarks.loadgen",
            [
                "--target",
                f"127.0.0.1:{ports[index % len(ports)]}",
                "--senders",
                str(senders),
                "--prefix",
                f"gen{index}",
                *extra,
            ],
            pipes=True,
        )
        generators.append(generator)
    for generator in generators:
        generator.wait_for_line("generating to")
    return generators


def _acked_now(generator: Child) -> int:
    fields = dict(item.split("=") for item in generator.request("mark").split())
    return int(fields["acked"])


def acked(generators: Sequence[Child]) -> Callable[[], int]:
    """A count: readings the servers said they stored, over all ``generators``."""

    def count() -> int:
        return sum(_acked_now(generator) for generator in generators)

    return count


def acked_by(groups: Mapping[str, Sequence[Child]]) -> Callable[[], dict[str, int]]:
    """Tallies: readings acknowledged to each group of generators (one group per server)."""

    def tallies() -> dict[str, int]:
        return {
            name: sum(_acked_now(generator) for generator in generators)
            for name, generators in groups.items()
        }

    return tallies


def stop_generators(generators: Sequence[Child]) -> None:
    """Ask each generator to stop (it waits for its streams' answers), then end it."""
    for generator in generators:
        with contextlib.suppress(Exception):
            generator.request("stop", timeout=40)
        generator.stop(timeout=20)
