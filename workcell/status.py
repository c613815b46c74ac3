"""The manipulator status as people and files spell it ("up"/"down")."""

from __future__ import annotations

from workcell.v1 import command_pb2

__all__ = ["STATUS_NAMES", "status_from_name", "status_name"]

STATUS_NAMES: dict[int, str] = {
    command_pb2.STATUS_UP: "up",
    command_pb2.STATUS_DOWN: "down",
}
_BY_NAME = {name: value for value, name in STATUS_NAMES.items()}


def status_name(status: int) -> str:
    """``"up"`` or ``"down"``; ValueError for any other enum value."""
    try:
        return STATUS_NAMES[status]
    except KeyError:
        raise ValueError(f"unknown status {status}") from None


def status_from_name(name: str) -> int:
    """The enum value for ``"up"`` or ``"down"`` (case-insensitive)."""
    try:
        return _BY_NAME[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown status {name!r} (expected 'up' or 'down')") from None
