"""`orch version`: the client's version always, the cluster's when a manager answers."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from orch.version import version as client_version

PYPROJECT = Path(__file__).parents[2] / "pyproject.toml"
VERSION = tomllib.loads(PYPROJECT.read_text())["project"]["version"]


def test_the_client_version_is_the_package_version() -> None:
    assert client_version() == VERSION


async def test_version_json_with_a_reachable_manager(orch, fake_server) -> None:
    result = await orch("version", "-o", "json", "--manager", fake_server.address)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.out) == {
        "client": {"version": VERSION},
        "cluster": {"version": "9.9.9-fake", "manager": fake_server.address},
    }


async def test_version_without_a_manager_still_gives_the_client(orch, dead_address) -> None:
    result = await orch("version", "-o", "json", "--manager", dead_address)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.out)
    assert record["client"] == {"version": VERSION} and record["cluster"] is None
    assert record["cluster_error"] == (
        f"cannot reach a manager at {dead_address} (connection refused)"
    )


async def test_version_table(orch, fake_server) -> None:
    result = await orch("version", "--manager", fake_server.address)
    assert result.out.splitlines() == [
        "          VERSION      FROM",
        f"client    {VERSION}",
        f"cluster   9.9.9-fake   manager at {fake_server.address}",
    ]
