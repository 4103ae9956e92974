"""Where a local cluster keeps its state, and the file in which it lists its managers.

The local cluster writes that file and the CLI reads it (cli/config.py), so both take
its name from here. This module imports nothing of orch: the CLI loads it on every call,
and the local cluster never needs the CLI for it.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_STATE_DIR = Path("/var/lib/orch/dev")
"""Where `orch dev up` keeps a local cluster unless told otherwise."""


def manager_address_file(state_dir: Path) -> Path:
    """The file in which a local cluster lists its managers, comma-separated."""
    return Path(state_dir) / "managers"
