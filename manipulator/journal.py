"""The manipulator's journal: one JSON line per command received, durable before the ack.

The first half is pure: turning a ``Command`` payload into a
:class:`JournalRecord` (or a :class:`~manipulator.errors.BadCommand` naming
the problem) and a record into its line. The second half is the file:
:class:`Journal` appends with ``fsync`` and, when opened, repairs the only
damage a crash can leave (an unterminated last line) and recovers the last id.

Journal layout (a user-facing file; change it only with a migration)::

    {"command_id": 12, "status": "up", "window_start": "2024-05-01T12:00:00.000000Z",
     "window_end": "2024-05-01T12:00:05.000000Z", "issued_at": "2024-05-01T12:00:05.250113Z",
     "received_at": "2024-05-01T12:00:05.251020Z"}

one object per line (shown wrapped here), ids strictly increasing, times ISO 8601 UTC.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from manipulator.errors import BadCommand, JournalCorrupt, JournalError
from workcell.status import status_name
from workcell.timeconv import from_timestamp, to_iso
from workcell.v1 import command_pb2

__all__ = ["RECORD_KEYS", "Journal", "JournalRecord", "parse_command", "read_journal"]

log = logging.getLogger(__name__)

RECORD_KEYS = (
    "command_id",
    "status",
    "window_start",
    "window_end",
    "issued_at",
    "received_at",
)
_TIME_FIELDS = ("window_start", "window_end", "issued_at")
# Timestamps the journal can spell as four-digit-year ISO 8601: the epoch up
# to the end of year 9999. Anything else is a broken sender, not a time.
_MAX_SECONDS = 253_402_300_799
_NANOS_PER_SECOND = 1_000_000_000
# How much of the file to read per step when looking for the last line.
_TAIL_BLOCK = 64 * 1024


@dataclass(frozen=True)
class JournalRecord:
    """One journal line: a command as received, times as ISO 8601 UTC strings."""

    command_id: int
    status: str
    window_start: str
    window_end: str
    issued_at: str
    received_at: str

    def to_line(self) -> bytes:
        """The record as one newline-terminated JSON line, keys in layout order."""
        return (json.dumps(asdict(self)) + "\n").encode()


def _timestamp_iso(command_id: int, name: str, ts: Timestamp) -> str:
    if not 0 <= ts.seconds <= _MAX_SECONDS or not 0 <= ts.nanos < _NANOS_PER_SECOND:
        raise BadCommand(
            f"command {command_id}: {name} out of range "
            f"(seconds={ts.seconds}, nanos={ts.nanos}; expected 1970..9999)"
        )
    return to_iso(from_timestamp(ts))


def parse_command(payload: bytes, *, received_at: int) -> JournalRecord:
    """Decode and validate one ``Command`` payload; ``received_at`` is in µs since the epoch.

    Raises :class:`BadCommand` with a message naming the problem: undecodable
    bytes, id 0, a status other than UP/DOWN, a missing or out-of-range time.
    """
    try:
        command = command_pb2.Command.FromString(payload)
    except DecodeError as exc:
        raise BadCommand(f"undecodable Command ({len(payload)} bytes): {exc}") from None
    if command.id == 0:
        raise BadCommand("command id is 0 (ids start at 1)")
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
        status=status,
        window_start=times["window_start"],
        window_end=times["window_end"],
        issued_at=times["issued_at"],
        received_at=to_iso(received_at),
    )


def _parse_line(line: bytes, where: str) -> dict[str, Any]:
    """A complete journal line as a dict; JournalCorrupt (naming ``where``) if it is not one."""
    try:
        entry = json.loads(line)
    except ValueError:
        raise JournalCorrupt(f"{where} is not JSON: {line[:80]!r}") from None
    if not isinstance(entry, dict):
        raise JournalCorrupt(f"{where} is not a JSON object: {line[:80]!r}")
    command_id = entry.get("command_id")
    if isinstance(command_id, bool) or not isinstance(command_id, int) or command_id < 1:
        raise JournalCorrupt(f"{where} has no valid command_id: {line[:80]!r}")
    return entry


def read_journal(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every complete record of the journal at ``path``, oldest first.

    An unterminated last line (an interrupted write, never acknowledged) is
    left out; a damaged complete line raises :class:`JournalCorrupt`.
    """
    data = Path(path).read_bytes()
    lines = data.split(b"\n")[:-1]  # whatever follows the last newline is incomplete
    return [_parse_line(line, f"{path} line {n}") for n, line in enumerate(lines, 1)]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _last_line(fd: int, size: int) -> tuple[int, bytes]:
    """Return the offset just past the last newline and the complete line it ends.

    Reads backwards in blocks, so opening a long journal does not read it all.
    ``(0, b"")`` when the file holds no complete line.
    """
    pos = size
    data = b""  # the bytes from pos onwards that may still matter
    while pos > 0:
        start = max(0, pos - _TAIL_BLOCK)
        data = os.pread(fd, pos - start, start) + data
        pos = start
        last_newline = data.rfind(b"\n")
        if last_newline == -1:
            data = b""  # all unterminated tail: only its length matters
            continue
        previous = data.rfind(b"\n", 0, last_newline)
        if previous != -1 or pos == 0:
            return pos + last_newline + 1, data[previous + 1 : last_newline]
    return 0, b""


