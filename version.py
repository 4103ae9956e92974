"""orch's version: the installed package's (pyproject.toml), one lookup for the CLI and the
managers, so `orch version` compares like with like."""

from __future__ import annotations

from importlib import metadata


def version() -> str:
    try:
        return metadata.version("orch")
    except metadata.PackageNotFoundError:  # a source tree that is not installed
        return "unknown"
