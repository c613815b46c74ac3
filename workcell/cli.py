"""The ``workcell`` command: ``workcell run`` (the whole cell), ``history`` and ``report``.

This is the edge: flags and ``WORKCELL_*`` variables are read here into frozen
configs, logging is set up here, and the exit status is decided here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from workcell.flags import (
    Address,
    FlagParser,
    address,
    database_url,
    duration_seconds,
    positive_float,
    positive_int,
    probability,
)
from workcell.history_table import entry_record, format_table
from workcell.liveview import CellState, Display, LiveScreen, SummaryLines
from workcell.logs import configure_logging, log_format, log_level
from workcell.runner import CellConfig, run_cell
from workcell.timeconv import from_iso, to_timestamp
from workcell.tls import (
    PLAINTEXT,
    TlsConfig,
    add_tls_flags,
    connection_hint,
    grpc_channel,
    parse_tls,
)
from workcell.v1 import history_pb2, history_pb2_grpc

__all__ = ["HistoryConfig", "main"]

DEFAULT_CONTROLLER = "127.0.0.1:50051"
DEFAULT_MANIPULATOR = "127.0.0.1:7700"
HISTORY_TIMEOUT = 10.0
# A report reads everything in its range: the largest page the server allows.
REPORT_PAGE_SIZE = 1000


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


def _iso(text: str) -> int:
    try:
        return from_iso(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time like 2025-01-31T12:00:00Z, got {text!r}"
        ) from None


def _add_query_flags(command: FlagParser) -> None:
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
        help="first issue time (inclusive; default: the beginning)",
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
        help="decision period in seconds",
    )
    run.flag(
        "--rate",
        env="WORKCELL_SENSOR_RATE",
        default="300",
        type=positive_float,
        help="readings per second per sensor",
    )
    run.flag(
        "--controller-listen",
        env="WORKCELL_CONTROLLER_LISTEN",
        default=DEFAULT_CONTROLLER,
        type=address,
        help="the controller's gRPC address",
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
        help="log level of this command (children read WORKCELL_LOG_LEVEL)",
    )
    run.flag(
        "--log-format",
        env="WORKCELL_LOG_FORMAT",
        default="text",
        type=log_format,
        metavar="text|json",
        help="log lines of this command and of every child, as text or JSON objects",
    )

    history = commands.add_parser(
        "history",
        help="print the commands the controller issued, as a table",
        description="Print the commands issued in [--from, --to), oldest first.",
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
        "--json", env=None, action="store_true", help="print a JSON array instead of a table"
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
        "p-values against alpha.",
    )
    assert isinstance(report, FlagParser)
    _add_query_flags(report)
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
    return parser


def fetch_all(config: HistoryConfig) -> list[history_pb2.HistoryEntry]:
    """Every entry of the query, following ``next_page_token``; raises grpc.RpcError."""
    request = history_pb2.QueryRequest(page_size=config.page_size, merge_runs=config.merge)
    if config.from_us is not None:
        request.from_datetime.CopyFrom(to_timestamp(config.from_us))
    if config.to_us is not None:
        request.to_datetime.CopyFrom(to_timestamp(config.to_us))
    entries: list[history_pb2.HistoryEntry] = []
    with grpc_channel(str(config.controller), config.tls) as channel:
        stub = history_pb2_grpc.HistoryStub(channel)
        while True:
            response = stub.Query(request, timeout=HISTORY_TIMEOUT)
            entries.extend(response.entries)
            if not response.next_page_token:
                return entries
            request.page_token = response.next_page_token


def _fetch_or_explain(config: HistoryConfig, command: str) -> list[history_pb2.HistoryEntry] | None:
    """``fetch_all``, or None after one stderr line with the gRPC status."""
    try:
        return fetch_all(config)
    except grpc.RpcError as exc:
        reason = f"{exc.code().name}: {exc.details()}" if isinstance(exc, grpc.Call) else str(exc)
        hint = connection_hint(reason, config.tls, server="the controller")
        reason += f". {hint}" if hint else ""
        sys.stderr.write(f"workcell {command}: {config.controller}: {reason}\n")
        return None


def history_command(config: HistoryConfig) -> int:
    """``workcell history``: print the table (or JSON); one line and 1 on a server error."""
    entries = _fetch_or_explain(config, "history")
    if entries is None:
        return 1
    if config.json:
        json.dump([entry_record(e) for e in entries], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_table(entries, merged=config.merge) + "\n")
    return 0


def report_command(config: HistoryConfig, *, alpha: float, output: Path) -> int:
    """``workcell report``: write the PNG; one line and 1 when there is nothing to draw."""
    entries = _fetch_or_explain(config, "report")
    if entries is None:
        return 1
    if not entries:
        sys.stderr.write("workcell report: no commands in that time range\n")
        return 1
    # matplotlib is imported only here: it is slow to import and no other
    # command needs it.
    from workcell.report import save_report
    from workcell.report_data import prepare_report

    data = prepare_report(entries, from_us=config.from_us, to_us=config.to_us)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        save_report(data, output, alpha=alpha)
    except OSError as exc:
        sys.stderr.write(f"workcell report: cannot write {output}: {exc.strerror or exc}\n")
        return 1
    sys.stdout.write(f"wrote {output} ({data.commands} commands)\n")
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
    )
    config.log_dir.mkdir(parents=True, exist_ok=True)
    live = not args.no_live and sys.stdout.isatty()
    _setup_run_logging(
        args.log_level, args.log_format, config.log_dir / "workcell.log", to_stderr=not live
    )
    display: Display
    if live:
        display = LiveScreen(sys.stdout, width=shutil.get_terminal_size().columns)
    else:
        display = SummaryLines(sys.stdout)
    state = CellState(sensor_ids=config.sensor_ids)
    code = asyncio.run(run_cell(config, display, state))
    if live:
        sys.stdout.write(f"logs: {config.log_dir}\n")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``workcell`` command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        return run_command(args)
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
        return report_command(
            HistoryConfig(
                controller=args.controller,
                from_us=args.from_,
                to_us=args.to,
                page_size=REPORT_PAGE_SIZE,
                tls=tls,
            ),
            alpha=args.alpha,
            output=args.output,
        )
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
