"""The manipulator's journal file: one JSON line per command received, durable before the ack.

:class:`Journal` appends with ``fsync`` and, when opened, repairs the only
damage a crash can leave (an unterminated last line) and reads every line
once to know each origin's last id and highest epoch
(:mod:`manipulator.journal_index`), so a resend is recognised, a different
command under a journaled (origin, id) is refused, and so is a command from
an epoch lower than its origin's (a deposed leader's). The records and the
line layout are in :mod:`manipulator.records`.
Before each append it checks that its path still names the file it has open
(one ``stat``, 3 µs), since lines written into a deleted or moved journal
would be acknowledged and then lost or never read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

from manipulator.errors import (
    CommandFenced,
    CommandRefused,
    JournalCorrupt,
    JournalDisplaced,
    JournalError,
    JournalMissing,
)
from manipulator.journal_index import RECENT_RECORDS, JournalIndex, Verdict, judge_against
from manipulator.records import (
    RECORD_KEYS,
    JournalRecord,
    parse_command,
    parse_line,
    record_from_entry,
)
from workcell.filelock import open_lock_file, try_lock

__all__ = [
    "LOCK_SUFFIX",
    "RECORD_KEYS",
    "Journal",
    "JournalRecord",
    "parse_command",
    "read_journal",
]

log = logging.getLogger(__name__)

# How much of the file to read per step when scanning it or looking for its end.
_BLOCK = 1024 * 1024
_TAIL_BLOCK = 64 * 1024
# The start of a line as this module writes it (and as lines before origins,
# then before epochs, were written): enough to learn a line's id, origin and
# epoch at open without decoding the whole line, many times faster than
# json.loads. A line that does not start like this is decoded and checked in
# full; so are the last lines, the ones kept in memory.
_LINE_START = re.compile(
    rb'\{"command_id": ([1-9][0-9]{0,19}), (?:"origin": "([A-Za-z0-9._:-]*)", )?'
    rb'(?:"epoch": (0|[1-9][0-9]{0,19}), )?"status": "'
)
_OBJECT_START = b'{"command_id": '
LOCK_SUFFIX = ".lock"
"""The lock file beside the journal: ``journal.jsonl.lock``."""
_LOCK_NOTE = (
    "The manipulator holds a lock on this file while it runs, and it says that a journal "
    "{name} was created beside it. Do not delete it (see docs/storage.md, The manipulator's "
    "journal).\n"
)


def read_journal(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every complete record of the journal at ``path``, oldest first.

    An unterminated last line (an interrupted write, never acknowledged) is
    left out; a damaged complete line raises :class:`JournalCorrupt`.
    """
    data = Path(path).read_bytes()
    lines = data.split(b"\n")[:-1]  # whatever follows the last newline is incomplete
    return [parse_line(line, f"{path} line {n}") for n, line in enumerate(lines, 1)]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _blocks(fd: int, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """``(offset, bytes)`` of [start, end) in blocks of whole newline-terminated lines.

    A block holds at least one line; bytes after the last newline are left out.
    """
    pos = start
    rest = b""
    while pos < end:
        block = os.pread(fd, min(_BLOCK, end - pos), pos)
        if not block:
            break
        data = rest + block
        offset = pos - len(rest)
        pos += len(block)
        cut = data.rfind(b"\n") + 1
        rest = data[cut:]
        if cut:
            yield offset, data[:cut]


def _usual_lines(block: bytes, count: int) -> bool:
    """Whether each of the ``count`` lines of ``block`` starts an object the way we write them.

    Then each match of _LINE_START in the block is the start of one line, in
    order (a string in a line cannot hold the unescaped quotes of that start).
    """
    at_line_starts = block.count(b"\n" + _OBJECT_START) + block.startswith(_OBJECT_START)
    return at_line_starts == count == block.count(_OBJECT_START)


def _lines_of(block: bytes, offset: int) -> Iterator[tuple[int, bytes]]:
    """``(offset, line)`` of each line of a block of whole lines read at ``offset``."""
    for line in block[:-1].split(b"\n"):
        yield offset, line
        offset += len(line) + 1


def _lines(fd: int, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """``(offset, line)`` for each newline-terminated line in [start, end), newline dropped."""
    for offset, block in _blocks(fd, start, end):
        yield from _lines_of(block, offset)


def _tail_lines(fd: int, end: int, count: int) -> list[tuple[int, bytes]]:
    """``(offset, line)`` of the last ``count`` lines before ``end`` (a line's end)."""
    pos = end
    data = b""
    while pos > 0 and data.count(b"\n") <= count:
        start = max(0, pos - _TAIL_BLOCK)
        data = os.pread(fd, pos - start, start) + data
        pos = start
    lines = data[:-1].split(b"\n") if data else []
    if pos > 0 or len(lines) > count:
        lines = lines[-count:]  # the first may be cut, and is not needed
    offset = end - sum(len(line) + 1 for line in lines)
    tail = []
    for line in lines:
        tail.append((offset, line))
        offset += len(line) + 1
    return tail


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
    in progress. One manipulator per journal: the journal and a lock file
    beside it (``journal.jsonl.lock``) are ``flock``-ed; the lock file stays
    when the journal is deleted or moved, so a second manipulator cannot start
    on its path meanwhile. Before each append (and after its fsync) the path
    must still name the open file, or :class:`JournalDisplaced` is raised and
    nothing may be acknowledged: lines would go into a deleted or moved file.
    A missing journal is created only where none was before: the lock file
    records that one was (:class:`JournalMissing`).
    Opening reads every line once (1.4 s per million lines on a 2-core machine), which is
    also how each origin's highest epoch is learned (journaled epochs never decrease within
    an origin, but a line of a manipulator without fencing may follow); memory
    stays bounded by ``recent`` records whatever the journal's length.
    """

    def __init__(self, path: str | os.PathLike[str], *, recent: int = RECENT_RECORDS) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + LOCK_SUFFIX)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._index = JournalIndex(recent)
        self._recent = recent
        self._size = 0
        self._broken: str | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock_fd = open_lock_file(self.lock_path)
        except OSError as exc:
            raise JournalError(f"cannot open journal lock {self.lock_path}: {exc}") from exc
        try:
            fd = self._open_locked(lock_fd)
        except BaseException:
            os.close(lock_fd)
            raise
        self._lock_fd = lock_fd
        self._fd = fd
        stat = os.fstat(fd)
        self._identity = (stat.st_dev, stat.st_ino)

    def _open_locked(self, lock_fd: int) -> int:
        """Lock, open (or create) and read the journal; its descriptor."""
        # The lock is taken on a file beside the journal, which stays when
        # the journal is deleted or moved: a second manipulator cannot start
        # on the path while the first still runs on the displaced file.
        self._lock_file(lock_fd)
        try:
            # Non-empty once a journal was created beside it (written after the journal).
            journal_was_here = os.fstat(lock_fd).st_size > 0
            created = not self.path.exists()
            if created and journal_was_here:
                raise JournalMissing(
                    f"journal {self.path} is missing, but {self.lock_path} shows a journal was "
                    f"kept there: it was deleted or moved. Put it back; or, to start an empty "
                    f"journal knowingly (a resend of a command the lost one held would then be "
                    f"journaled again), delete {self.lock_path}"
                )
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise JournalError(f"cannot open journal {self.path}: {exc}") from exc
        try:
            # The journal's own lock too: it follows the file wherever it is moved.
            self._lock_file(fd)
            if created:
                # Make the new directory entry durable too, not just the lines.
                self._fsync_dir()
            if not journal_was_here:
                _write_all(lock_fd, _LOCK_NOTE.format(name=self.path.name).encode())
                os.fsync(lock_fd)
            self._recover(fd)
            self._scan(fd)
        except OSError as exc:
            os.close(fd)
            raise JournalError(f"cannot open journal {self.path}: {exc}") from exc
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _lock_file(self, fd: int) -> None:
        if not try_lock(fd):
            raise JournalError(f"journal {self.path} is in use by another manipulator")

    def check_path(self) -> None:
        """Raise :class:`JournalDisplaced` unless the path still names the open file.

        One ``stat``: the path's (device, inode) against the open file's.
        """
        assert self._fd is not None
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            named = None
        except OSError as exc:
            raise JournalDisplaced(
                f"journal {self.path} cannot be checked ({exc}): nothing is acknowledged until "
                "it can",
                problem="unreadable",
            ) from exc
        if named is not None and (named.st_dev, named.st_ino) == self._identity:
            return
        deleted = os.fstat(self._fd).st_nlink == 0
        problem = ("deleted" if deleted else "moved") if named is None else "replaced"
        raise JournalDisplaced(self._displaced_message(problem), problem=problem)

    def _displaced_message(self, problem: str) -> str:
        assert self._fd is not None
        stop = (
            "commands are not journaled or acknowledged (the controller keeps them pending "
            "and resends them)"
        )
        if problem == "deleted":
            proc = f"/proc/{os.getpid()}/fd/{self._fd}"
            rescue = (
                f"copy them back with `cp {proc} {self.path}`, then restart the manipulator"
                if Path(proc).exists()
                else "copy them back from the process's open file, then restart the manipulator"
            )
            return (
                f"journal {self.path} was deleted while in use: {stop}. Its lines are still "
                f"readable while this manipulator runs: {rescue}, which then opens the copy. "
                f"Or, to start an empty journal knowingly (the commands journaled so far are "
                f"then in no journal, and a resend of one is journaled again), delete "
                f"{self.lock_path} and restart it"
            )
        if problem == "moved":
            return (
                f"journal {self.path} was moved or renamed while in use: {stop}. Move it back "
                f"to {self.path}: acknowledging resumes by itself. (A restart without it "
                f"refuses to start: {self.lock_path} shows a journal was there)"
            )
        return (
            f"journal {self.path} now names another file than the one this manipulator opened "
            f"(replaced, or deleted and created again): {stop}. Put the original back at "
            f"{self.path} to resume; or, if the file now there is the journal to keep, restart "
            f"the manipulator (a command it does not hold is journaled again when resent)"
        )

    def _fsync_dir(self) -> None:
        dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _recover(self, fd: int) -> None:
        try:
            size = os.fstat(fd).st_size
            end, _ = _last_line(fd, size)
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

    def _scan(self, fd: int) -> None:
        """Read every line: each origin's last id; then the last records in full."""
        lines = 0
        try:
            for offset, block in _blocks(fd, 0, self._size):
                count = block.count(b"\n")
                starts = _LINE_START.findall(block) if _usual_lines(block, count) else []
                if len(starts) != count or not self._index.note_known(starts):
                    # A new origin, or a line not written the usual way: one at a time.
                    for number, (line_offset, line) in enumerate(
                        _lines_of(block, offset), lines + 1
                    ):
                        self._note(number, line_offset, line)
                lines += count
            tail = _tail_lines(fd, self._size, self._recent)
        except OSError as exc:
            raise JournalError(f"cannot read journal {self.path}: {exc}") from exc
        for number, (offset, line) in enumerate(tail, lines - len(tail) + 1):
            where = f"{self.path} line {number}"
            self._index.remember(record_from_entry(parse_line(line, where), where), offset)

    def _note(self, number: int, offset: int, line: bytes) -> None:
        if start := _LINE_START.match(line):
            origin = (start[2] or b"").decode()
            command_id = int(start[1])
            epoch = int(start[3] or 0)
        else:
            entry = parse_line(line, f"{self.path} line {number}")
            origin, command_id = entry.get("origin", ""), entry["command_id"]
            epoch = entry.get("epoch", 0)
        try:
            self._index.note(origin, command_id, offset, epoch)
        except ValueError as exc:
            raise JournalCorrupt(f"{self.path} line {number}: {exc}") from None

    @property
    def last_id(self) -> int:
        """The id of the last command journaled, whatever its origin (0 when empty)."""
        return 0 if self._index.last is None else self._index.last[1]

    @property
    def last_origin(self) -> str | None:
        """The origin of the last command journaled; None when the journal is empty."""
        return None if self._index.last is None else self._index.last[0]

    @property
    def origins(self) -> dict[str, int]:
        """Every origin in the journal and its last id."""
        return self._index.origins

    def epoch_of(self, origin: str) -> int:
        """The highest epoch accepted from ``origin``: journaled, or of a resend since open."""
        return self._index.epoch_of(origin)

    def knows_origin(self, origin: str) -> bool:
        """Whether the journal holds a command of ``origin``."""
        return self._index.last_id_of(origin) > 0

    def is_duplicate(self, command_id: int, origin: str = "") -> bool:
        """True when ``command_id`` is at or below ``origin``'s last id: never journaled again."""
        return command_id <= self._index.last_id_of(origin)

    def append(self, record: JournalRecord) -> bool:
        """Write ``record`` as one line and fsync it.

        False (and no write) for a resend: the same command already journaled
        under its (origin, id); its epoch, if higher, becomes its origin's.
        :class:`CommandFenced` (and no write) for an epoch below its origin's,
        whatever the command says. :class:`CommandRefused` (and no write) for a
        different command under a journaled (origin, id), or an id at or below
        its origin's last that is not journaled. On a write failure the file is
        cut back to its last good size, so a later append never lands after
        half a line; JournalError is raised.
        """
        with self._lock:
            if self._fd is None:
                raise JournalError(f"journal {self.path} is closed")
            if self._broken is not None:
                raise JournalError(self._broken)
            # Before each command, acknowledged or not: a journal no longer at
            # its path would take lines nobody will read, or lose them.
            self.check_path()
            judgement = self._index.judge(record)
            if judgement.verdict is Verdict.LOOK_UP:
                journaled = self._find(record.origin, record.command_id)
                judgement = judge_against(record, journaled, self._index.last_id_of(record.origin))
            if judgement.verdict is Verdict.FENCED:
                raise CommandFenced(
                    judgement.reason,
                    command_id=record.command_id,
                    origin=record.origin,
                    epoch=record.epoch,
                    highest_epoch=judgement.fence,
                )
            if judgement.verdict is Verdict.RESEND:
                self._index.resent(record)
                return False
            if judgement.verdict is Verdict.REFUSED:
                raise CommandRefused(
                    judgement.reason, command_id=record.command_id, reason=judgement.refusal
                )
            self._write(self._fd, record)
            # Again after the fsync: displaced meanwhile, the line may be in
            # a file that is gone, so it must not be acknowledged. It is in
            # the index: should the file come back, a resend is recognised.
            self.check_path()
            return True

    def _write(self, fd: int, record: JournalRecord) -> None:
        line = record.to_line()
        try:
            _write_all(fd, line)
            os.fsync(fd)
        except OSError as exc:
            self._roll_back()
            raise JournalError(
                f"cannot append command {record.command_id} to journal {self.path}: {exc}"
            ) from exc
        self._index.add(record, self._size)
        self._size += len(line)

    def _find(self, origin: str, command_id: int) -> JournalRecord | None:
        """The record journaled under (origin, command_id), read from the file; None if none.

        For resends older than the records in memory (rare): reads from the
        origin's first line on, and stops past ``command_id``.
        """
        assert self._fd is not None
        needle = str(command_id).encode()
        try:
            for offset, line in _lines(self._fd, self._index.first_offset_of(origin), self._size):
                if needle not in line:
                    continue  # cheap: most lines cannot be it
                where = f"{self.path} at byte {offset}"
                entry = parse_line(line, where)
                if entry.get("origin", "") != origin:
                    continue
                if entry["command_id"] == command_id:
                    return record_from_entry(entry, where)
                if entry["command_id"] > command_id:
                    return None
        except OSError as exc:
            raise JournalError(f"cannot read journal {self.path}: {exc}") from exc
        return None

    def _roll_back(self) -> None:
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, self._size)
        except OSError as exc:
            self._broken = f"journal {self.path} may end in a partial line: {exc}"

    def close(self) -> None:
        """Close the file (waiting for an append in progress); idempotent."""
        with self._lock:
            for fd in (self._fd, self._lock_fd):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._fd = self._lock_fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