class Journal:
    """The append-only journal file, opened (and repaired) by the constructor.

    Blocking and thread-safe: the server calls :meth:`append` through
    ``asyncio.to_thread``. An internal lock serializes appends and
    :meth:`close`, so lines never interleave and closing waits for the write
    in progress. The file is ``flock``-ed: one manipulator per journal.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._last_id = 0
        self._size = 0
        self._broken: str | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise JournalError(f"cannot open journal {self.path}: {exc}") from exc
        try:
            self._lock_file(fd)
            if created:
                # Make the new directory entry durable too, not just the lines.
                self._fsync_dir()
            self._recover(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def _lock_file(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JournalError(f"journal {self.path} is in use by another manipulator") from None

    def _fsync_dir(self) -> None:
        dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _recover(self, fd: int) -> None:
        try:
            size = os.fstat(fd).st_size
            end, line = _last_line(fd, size)
            if end < size:
                # A crash between write and fsync: that command was never
                # acknowledged, so the controller will send it again.
                log.warning(
                    "journal %s: removing an incomplete last line (%d bytes) "
                    "left by an interrupted write",
                    self.path,
                    size - end,
                )
                os.ftruncate(fd, end)
                os.fsync(fd)
        except OSError as exc:
            raise JournalError(f"cannot read journal {self.path}: {exc}") from exc
        self._size = end
        if line:
            entry = _parse_line(line, f"{self.path}: the last line")
            self._last_id = int(entry["command_id"])

    @property
    def last_id(self) -> int:
        """The id of the last command journaled (0 when the journal is empty)."""
        return self._last_id

    def is_duplicate(self, command_id: int) -> bool:
        """True when ``command_id`` is already journaled (ids only increase)."""
        return command_id <= self._last_id

    def append(self, record: JournalRecord) -> bool:
        """Write ``record`` as one line and fsync it; False (and no write) for a duplicate.

        On failure the file is cut back to its last good size, so a later
        append never lands after half a line; JournalError is raised.
        """
        line = record.to_line()
        with self._lock:
            if self._fd is None:
                raise JournalError(f"journal {self.path} is closed")
            if self._broken is not None:
                raise JournalError(self._broken)
            if self.is_duplicate(record.command_id):
                return False
            try:
                _write_all(self._fd, line)
                os.fsync(self._fd)
            except OSError as exc:
                self._roll_back()
                raise JournalError(
                    f"cannot append command {record.command_id} to journal {self.path}: {exc}"
                ) from exc
            self._size += len(line)
            self._last_id = record.command_id
            return True

    def _roll_back(self) -> None:
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, self._size)
        except OSError as exc:
            self._broken = f"journal {self.path} may end in a partial line: {exc}"

    def close(self) -> None:
        """Close the file (waiting for an append in progress); idempotent."""
        with self._lock:
            if self._fd is not None:
                fd, self._fd = self._fd, None
                with contextlib.suppress(OSError):
                    os.close(fd)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
