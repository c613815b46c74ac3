"""Command-line flags that can also come from ``WORKCELL_*`` environment variables.

Every service builds its frozen config dataclass in ``__main__`` with a
:class:`FlagParser`; the environment is read only here, at the edge. A bad
value, from a flag or from the environment, exits with status 2 and one line
that names the flag (and the variable it came from).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from workcell.version import package_version

__all__ = [
    "Address",
    "FlagParser",
    "address",
    "database_url",
    "duration_between",
    "duration_seconds",
    "float_between",
    "int_between",
    "non_negative_float",
    "optional_address",
    "positive_float",
    "positive_int",
    "probability",
    "shown_default",
]

T = TypeVar("T")

# What to type for a value of each flag type (the metavar a flag gets when it
# names none). Filled in below as the types are made.
_METAVARS: dict[Any, str] = {Path: "PATH"}
# The flag types whose values are durations: their defaults are shown with a unit.
_DURATION_TYPES: set[Any] = set()
_FLOAT_ZERO = re.compile(r"(-?\d+)\.0")


def shown_default(default: Any, kind: Any = None) -> str | None:
    """``default`` as ``--help`` shows it, as a user would type it; None: nothing to show.

    Nothing for no default (None, an empty string, argparse.SUPPRESS); a
    duration given in plain seconds gets its unit (``86400`` -> ``1d``); a
    float that is a whole number loses its ``.0`` (``5.0`` -> ``5``); a
    database URL hides its password (the value may come from the environment).
    """
    if default is None or default is argparse.SUPPRESS or isinstance(default, bool):
        return None
    text = str(default).strip()
    if not text:
        return None
    if kind in _DURATION_TYPES:
        try:
            seconds = float(text)
        except ValueError:
            return text  # written with its unit already
        return "0" if seconds == 0 else _show_seconds(seconds)
    if kind is database_url:
        try:
            return make_url(text).render_as_string(hide_password=True)
        except ArgumentError:
            return "(not a URL)"
    if match := _FLOAT_ZERO.fullmatch(text):
        return match.group(1)
    return text


class FlagParser(argparse.ArgumentParser):
    """An ArgumentParser whose flags may default from environment variables.

    Its help follows one set of rules (``tests/test_flags_help.py``): a
    default is shown only when there is one, once, as users type it
    (``24h``, ``5``); every value has a metavar that says what to type,
    given or taken from the flag's type; ``--version`` is on every parser,
    sub-commands' included (they are FlagParsers too).
    """

    def __init__(self, *args: Any, environ: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._environ = os.environ if environ is None else environ
        self._env_of: dict[str, str] = {}
        self.add_argument(
            "--version",
            action="version",
            version=f"%(prog)s {package_version()}",
            help="print the version and exit",
        )

    def flag(
        self,
        *names: str,
        env: str | None,
        default: Any = None,
        help: str = "",
        metavar: str | None = None,
        **kwargs: Any,
    ) -> argparse.Action:
        """Add a flag; with ``env``, the variable (when set) replaces ``default``.

        String defaults go through ``type`` like command-line values, so a bad
        environment value is reported exactly like a bad flag. A flag that
        takes a value needs a metavar: ``metavar``, or its type's (TypeError
        otherwise, at definition).
        """
        takes_value = kwargs.get("action", "store") == "store"
        kind = kwargs.get("type")
        if takes_value:
            metavar = metavar or (_METAVARS.get(kind) if kind is not None else None)
            if metavar is None:
                raise TypeError(f"flag {names[-1]}: give a metavar that says what to type")
            kwargs["metavar"] = metavar
        from_env = env is not None and env in self._environ
        if from_env:
            assert env is not None
            default = self._environ[env]
        notes = []
        shown = shown_default(default, kind) if takes_value and not from_env else None
        # A help text that explains its default itself keeps it: never said twice.
        if shown is not None and "default" not in help.lower():
            notes.append(f"(default: {shown})")
        if env is not None:
            value = shown_default(default, kind) if from_env else None
            # Set: the variable's value is what applies, so it is the one shown.
            notes.append(f"[env {env}]" if value is None else f"[env {env}={value}]")
        help = " ".join([help, *(note.replace("%", "%%") for note in notes)]).strip()
        action = self.add_argument(*names, default=default, help=help, **kwargs)
        if env is not None:
            self._env_of[action.dest] = env
        return action

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: None = None
    ) -> argparse.Namespace:
        return super().parse_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        """One line on stderr, exit status 2 (no usage dump)."""
        for dest, env in self._env_of.items():
            flag = "--" + dest.replace("_", "-")
            if f"argument {flag}" in message and env in self._environ:
                message = f"{message} (from environment variable {env})"
                break
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


class Address(tuple[str, int]):
    """A ``HOST:PORT`` pair; ``str()`` gives it back in that form."""

    __slots__ = ()

    def __new__(cls, host: str, port: int) -> Address:
        return super().__new__(cls, (host, port))

    @property
    def host(self) -> str:
        return self[0]

    @property
    def port(self) -> int:
        return self[1]

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def address(text: str) -> Address:
    """Parse ``HOST:PORT`` (IPv6 hosts in brackets); port 0 means any free port."""
    host, sep, port_text = text.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return Address(host, int(port_text))


def optional_address(text: str) -> Address | None:
    """Like :func:`address`, but empty means unset (compose passes variables through blank)."""
    return address(text) if text.strip() else None


_METAVARS[address] = _METAVARS[optional_address] = "HOST:PORT"


def _number(kind: Callable[[str], T], check: Callable[[T], bool], what: str) -> Callable[[str], T]:
    """A flag type for a ``kind`` number passing ``check``; its metavar is N or NUMBER."""

    def parse(text: str) -> T:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if (isinstance(value, float) and not math.isfinite(value)) or not check(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what
    _METAVARS[parse] = "N" if kind is int else "NUMBER"
    return parse


positive_float = _number(float, lambda v: v > 0, "a number > 0")
non_negative_float = _number(float, lambda v: v >= 0, "a number >= 0")
positive_int = _number(int, lambda v: v > 0, "an integer > 0")
probability = _number(float, lambda v: 0 < v < 1, "a number between 0 and 1")
_METAVARS[probability] = "P"


def float_between(low: float, high: float) -> Callable[[str], float]:
    """Flag type: a number from ``low`` to ``high`` (inclusive)."""
    return _number(float, lambda v: low <= v <= high, f"a number from {low:g} to {high:g}")


def int_between(low: int, high: int) -> Callable[[str], int]:
    """Flag type: an integer from ``low`` to ``high`` (inclusive)."""
    return _number(int, lambda v: low <= v <= high, f"an integer from {low:,} to {high:,}")


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _show_seconds(seconds: float) -> str:
    """``86400`` -> ``1d``, ``0.05`` -> ``50ms``: a bound as a person would write it."""
    for unit in ("d", "h", "m", "s"):
        if seconds >= _UNITS[unit] and (seconds / _UNITS[unit]).is_integer():
            return f"{seconds / _UNITS[unit]:g}{unit}"
    return f"{seconds * 1000:g}ms"


def duration_between(low: float, high: float, *, zero: bool = False) -> Callable[[str], float]:
    """Flag type: a duration from ``low`` to ``high`` seconds; with ``zero``, 0 as well."""
    what = f"a duration from {_show_seconds(low)} to {_show_seconds(high)}"
    if zero:
        what = f"0 or {what}"

    def parse(text: str) -> float:
        seconds = duration_seconds(text)
        if not (low <= seconds <= high or (zero and seconds == 0)):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return seconds

    parse.__name__ = what
    _METAVARS[parse] = "DURATION"
    _DURATION_TYPES.add(parse)
    return parse


def duration_seconds(text: str) -> float:
    """Parse a duration: plain seconds (``2.5``) or with a unit (``500ms``, ``10m``, ``24h``)."""
    stripped = text.strip().lower()
    for unit in sorted(_UNITS, key=len, reverse=True):
        if stripped.endswith(unit):
            number, scale = stripped[: -len(unit)], _UNITS[unit]
            break
    else:
        number, scale = stripped, 1.0
    try:
        value = float(number) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration like 5, 500ms or 10m, got {text!r}"
        ) from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a duration >= 0, got {text!r}")
    return value


_METAVARS[duration_seconds] = "DURATION"
_DURATION_TYPES.add(duration_seconds)


# The async driver of each supported backend: a plain ``sqlite://`` or
# ``postgresql://`` URL gets it, an explicit other driver is refused.
_ASYNC_DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}


def database_url(text: str) -> str:
    """An SQLAlchemy async URL for SQLite (aiosqlite) or PostgreSQL (asyncpg)."""
    try:
        url = make_url(text.strip())
    except ArgumentError:
        raise argparse.ArgumentTypeError(
            f"expected a URL like sqlite+aiosqlite:///data/workcell.db or "
            f"postgresql+asyncpg://USER:PASSWORD@HOST:5432/DB, got {text!r}"
        ) from None
    backend = "postgresql" if url.get_backend_name() == "postgres" else url.get_backend_name()
    driver = _ASYNC_DRIVERS.get(backend)
    if driver is None:
        raise argparse.ArgumentTypeError(
            f"unsupported database {backend!r}: use sqlite+aiosqlite:// or postgresql+asyncpg://"
        )
    if url.drivername not in (backend, f"{backend}+{driver}", "postgres"):
        raise argparse.ArgumentTypeError(
            f"unsupported driver {url.drivername!r}: use {backend}+{driver}://"
        )
    if not url.database:
        raise argparse.ArgumentTypeError(f"no database named in {text!r}")
    return url.set(drivername=f"{backend}+{driver}").render_as_string(hide_password=False)


_METAVARS[database_url] = "URL"
