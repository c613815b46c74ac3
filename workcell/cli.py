"""The ``workcell`` command: ``workcell run`` (the whole cell), ``watch`` (any running
cell, live), ``history``, ``report`` and ``replay``.

This is the edge: flags and ``WORKCELL_*`` variables are read here into frozen
configs, logging is set up here, and the exit status is decided here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from workcell.cell_state import CellState
from workcell.cell_watch import CellWatcher
from workcell.flags import (
    Address,
    FlagParser,
    address,
    database_url,
    duration_seconds,
    int_between,
    non_negative_float,
    positive_float,
    positive_int,
    probability,
)
from workcell.history_table import (
    STREAM_MIN_WIDTHS,
    JsonArrayWriter,
    TableWriter,
    format_time,
)
from workcell.liveview import Display, LiveScreen, SummaryLines
from workcell.logs import configure_logging, log_format, log_level
from workcell.pipes import discard_stdout, output_gone, quiet_when_output_gone
from workcell.runner import DEFAULT_METRICS, MAX_CONTROLLERS, CellConfig, run_cell
from workcell.targets import parse_addresses
from workcell.timeconv import from_iso, now_us, to_timestamp
from workcell.tls import (
    PLAINTEXT,
    TlsConfig,
    add_tls_flags,
    connection_hint,
    grpc_channel,
    parse_tls,
)
from workcell.v1 import history_pb2, history_pb2_grpc, nodes_pb2, nodes_pb2_grpc

if TYPE_CHECKING:
    from controller.decision.replay import PolicyOverride

__all__ = ["HistoryConfig", "main"]

DEFAULT_CONTROLLER = "127.0.0.1:50051"
DEFAULT_MANIPULATOR = "127.0.0.1:7700"
HISTORY_TIMEOUT = 10.0
# A report reads everything in its range: the largest page the server allows.
REPORT_PAGE_SIZE = 1000
# Without --from a report draws this much before --to (or now): a day at the
# default 5 s period is 17,280 commands. Memory does not grow with the range
# (the report is drawn from bounded buckets), but the time to page through it does.
DEFAULT_REPORT_LAST = "24h"
MAX_LAST_SECONDS = 36_500 * 86_400
# How often workcell watch redraws (and prints a summary when one is due).
WATCH_REFRESH = 0.5


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    """What ``workcell history`` was asked for."""

    controller: Address
    from_us: int | None = None
    to_us: int | None = None
    merge: bool = False
    page_size: int = 100
    json: bool = False
    tls: TlsConfig = PLAINTEXT


def _range_config(args: argparse.Namespace, tls: TlsConfig) -> HistoryConfig:
    """The History range ``report`` and ``replay`` read, in their large pages."""
    return HistoryConfig(
        controller=args.controller,
        from_us=args.from_,
        to_us=args.to,
        page_size=REPORT_PAGE_SIZE,
        tls=tls,
    )


def _last(text: str) -> int:
    """``--last``: a duration from a second to 100 years, in microseconds."""
    seconds = duration_seconds(text)
    if not 1 <= seconds <= MAX_LAST_SECONDS:
        raise argparse.ArgumentTypeError(
            f"expected a duration from 1s to {MAX_LAST_SECONDS // 86_400}d, got {text!r}"
        )
    return round(seconds * 1e6)


def _duration_text(us: int) -> str:
    """``24h``, ``90m``, ``7d``: the largest unit that divides it."""
    seconds = us / 1e6
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _iso(text: str) -> int:
    try:
        return from_iso(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time like 2025-01-31T12:00:00Z, got {text!r}"
        ) from None


def _status_flag(text: str) -> str:
    if text not in ("up", "down"):
        raise argparse.ArgumentTypeError(f"expected up or down, got {text!r}")
    return text


def _add_query_flags(command: FlagParser, *, default_from: str = "the beginning") -> None:
    """--controller, --from and --to: which controller to ask, for which issue times."""
    command.flag(
        "--controller",
        env="WORKCELL_CONTROLLER_ADDRESS",
        default=DEFAULT_CONTROLLER,
        type=address,
        metavar="HOST:PORT",
        help="the controller's gRPC address",
    )
    command.flag(
        "--from",
        env=None,
        dest="from_",
        default=None,
        type=_iso,
        metavar="ISO",
        help=f"first issue time (inclusive; default: {default_from})",
    )
    command.flag(
        "--to",
        env=None,
        default=None,
        type=_iso,
        metavar="ISO",
        help="issue time to stop at (exclusive; default: now and beyond)",
    )
    add_tls_flags(command, side="client", what="controller: ")
    # parse_tls reports a bad TLS flag through this command's parser (it knows the variables).
    command.set_defaults(command_parser=command)


def _parser() -> FlagParser:
    parser = FlagParser(
        prog="workcell",
        description="Run the robotic work cell, or read or draw its command history.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="start a manipulator, a controller and the sensors; show them live",
        description="Start a manipulator, a controller and N sensors as child processes "
        "and show the cell live. Ctrl-C stops them all (sensors first) and exits 0.",
    )
    assert isinstance(run, FlagParser)
    run.set_defaults(command_parser=run)
    run.flag(
        "--sensors",
        env="WORKCELL_SENSORS",
        default="8",
        type=positive_int,
        help="number of sensors (ids sensor-1 … sensor-N)",
    )
    run.flag(
        "--data",
        env="WORKCELL_DATA",
        default="data",
        type=Path,
        metavar="DIR",
        help="directory for workcell.db, journal.jsonl and logs/",
    )
    run.flag(
        "--database",
        env="WORKCELL_DATABASE",
        default=None,
        type=database_url,
        metavar="URL",
        help="the controller's database instead of DATA/workcell.db, "
        "e.g. postgresql+asyncpg://USER:PASSWORD@HOST:5432/DB",
    )
    run.flag(
        "--period",
        env="WORKCELL_PERIOD",
        default="5",
        type=positive_float,
        metavar="SECONDS",
        help="decision period in seconds",
    )
    run.flag(
        "--rate",
        env="WORKCELL_SENSOR_RATE",
        default="300",
        type=positive_float,
        metavar="PER_SECOND",
        help="readings per second per sensor",
    )
    run.flag(
        "--controllers",
        env="WORKCELL_CONTROLLERS",
        default="1",
        type=int_between(1, MAX_CONTROLLERS),
        metavar="N",
        help="controller nodes on the database (more than one needs a PostgreSQL --database); "
        "each sensor is given every node's address",
    )
    run.flag(
        "--controller-listen",
        env="WORKCELL_CONTROLLER_LISTEN",
        default=DEFAULT_CONTROLLER,
        type=address,
        help="the controller's gRPC address (with several controllers, the first one's: "
        "the others take the next ports, or free ones for port 0)",
    )
    run.flag(
        "--manipulator-listen",
        env="WORKCELL_MANIPULATOR_LISTEN",
        default=DEFAULT_MANIPULATOR,
        type=address,
        help="the manipulator's TCP address",
    )
    run.flag(
        "--duration",
        env=None,
        default=None,
        type=duration_seconds,
        help="stop by itself after this long once everything started (default: run until Ctrl-C)",
    )
    run.flag(
        "--metrics",
        env=None,
        nargs="?",
        const=str(DEFAULT_METRICS),
        default=None,
        type=address,
        help="every process serves Prometheus /metrics on a port of its own, printed at "
        f"start: free ports (without a value, {DEFAULT_METRICS}), or consecutive ones from "
        "HOST:PORT in start order (manipulator, controllers, sensors); "
        "WORKCELL_METRICS_LISTEN is never passed on",
    )
    run.flag(
        "--no-live",
        env=None,
        action="store_true",
        help="print a summary line every 5 s instead of the live view",
    )
    run.flag(
        "--log-level",
        env="WORKCELL_LOG_LEVEL",
        default="INFO",
        type=log_level,
        metavar="LEVEL",
        help="log level of this command; the children log at INFO into DATA/logs "
        "(at DEBUG when this is DEBUG)",
    )
    run.flag(
        "--log-format",
        env="WORKCELL_LOG_FORMAT",
        default="text",
        type=log_format,
        metavar="text|json",
        help="log lines of this command and of every child, as text or JSON objects",
    )

    watch = commands.add_parser(
        "watch",
        help="show a running cell live: commands as they are issued and acknowledged, "
        "sensors, which node leads",
        description="Follow a running cell through its controllers' live API "
        "(History/Watch, Sensors/ListRuns, Nodes/GetLeadership): redrawn in place on a "
        "terminal, plain lines (one per command event, a summary every 5 s) otherwise. "
        "Give every node's address to see every sensor: each node knows the readings it "
        "stored. Ctrl-C stops it.",
    )
    assert isinstance(watch, FlagParser)
    watch.set_defaults(command_parser=watch)
    watch.add_argument(
        "address",
        nargs="?",
        type=parse_addresses,
        default=None,
        metavar="ADDRESS",
        help="the controller's gRPC address, or every node's, comma-separated "
        f"(default: $WORKCELL_CONTROLLER_ADDRESS or {DEFAULT_CONTROLLER})",
    )
    watch.flag(
        "--no-live",
        env=None,
        action="store_true",
        help="plain lines even on a terminal",
    )
    watch.flag(
        "--duration",
        env=None,
        default=None,
        type=duration_seconds,
        help="stop by itself after this long (default: until Ctrl-C)",
    )
    add_tls_flags(watch, side="client", what="controller: ")

    history = commands.add_parser(
        "history",
        help="print the commands the controller issued, as a table",
        description="Print the commands issued in [--from, --to), oldest first, each page "
        "as it arrives (memory stays flat however long the history).",
    )
    assert isinstance(history, FlagParser)
    _add_query_flags(history)
    history.flag(
        "--merge",
        env=None,
        action="store_true",
        help="one row per run of consecutive commands of equal status",
    )
    history.flag(
        "--page-size",
        env=None,
        default="100",
        type=positive_int,
        help="entries per request (the server caps it at 1000)",
    )
    history.flag(
        "--json",
        env=None,
        action="store_true",
        help="print a JSON array instead of a table (streamed: entries appear as they come)",
    )
    history.flag(
        "--log-format",
        env="WORKCELL_LOG_FORMAT",
        default="text",
        type=log_format,
        metavar="text|json",
        help="format of log lines on stderr (the table or --json output is not a log)",
    )

    report = commands.add_parser(
        "report",
        help="draw the decisions as a PNG: means, status, p-values, acknowledgements",
        description="Draw the commands issued in [--from, --to) as a PNG: each window's "
        "mean with a 95% t-interval, the status in force with acknowledgements, and the "
        "p-values against alpha. Without --from, the last 24 hours (--last). A long range "
        "is drawn from at most 2048 time buckets, so memory stays bounded.",
    )
    assert isinstance(report, FlagParser)
    _add_query_flags(report, default_from="--to minus --last")
    report.flag(
        "--last",
        env=None,
        default=argparse.SUPPRESS,
        type=_last,
        metavar="DURATION",
        help="without --from, draw the commands issued in this long before --to or now "
        f"(7d, 90m, 3600; default: {DEFAULT_REPORT_LAST})",
    )
    report.flag(
        "--alpha",
        env="WORKCELL_ALPHA",
        default="0.05",
        type=probability,
        help="significance level drawn on the p-value panel (the controller's --alpha)",
    )
    report.flag(
        "-o",
        "--output",
        env=None,
        default="report.png",
        type=Path,
        metavar="PNG",
        help="where to write the picture",
    )

    replay = commands.add_parser(
        "replay",
        help="recompute the decisions a policy would have made over the stored history, "
        "beside the ones issued",
        description="Replay the commands issued in [--from, --to): decide each window again "
        "from the window statistics stored with its command (no raw reading: it works after "
        "pruning), with the controller's own decision code, under the policy given by "
        "--alpha, --min-effect and --confirm (each one not given: the one recorded with "
        "each command, so with none the issued statuses come back exactly). Prints issued "
        "and replayed status side by side, the status changes of each and the windows where "
        "they differ.",
    )
    assert isinstance(replay, FlagParser)
    _add_query_flags(replay)
    replay.flag(
        "--alpha",
        env=None,
        default=None,
        type=probability,
        help="significance level of the t-test (default: as recorded with each command)",
    )
    replay.flag(
        "--min-effect",
        env=None,
        default=None,
        type=non_negative_float,
        metavar="X",
        help="a significant change moves the status only if the means differ by at least X "
        "payload units (0: off; default: as recorded)",
    )
    replay.flag(
        "--confirm",
        env=None,
        default=None,
        type=positive_int,
        metavar="K",
        help="the status moves only after K consecutive significant decisions in one "
        "direction (1: off; default: as recorded)",
    )
    replay.flag(
        "--initial-status",
        env=None,
        default=None,
        type=_status_flag,
        metavar="up|down",
        help="start the first window of the range from this status and no streak "
        "(default: the status and streak recorded before it)",
    )
    replay.flag(
        "--json",
        env=None,
        action="store_true",
        help="print one JSON object (policy, windows, summary) instead of the table",
    )
    replay.flag(
        "-o",
        "--output",
        env=None,
        default=None,
        type=Path,
        metavar="PNG",
        help="also draw both status tracks over the window means into this PNG",
    )
    return parser


def query_pages(
    config: HistoryConfig,
) -> Generator[Sequence[history_pb2.HistoryEntry], None, None]:
    """The query's pages in order, following ``next_page_token``.

    A page is asked for only once the previous one has been taken, so a caller
    that handles each page before the next holds one page at a time however
    long the history. Iterating raises grpc.RpcError; closing the generator
    early closes the channel and asks for nothing more.
    """
    request = history_pb2.QueryRequest(page_size=config.page_size, merge_runs=config.merge)
    if config.from_us is not None:
        request.from_datetime.CopyFrom(to_timestamp(config.from_us))
    if config.to_us is not None:
        request.to_datetime.CopyFrom(to_timestamp(config.to_us))
    with grpc_channel(str(config.controller), config.tls) as channel:
        stub = history_pb2_grpc.HistoryStub(channel)
        while True:
            response = stub.Query(request, timeout=HISTORY_TIMEOUT)
            yield response.entries
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token


def leadership_footer(config: HistoryConfig) -> str:
    """The table's last line: which node leads and in which term ("" from a controller
    too old to say)."""
    with grpc_channel(str(config.controller), config.tls) as channel:
        try:
            role = nodes_pb2_grpc.NodesStub(channel).GetLeadership(
                nodes_pb2.GetLeadershipRequest(), timeout=HISTORY_TIMEOUT
            )
        except grpc.RpcError as exc:
            if isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return ""
            raise
    this = "this node" if role.leading else "another node"
    if not role.leader_node:
        return f"\nno node leads now (term {role.epoch} ended); {config.controller} stands by\n"
    return (
        f"\nleader: {role.leader_address} ({this}), term {role.epoch}; asked {config.controller}\n"
    )


def _explain(exc: grpc.RpcError, config: HistoryConfig, command: str) -> None:
    """One stderr line with the gRPC status."""
    reason = f"{exc.code().name}: {exc.details()}" if isinstance(exc, grpc.Call) else str(exc)
    hint = connection_hint(reason, config.tls, server="the controller")
    reason += f". {hint}" if hint else ""
    sys.stderr.write(f"workcell {command}: {config.controller}: {reason}\n")


def history_command(config: HistoryConfig) -> int:
    """``workcell history``: print each page as it arrives; one line and 1 on a server error.

    An error after some pages leaves what was printed (a table without its end,
    a JSON array without its closing bracket) and exits 1.
    """
    writer: JsonArrayWriter | TableWriter = (
        JsonArrayWriter()
        if config.json
        else TableWriter(merged=config.merge, min_widths=STREAM_MIN_WIDTHS)
    )
    pages = query_pages(config)
    try:
        for page in pages:
            sys.stdout.write(writer.page(page))
            # A pipe would otherwise hold the rows back until the buffer fills.
            sys.stdout.flush()
        sys.stdout.write(writer.finish())
        if not config.json:
            sys.stdout.write(leadership_footer(config))
        sys.stdout.flush()
    except grpc.RpcError as exc:
        sys.stdout.flush()
        _explain(exc, config, "history")
        return 1
    except BrokenPipeError:
        # Whoever reads has all it wanted: stop asking the controller for more.
        discard_stdout()
        return 0
    finally:
        pages.close()
    return 0


def report_command(
    config: HistoryConfig, *, alpha: float, output: Path, last_us: int | None = None
) -> int:
    """``workcell report``: write the PNG; one line and 1 when there is nothing to draw.

    Without ``config.from_us`` and with ``last_us``, the commands issued in the
    ``last_us`` before ``config.to_us`` (or now) are drawn. Pages are folded into
    a bounded summary as they arrive (:class:`~workcell.report_data.ReportBuilder`).
    """
    # numpy/scipy are imported only here (and matplotlib only once there is
    # something to draw): they are slow to import and no other command needs them.
    from workcell.report_data import ReportBuilder

    default_from: int | None = None
    if config.from_us is None and last_us is not None:
        until = config.to_us if config.to_us is not None else now_us()
        default_from = until - last_us
    query = config if default_from is None else replace(config, from_us=default_from)
    builder = ReportBuilder(from_us=config.from_us, to_us=config.to_us, alpha=alpha)
    pages = query_pages(query)
    try:
        for page in pages:
            builder.add(page)
    except grpc.RpcError as exc:
        _explain(exc, config, "report")
        return 1
    finally:
        pages.close()
    if not builder.commands:
        where = "that time range"
        if last_us is not None and default_from is not None:
            end = "--to" if config.to_us is not None else "now"
            where = f"the {_duration_text(last_us)} before {end} (--last or --from for more)"
        sys.stderr.write(f"workcell report: no commands in {where}\n")
        return 1
    data = builder.result()
    from workcell.report import save_report

    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        save_report(data, output)
    except OSError as exc:
        sys.stderr.write(f"workcell report: cannot write {output}: {exc.strerror or exc}\n")
        return 1
    since = "" if default_from is None else f" issued since {format_time(default_from)}"
    sys.stdout.write(f"wrote {output} ({data.commands} commands{since})\n")
    return 0


def replay_command(
    config: HistoryConfig,
    *,
    override: PolicyOverride,
    initial_status: str | None = None,
    as_json: bool = False,
    output: Path | None = None,
) -> int:
    """``workcell replay``: replay each page as it arrives and print it; the summary last.

    1 with one stderr line on a server error, a range with no command, or commands that do
    not follow each other; what was printed before stays (a JSON object without its end).
    """
    # The decision code imports scipy, the picture matplotlib: only this command needs them.
    from controller.decision.replay import Replay
    from workcell.replay_data import ReplayTally, recorded_from_entry
    from workcell.replay_output import JsonReplayWriter, TableReplayWriter, describe_override

    replayer = Replay(override, initial_status=initial_status)
    tally = ReplayTally()
    track = None
    if output is not None:
        from workcell.replay_plot import ReplayTrack

        track = ReplayTrack()
    writer: JsonReplayWriter | TableReplayWriter = (
        JsonReplayWriter(override, initial_status) if as_json else TableReplayWriter(override)
    )
    pages = query_pages(config)
    try:
        for page in pages:
            replayed = [replayer.step(recorded_from_entry(entry)) for entry in page]
            for window in replayed:
                tally.add(window)
                if track is not None:
                    track.add(window)
            sys.stdout.write(writer.page(replayed))
            sys.stdout.flush()
    except grpc.RpcError as exc:
        sys.stdout.flush()
        _explain(exc, config, "replay")
        return 1
    except ValueError as exc:
        sys.stdout.flush()
        sys.stderr.write(f"workcell replay: {exc}\n")
        return 1
    except BrokenPipeError:
        discard_stdout()
        return 0
    finally:
        pages.close()
    if not tally.windows:
        sys.stderr.write("workcell replay: no commands in that time range\n")
        return 1
    sys.stdout.write(writer.finish(tally))
    sys.stdout.flush()
    if output is not None and track is not None:
        from workcell.replay_plot import save_replay

        title = (
            f"workcell replay under {describe_override(override)}: status changes issued "
            f"{tally.issued_changes}, replayed {tally.replayed_changes}"
        )
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            save_replay(track, output, title=title)
        except OSError as exc:
            sys.stderr.write(f"workcell replay: cannot write {output}: {exc.strerror or exc}\n")
            return 1
        # On stderr: with --json, stdout is the JSON object alone.
        sys.stderr.write(f"wrote {output} ({tally.windows} windows)\n")
    return 0


def _setup_run_logging(level: str, fmt: str, log_file: Path, *, to_stderr: bool) -> None:
    """Log to ``<data>/logs/workcell.log``, and to stderr unless the live view owns the screen."""
    configure_logging(level, fmt, native_stderr=True)
    root = logging.getLogger()
    file_handler = logging.FileHandler(log_file, encoding="utf-8")
    file_handler.setFormatter(root.handlers[0].formatter)
    if to_stderr:
        root.addHandler(file_handler)
    else:
        root.handlers[:] = [file_handler]


def run_command(args: argparse.Namespace) -> int:
    """``workcell run``: the cell in the foreground until Ctrl-C."""
    config = CellConfig(
        sensors=args.sensors,
        data=args.data,
        period=args.period,
        rate=args.rate,
        controller_listen=args.controller_listen,
        manipulator_listen=args.manipulator_listen,
        duration=args.duration,
        python=sys.executable,
        log_format=args.log_format,
        database=args.database,
        controllers=args.controllers,
        log_level=args.log_level,
        metrics=args.metrics,
    )
    problem = config.problem()
    if problem is not None:
        flag = "--metrics" if problem.startswith("--metrics") else "--controllers"
        args.command_parser.error(f"argument {flag}: {problem.removeprefix('--metrics ')}")
    config.log_dir.mkdir(parents=True, exist_ok=True)
    live = not args.no_live and sys.stdout.isatty()
    _setup_run_logging(
        args.log_level, args.log_format, config.log_dir / "workcell.log", to_stderr=not live
    )
    display: Display = LiveScreen(sys.stdout) if live else SummaryLines(sys.stdout)
    problem = config.problem()
    if problem is not None:
        args.command_parser.error(f"argument --controllers: {problem}")
    state = CellState(sensor_ids=config.sensor_ids, controller_ids=config.controller_names)
    code = asyncio.run(run_cell(config, display, state))
    if live:
        try:
            sys.stdout.write(f"logs: {config.log_dir}\n")
            sys.stdout.flush()
        except OSError as exc:  # the terminal closed: the cell's status still stands
            if not output_gone(exc):
                raise
            discard_stdout()
    return code


async def _watch(
    addresses: Sequence[Address],
    tls: TlsConfig,
    display: Display,
    duration: float | None,
) -> None:
    state = CellState(phase="watching")
    watcher = CellWatcher(addresses, state, tls=tls, on_event=display.event)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, stop.set)
    started = time.monotonic()
    following = asyncio.create_task(watcher.run())
    try:
        while not stop.is_set() and not following.done():
            elapsed = time.monotonic() - started
            if duration is not None and elapsed >= duration:
                break
            display.refresh(state, elapsed=elapsed, now_us=now_us())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WATCH_REFRESH):
                    await stop.wait()
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
        state.phase = "stopped"
        display.close(state, elapsed=time.monotonic() - started, now_us=now_us())


def watch_command(args: argparse.Namespace) -> int:
    """``workcell watch``: the live view of a running cell until Ctrl-C (or --duration)."""
    configure_logging("WARNING", "text", native_stderr=True)
    tls = parse_tls(args.command_parser, args, side="client")
    addresses = args.address
    if addresses is None:
        text = os.environ.get("WORKCELL_CONTROLLER_ADDRESS", DEFAULT_CONTROLLER)
        try:
            addresses = parse_addresses(text)
        except argparse.ArgumentTypeError as exc:
            args.command_parser.error(f"WORKCELL_CONTROLLER_ADDRESS: {exc}")
    display: Display
    if not args.no_live and sys.stdout.isatty():
        display = LiveScreen(sys.stdout, title="workcell watch")
    else:
        display = SummaryLines(sys.stdout, events=True)
    try:
        asyncio.run(_watch(addresses, tls, display, args.duration))
    except BrokenPipeError:
        discard_stdout()
    return 0


@quiet_when_output_gone
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``workcell`` command; returns the exit status.

    Whoever reads its output may go at any time (``| head``): then it ends
    quietly with status 0 (:mod:`workcell.pipes`).
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        return run_command(args)
    if args.command == "watch":
        return watch_command(args)
    if args.command == "history":
        configure_logging("WARNING", args.log_format, native_stderr=True)
        tls = parse_tls(args.command_parser, args, side="client")
        return history_command(
            HistoryConfig(
                controller=args.controller,
                from_us=args.from_,
                to_us=args.to,
                merge=args.merge,
                page_size=args.page_size,
                json=args.json,
                tls=tls,
            )
        )
    if args.command == "report":
        tls = parse_tls(args.command_parser, args, side="client")
        if args.from_ is not None and "last" in args:
            args.command_parser.error("--from and --last exclude each other: give one")
        # --last applies only without --from; it has a default, so the range is bounded.
        last_us = (
            None if args.from_ is not None else getattr(args, "last", _last(DEFAULT_REPORT_LAST))
        )
        return report_command(
            _range_config(args, tls),
            alpha=args.alpha,
            output=args.output,
            last_us=last_us,
        )
    if args.command == "replay":
        tls = parse_tls(args.command_parser, args, side="client")
        if args.from_ is not None and args.to is not None and args.from_ > args.to:
            args.command_parser.error("--from is after --to: the range would be empty")
        from controller.decision.replay import PolicyOverride

        return replay_command(
            _range_config(args, tls),
            override=PolicyOverride(args.alpha, args.min_effect, args.confirm),
            initial_status=args.initial_status,
            as_json=args.json,
            output=args.output,
        )
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
