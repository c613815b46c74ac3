"""Journal records, pure: a ``Command`` payload to a record, a record to its line and back.

Journal layout (a user-facing file; change it only with a migration)::

    {"command_id": 12, "origin": "5f0c9a8e-…", "epoch": 3, "status": "up",
     "window_start": "2024-05-01T12:00:00.000000Z", "window_end": "2024-05-01T12:00:05.000000Z",
     "issued_at": "2024-05-01T12:00:05.250113Z", "received_at": "2024-05-01T12:00:05.251020Z"}

one object per line (shown wrapped here), times ISO 8601 UTC. A command is
identified by (origin, command_id); ids strictly increase per origin. Lines
written before origins existed have no ``origin`` key and read as origin "".
``epoch`` is the leadership term of the controller node that sent the
command (0: one without leadership); lines written before epochs have none
and read as epoch 0.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from manipulator.errors import BadCommand, JournalCorrupt
from workcell.status import status_name
from workcell.timeconv import MAX_TIMESTAMP_SECONDS, NANOS_PER_SECOND, from_timestamp, to_iso
from workcell.v1 import command_pb2

__all__ = [
    "RECORD_KEYS",
    "JournalRecord",
    "describe",
    "parse_command",
    "parse_line",
    "record_from_entry",
    "same_command",
    "shown_origin",
]

RECORD_KEYS = (
    "command_id",
    "origin",
    "epoch",
    "status",
    "window_start",
    "window_end",
    "issued_at",
    "received_at",
)
# What makes two commands with the same (origin, id) the same command: a
# resend carries exactly these again. received_at is ours, not the sender's;
# the epoch names the node that sent this copy, not the command (a new leader
# resends its predecessor's commands with its own epoch).
_CONTENT = ("status", "window_start", "window_end", "issued_at")
_TIME_FIELDS = ("window_start", "window_end", "issued_at")
# Controllers send a UUID; anything printable and short is accepted, so the
# journal line and the log lines that quote it stay one readable line.
_ORIGIN = re.compile(r"[A-Za-z0-9._:-]{0,64}")
_MAX_EPOCH = 2**64 - 1  # a uint64 on the wire


@dataclass(frozen=True, slots=True)
class JournalRecord:
    """One journal line: a command as received, times as ISO 8601 UTC strings."""

    command_id: int
    origin: str
    epoch: int
    status: str
    window_start: str
    window_end: str
    issued_at: str
    received_at: str

    def to_line(self) -> bytes:
        """The record as one newline-terminated JSON line, keys in layout order."""
        return (json.dumps(asdict(self)) + "\n").encode()


def same_command(a: JournalRecord, b: JournalRecord) -> bool:
    """Whether ``a`` and ``b`` say the same thing (a resend), whenever each was received."""
    return all(getattr(a, name) == getattr(b, name) for name in _CONTENT)


def describe(record: JournalRecord) -> str:
    """What a command says, for log lines and refusals."""
    return (
        f"status={record.status} window=[{record.window_start}, {record.window_end}) "
        f"issued={record.issued_at}"
    )


def shown_origin(origin: str | None) -> str:
    """An origin as log lines spell it: the empty one (older controllers) as ``""``."""
    return '""' if origin == "" else str(origin)


def _timestamp_iso(command_id: int, name: str, ts: Timestamp) -> str:
    # Times the journal can spell as four-digit-year ISO 8601: the epoch up to
    # the end of year 9999. Anything else is a broken sender, not a time.
    if not 0 <= ts.seconds <= MAX_TIMESTAMP_SECONDS or not 0 <= ts.nanos < NANOS_PER_SECOND:
        raise BadCommand(
            f"command {command_id}: {name} out of range "
            f"(seconds={ts.seconds}, nanos={ts.nanos}; expected 1970..9999)"
        )
    return to_iso(from_timestamp(ts))


def parse_command(payload: bytes, *, received_at: int) -> JournalRecord:
    """Decode and validate one ``Command`` payload; ``received_at`` is in µs since the epoch.

    Raises :class:`BadCommand` with a message naming the problem: undecodable
    bytes, id 0, a status other than UP/DOWN, a missing or out-of-range time,
    an origin that is not up to 64 characters of ``[A-Za-z0-9._:-]``.
    """
    try:
        command = command_pb2.Command.FromString(payload)
    except DecodeError as exc:
        raise BadCommand(f"undecodable Command ({len(payload)} bytes): {exc}") from None
    if command.id == 0:
        raise BadCommand("command id is 0 (ids start at 1)")
    if not _ORIGIN.fullmatch(command.origin):
        raise BadCommand(
            f"command {command.id}: origin {command.origin[:80]!r} is not up to 64 characters "
            "of [A-Za-z0-9._:-]"
        )
    try:
        status = status_name(command.status)
    except ValueError:
        raise BadCommand(
            f"command {command.id}: status {command.status} is not STATUS_UP or STATUS_DOWN"
        ) from None
    times: dict[str, str] = {}
    for name in _TIME_FIELDS:
        if not command.HasField(name):
            raise BadCommand(f"command {command.id}: {name} is missing")
        times[name] = _timestamp_iso(command.id, name, getattr(command, name))
    return JournalRecord(
        command_id=command.id,
        origin=command.origin,
        epoch=command.epoch,
        status=status,
        window_start=times["window_start"],
        window_end=times["window_end"],
        issued_at=times["issued_at"],
        received_at=to_iso(received_at),
    )


def parse_line(line: bytes, where: str) -> dict[str, Any]:
    """A complete journal line as a dict; JournalCorrupt (naming ``where``) if it is not one.

    Checks what every reader of the journal relies on: an object with a
    positive ``command_id`` and, when present, a string ``origin`` and an
    ``epoch`` that is a uint64.
    """
    try:
        entry = json.loads(line)
    except ValueError:
        raise JournalCorrupt(f"{where} is not JSON: {line[:80]!r}") from None
    if not isinstance(entry, dict):
        raise JournalCorrupt(f"{where} is not a JSON object: {line[:80]!r}")
    command_id = entry.get("command_id")
    if isinstance(command_id, bool) or not isinstance(command_id, int) or command_id < 1:
        raise JournalCorrupt(f"{where} has no valid command_id: {line[:80]!r}")
    if not isinstance(entry.get("origin", ""), str):
        raise JournalCorrupt(f"{where} has an origin that is not a string: {line[:80]!r}")
    epoch = entry.get("epoch", 0)
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= _MAX_EPOCH:
        raise JournalCorrupt(f"{where} has an epoch that is not a uint64: {line[:80]!r}")
    return entry


def record_from_entry(entry: dict[str, Any], where: str) -> JournalRecord:
    """The record a parsed line holds (origin "", epoch 0 for lines older than those keys).

    ``entry`` comes from :func:`parse_line`, which checked its id and epoch.
    """
    values: dict[str, Any] = {"origin": "", "epoch": 0, **entry}
    missing = [
        name
        for name in RECORD_KEYS
        if name not in ("command_id", "epoch") and not isinstance(values.get(name), str)
    ]
    if missing:
        raise JournalCorrupt(f"{where} lacks {', '.join(missing)}")
    return JournalRecord(**{name: values[name] for name in RECORD_KEYS})
