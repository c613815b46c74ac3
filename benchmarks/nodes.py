"""(f) of issue 12: saturation at one reading per message, N controller nodes on one PostgreSQL.

For each N, a fresh database on one throwaway PostgreSQL server (PostgreSQL's default
durability), one manipulator, N controller processes on it (one leads, all ingest), and the
same flooding generators as (b): :data:`GENERATORS` processes, generator i sending to node
i mod N, so every node gets as many. The set of generators is the same for every N, so
the node count is the only thing that changes.

Measured over the window: durable readings/s (rows in ``readings``, counted at both ends),
each node's CPU and the readings its generators were told it stored (CPU per reading per
node), PostgreSQL's CPU (its whole process tree: autovacuum and checkpoints included), its
commits, WAL bytes and growth on disk, the generators' CPU, and the load average at the end
of the window (other work on the machine shares its cores).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.children import Child, Children
from benchmarks.generators import Load, acked_by, start_generators, stop_generators
from benchmarks.measure import Sampled, Window, fresh_dir, measure
from benchmarks.postgres_server import PostgresServer, postgres
from benchmarks.report import Measured, ScenarioResult

__all__ = ["GENERATORS", "NodeRun", "node_rows", "node_saturation"]

GENERATORS = 6
"""Generator processes, divisible by 1, 2 and 3 so each node gets the same share."""
SENDERS = 2
"""Senders per generator (two open streams each): 24 streams in all, 16 in (b)."""
LOAD = Load(batch=1, stream_messages=500)


@dataclass(frozen=True, slots=True)
class NodeRun:
    """One N: the window, which node led, and the load average when it ended."""

    nodes: int
    window: Window
    leader: int | None
    load_average: str


def node_saturation(
    work_dir: Path, *, node_counts: Sequence[int], seconds: float, warmup_s: float
) -> ScenarioResult:
    """(f): one PostgreSQL server, a fresh database and fresh processes for each node count."""
    result = ScenarioResult(
        "f", "(f) saturation, 1 reading/message, N controller nodes on one PostgreSQL"
    )
    runs = []
    with fresh_dir(work_dir / "f-postgres") as log_dir, postgres(log_dir) as server:
        for nodes in node_counts:
            run = _run(server, work_dir / f"f-{nodes}-nodes", nodes, seconds, warmup_s)
            runs.append(run)
            result.rows.extend(node_rows(run))
    result.values = {
        "runs": [
            {
                "nodes": run.nodes,
                "window_s": run.window.seconds,
                "durable_per_s": run.window.count / run.window.seconds,
                "node_cpu_s": [run.window.cpu(f"node-{i}") for i in range(run.nodes)],
                "node_acked": [run.window.tallies[f"node-{i}"] for i in range(run.nodes)],
                "postgresql_cpu_s": run.window.cpu("postgresql"),
                "postgresql_commits": run.window.tallies.get("commits", 0),
                "postgresql_wal_bytes": run.window.tallies.get("wal_bytes", 0),
                "postgresql_database_bytes": run.window.tallies.get("database_bytes", 0),
                "generators_cpu_s": _generators_cpu(run.window),
                "load_average": run.load_average,
            }
            for run in runs
        ]
    }
    return result


def _run(
    server: PostgresServer, run_dir: Path, nodes: int, seconds: float, warmup_s: float
) -> NodeRun:
    with server.database() as database, fresh_dir(run_dir) as run_dir, Children(run_dir) as kids:
        manipulator = kids.start(
            "manipulator",
            "manipulator",
            ["--listen", "127.0.0.1:0", "--journal", str(run_dir / "journal.jsonl")],
        )
        manipulator.wait_listening()
        members = []
        for index in range(nodes):
            member = kids.start(
                f"node-{index}",
                "controller",
                [
                    "--listen",
                    "127.0.0.1:0",
                    "--manipulator",
                    f"127.0.0.1:{manipulator.port}",
                    "--database",
                    server.url(database),
                ],
            )
            # One after the other: the first migrates the fresh database and leads.
            member.wait_listening()
            members.append(member)
        generators = start_generators(
            kids,
            [member.port for member in members],
            processes=GENERATORS,
            senders=SENDERS,
            extra=LOAD.args(),
        )
        groups = {f"node-{i}": generators[i::nodes] for i in range(nodes)}
        time.sleep(warmup_s)
        sampled: dict[str, Sampled] = {f"node-{i}": member for i, member in enumerate(members)}
        sampled["postgresql"] = server
        sampled |= {f"loadgen-{i}": generator for i, generator in enumerate(generators)}
        acknowledged = acked_by(groups)

        def tallies() -> dict[str, int]:
            return acknowledged() | server.activity(database)

        window = measure(sampled, _durable_rows(server, database), seconds, tallies=tallies)
        load_average = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        leader = _leader(server, database, members)
        stop_generators(generators)
    return NodeRun(nodes, window, leader, load_average)


def _durable_rows(server: PostgresServer, database: str) -> Callable[[], int]:
    # count(*), not max(id): ids are taken from the sequence before commit, so the largest
    # committed one can run ahead of rows other nodes have yet to commit.
    return lambda: server.count(database, "readings")


def _leader(server: PostgresServer, database: str, members: Sequence[Child]) -> int | None:
    address = server.text(database, "SELECT address FROM leadership WHERE id = 1")
    for index, member in enumerate(members):
        if address is not None and address.endswith(f":{member.port}"):
            return index
    return None


def _generators_cpu(window: Window) -> float:
    return sum(window.cpu(name) for name in window.after if name.startswith("loadgen-"))


def node_rows(run: NodeRun) -> list[Measured]:
    """The rows of one N: each node, all nodes, PostgreSQL, the generators."""
    window = run.window
    seconds = window.seconds
    label = f"{run.nodes} node{'s' if run.nodes > 1 else ''}"
    rows = []
    for index in range(run.nodes):
        name = f"node-{index}"
        stored = window.tallies[name]
        cpu = window.cpu(name)
        rows.append(
            Measured(
                label,
                f"node {index + 1}",
                readings_per_s=stored / seconds,
                cpu_percent=100 * cpu / seconds,
                cpu_s_per_million=cpu / stored * 1e6 if stored else None,
                peak_rss_mib=window.after[name].hwm_kib / 1024,
                note="leader; acked to its generators" if index == run.leader else "acked",
            )
        )
    nodes_cpu = sum(window.cpu(f"node-{index}") for index in range(run.nodes))

    def per_reading(cpu: float) -> float | None:
        return cpu / window.count * 1e6 if window.count else None

    rows.append(
        Measured(
            label,
            "all nodes",
            readings_per_s=window.count / seconds,
            cpu_percent=100 * nodes_cpu / seconds,
            cpu_s_per_million=per_reading(nodes_cpu),
            note=f"durable rows; load average {run.load_average}",
        )
    )
    postgres_cpu = window.cpu("postgresql")
    commits = window.tallies.get("commits", 0)
    wal_bytes = window.tallies.get("wal_bytes", 0)
    stored_bytes = window.tallies.get("database_bytes", 0)
    rows.append(
        Measured(
            label,
            "PostgreSQL (all processes)",
            cpu_percent=100 * postgres_cpu / seconds,
            cpu_s_per_million=per_reading(postgres_cpu),
            note=f"{commits / seconds:,.0f} commits/s, "
            f"{window.count / max(1, commits):,.0f} readings/commit, "
            f"{wal_bytes / max(1, window.count):,.0f} WAL bytes/reading, "
            f"{stored_bytes / max(1, window.count):,.0f} bytes/reading on disk",
        )
    )
    generators_cpu = _generators_cpu(window)
    rows.append(
        Measured(
            label,
            f"generators ({GENERATORS} processes)",
            cpu_percent=100 * generators_cpu / seconds,
            cpu_s_per_million=per_reading(generators_cpu),
        )
    )
    return rows
