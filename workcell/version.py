"""The version of the installed ``workcell`` package, for ``--version`` on every command."""

from __future__ import annotations

import importlib.metadata

__all__ = ["DISTRIBUTION", "package_version"]

DISTRIBUTION = "workcell"


def package_version() -> str:
    """The version in the package metadata (pyproject.toml, as installed).

    Run from a source tree that was never installed there is no metadata:
    ``unknown`` then, rather than failing every command.
    """
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
