"""The package's public names all resolve (a rename cannot leave a dangling export)."""

from __future__ import annotations

import orch.identity


def test_every_exported_name_exists() -> None:
    missing = [name for name in orch.identity.__all__ if not hasattr(orch.identity, name)]
    assert missing == []
