"""The manipulator's configuration: flags, each also from a ``WORKCELL_*`` variable."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from workcell.flags import Address, FlagParser, address, float_between, int_between
from workcell.framing import MAX_FRAME_BYTES
from workcell.logs import add_log_flags
from workcell.metrics_http import add_metrics_flag
from workcell.tls import PLAINTEXT, TlsConfig, add_tls_flags, parse_tls

# A Command is about 100 bytes at most; a limit below this one would refuse
# every command (and the controller would reconnect for ever). Above the upper
# one a single client could make the manipulator hold that much per connection.
MIN_FRAME_BYTES = 1024
MAX_FRAME_LIMIT = 64 * 1024 * 1024

__all__ = ["ManipulatorConfig", "parse_config"]


@dataclass(frozen=True)
class ManipulatorConfig:
    """Everything ``python -m manipulator`` needs, validated."""

    listen: Address
    journal: Path
    max_frame_bytes: int
    read_timeout: float
    log_level: str
    log_format: str = "text"
    tls: TlsConfig = PLAINTEXT
    """The TCP server's certificate, key and client CA (see :mod:`workcell.tls`)."""
    metrics_listen: Address | None = None
    """Where to serve Prometheus ``/metrics`` over HTTP; None: no endpoint."""


def parse_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> ManipulatorConfig:
    """Parse flags (``argv``, default sys.argv) over ``environ`` (default os.environ).

    A bad value exits with status 2 and one line naming the flag.
    """
    parser = FlagParser(
        prog="python -m manipulator",
        description="Accept framed Command messages over TCP, journal them, acknowledge them.",
        environ=environ,
    )
    parser.flag(
        "--listen",
        env="WORKCELL_MANIPULATOR_LISTEN",
        default="127.0.0.1:7700",
        type=address,
        metavar="HOST:PORT",
        help="address to accept the controller on (port 0: any free port)",
    )
    parser.flag(
        "--journal",
        env="WORKCELL_JOURNAL",
        default="data/journal.jsonl",
        type=Path,
        metavar="PATH",
        help="JSON-lines journal of received commands (parent directories are created); "
        "PATH.lock beside it is its lock file",
    )
    parser.flag(
        "--max-frame",
        env="WORKCELL_MAX_FRAME",
        default=str(MAX_FRAME_BYTES),
        type=int_between(MIN_FRAME_BYTES, MAX_FRAME_LIMIT),
        metavar="BYTES",
        help="largest frame payload accepted; a larger one closes the connection",
    )
    parser.flag(
        "--read-timeout",
        env="WORKCELL_READ_TIMEOUT",
        default="10",
        type=float_between(0.1, 3600),
        metavar="SECONDS",
        help="close a connection that sent part of a frame and then nothing for this long",
    )
    add_log_flags(parser)
    add_metrics_flag(parser)
    add_tls_flags(parser, side="server")
    args = parser.parse_args(argv)
    tls = parse_tls(parser, args, side="server")
    return ManipulatorConfig(
        listen=args.listen,
        journal=args.journal,
        max_frame_bytes=args.max_frame,
        read_timeout=args.read_timeout,
        log_level=args.log_level,
        log_format=args.log_format,
        tls=tls,
        metrics_listen=args.metrics_listen,
    )
