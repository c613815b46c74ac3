"""``--help`` and ``--version`` of every service and command, as their users see them.

Each command runs as a real process. The help rules: a default is shown only
when there is one (no "(default: None)", nothing for a switch), once, in the
units users type (``24h``, ``5``, not ``86400.0`` or ``5.0``); every value
has a metavar that says what to type (not the flag's name in capitals).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import subprocess
import sys
from dataclasses import dataclass

import pytest

from tests.processes import ROOT
from workcell.flags import FlagParser, database_url, duration_between, positive_int

COMMANDS: dict[str, tuple[str, ...]] = {
    "python -m controller": ("-m", "controller"),
    "python -m sensor": ("-m", "sensor"),
    "python -m manipulator": ("-m", "manipulator"),
    "python -m controller.migrate": ("-m", "controller.migrate"),
    "python -m workcell.healthcheck": ("-m", "workcell.healthcheck"),
    "workcell": ("-m", "workcell.cli"),
    "workcell run": ("-m", "workcell.cli", "run"),
    "workcell history": ("-m", "workcell.cli", "history"),
    "workcell report": ("-m", "workcell.cli", "report"),
}
_OPTION = re.compile(r"^  (-\S+)")
_DEFAULT = re.compile(r"\(default: ([^)]*)\)")
_DURATION = re.compile(r"^(0|\d+(\.\d+)?(ms|s|m|h|d))$")


def run_all(flag: str) -> dict[str, subprocess.CompletedProcess[str]]:
    """``COMMAND flag`` for every command, started together (each one is mostly imports)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("WORKCELL_")}
    env["COLUMNS"] = "100"
    started = {
        name: subprocess.Popen(
            [sys.executable, *argv, flag],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        for name, argv in COMMANDS.items()
    }
    done = {}
    for name, process in started.items():
        out, err = process.communicate(timeout=60)
        done[name] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    return done


@dataclass
class Option:
    """One entry of a help text's option list: its flags, metavar and help, unwrapped."""

    flags: list[str]
    metavar: str | None
    text: str


def options(help_text: str) -> list[Option]:
    """The entries of the option list (``  --flag METAVAR  help ...`` and their wrapped lines)."""
    entries: list[list[str]] = []
    current: list[str] | None = None
    for line in help_text.splitlines():
        if _OPTION.match(line):
            current = [line]
            entries.append(current)
        elif current is not None and line.startswith("   "):
            current.append(line)
        else:
            current = None
    found = []
    for entry in entries:
        head, _, first = entry[0].strip().partition("  ")
        words = head.replace(",", "").split()
        flags = [word for word in words if word.startswith("-")]
        values = [word for word in words if not word.startswith("-")]
        text = " ".join([first, *entry[1:]])
        found.append(Option(flags, values[0] if values else None, " ".join(text.split())))
    return found


@pytest.fixture(scope="module")
def helps() -> dict[str, str]:
    done = run_all("--help")
    for name, result in done.items():
        assert result.returncode == 0, (name, result.stderr)
    return {name: result.stdout for name, result in done.items()}


def test_every_help_follows_the_rules(helps: dict[str, str]) -> None:
    problems = []
    for command, text in helps.items():
        listed = options(text)
        assert listed, (command, text)
        for option in listed:
            where = f"{command} {option.flags[-1]}"
            defaults = _DEFAULT.findall(option.text)
            if len(re.findall(r"\bdefault\b", option.text, flags=re.IGNORECASE)) > 1:
                problems.append(f"{where}: default said twice: {option.text}")
            for shown in defaults:
                if shown.strip() in ("", "None", "False", "True", "==SUPPRESS=="):
                    problems.append(f"{where}: meaningless default {shown!r}")
                if re.fullmatch(r"-?\d+\.0", shown):
                    problems.append(f"{where}: default {shown!r} written as a float")
                if (
                    option.metavar == "DURATION"
                    and shown[:1].isdigit()
                    and not _DURATION.match(shown)
                ):
                    problems.append(f"{where}: duration default {shown!r} without a unit")
            if option.metavar is not None:
                name = option.flags[-1].lstrip("-").replace("-", "_").upper()
                # (DURATION is what a --duration takes: the one name that is its own metavar.)
                if option.metavar == name and name != "DURATION":
                    problems.append(f"{where}: metavar {option.metavar} is the flag's name")
    assert problems == [], "\n".join(problems)


def test_defaults_are_shown_as_users_type_them(helps: dict[str, str]) -> None:
    shown = {
        (command, option.flags[-1]): option
        for command, text in helps.items()
        for option in options(text)
    }
    retain = shown["python -m controller", "--retain-readings"]
    assert retain.metavar == "DURATION"
    assert "(default: 24h)" in retain.text
    assert "(default: 5)" in shown["python -m controller", "--period"].text
    assert "(default: 127.0.0.1:50051)" in shown["workcell run", "--controller-listen"].text
    assert shown["workcell run", "--controller-listen"].metavar == "HOST:PORT"
    assert shown["workcell run", "--sensors"].metavar == "N"
    # A switch shows no default; a flag without one says what happens instead, once.
    assert "default" not in shown["workcell run", "--no-live"].text
    assert shown["python -m sensor", "--seed"].text.count("default") == 1
    assert "(default: None)" not in helps["workcell run"]
    # Every flag names its variable.
    assert "[env WORKCELL_RETAIN_READINGS]" in retain.text


def test_a_default_from_the_environment_is_shown_as_given() -> None:
    parser = FlagParser(prog="p", environ={"WORKCELL_WAIT": "7d"})
    parser.flag("--wait", env="WORKCELL_WAIT", default="3600", type=duration_between(1, 1e9))
    parser.flag("--count", env=None, default="100", type=positive_int)
    parser.flag("--every", env="WORKCELL_EVERY", default="90.0", type=duration_between(1, 1e9))
    parser.flag("--percent", env=None, default="5%", metavar="SHARE", help="a share")
    parser.flag("--quiet", env="WORKCELL_QUIET", action="store_true", help="say less")
    text = " ".join(parser.format_help().split())
    # Set, the variable's value is the default that applies: shown as the variable's.
    assert "--wait DURATION [env WORKCELL_WAIT=7d]" in text
    assert "--every DURATION (default: 90s) [env WORKCELL_EVERY]" in text
    assert "--count N (default: 100)" in text
    assert "--percent SHARE a share (default: 5%)" in text
    assert "--quiet say less [env WORKCELL_QUIET]" in text
    assert parser.parse_args([]).wait == 7 * 86400
    secret = FlagParser(prog="p", environ={"WORKCELL_DATABASE": "postgresql://u:hunter2@h/db"})
    secret.flag("--database", env="WORKCELL_DATABASE", default=None, type=database_url)
    shown = secret.format_help()
    assert "hunter2" not in shown
    assert "[env WORKCELL_DATABASE=postgresql://u:***@h/db]" in " ".join(shown.split())
    with pytest.raises(TypeError, match="--name: give a metavar"):
        parser.flag("--name", env=None, help="a name")


def test_version_everywhere() -> None:
    version = importlib.metadata.version("workcell")
    for name, result in run_all("--version").items():
        assert result.returncode == 0, (name, result.stderr)
        assert result.stdout == f"{name} {version}\n", name


def test_version_is_the_package_metadata() -> None:
    parser = FlagParser(prog="p")
    action = next(a for a in parser._actions if "--version" in a.option_strings)
    assert isinstance(action, argparse._VersionAction)
    assert action.version == "%(prog)s " + importlib.metadata.version("workcell")
