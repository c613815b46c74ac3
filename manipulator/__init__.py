"""The manipulator: accepts framed ``Command`` messages over TCP, journals them, acknowledges.

Run it with ``python -m manipulator``; embed it with :class:`ManipulatorServer`.
"""

from manipulator.journal import Journal, JournalRecord, read_journal
from manipulator.server import ManipulatorServer

__all__ = ["Journal", "JournalRecord", "ManipulatorServer", "read_journal"]
