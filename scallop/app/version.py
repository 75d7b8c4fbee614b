"""The line program's version: on the screen, in ``scallop --version`` and in every run's record."""

from __future__ import annotations

from functools import cache

DIST = "scallop-uro-line"


@cache
def program_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DIST)
    except PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"
