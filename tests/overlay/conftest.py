"""Fixtures for overlay tests: a per-run name prefix and a throwaway "host" netns.

Integration tests run the EndpointManager with ``host_netns`` set to a netns of their
own, so the bridge and the host ends of veths never appear in the root namespace. Every
netns whose name starts with the run prefix is deleted afterwards, also on failure;
deleting the host netns takes its bridge and veths with it.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from overlay_helpers import cleanup_prefix

from orch.overlay import netns as ns
from orch.overlay.endpoints import EndpointManager
from orch.overlay.settings import NetworkSettings


@pytest.fixture
def run_prefix() -> str:
    """A fresh agent prefix: "orcht" + 4 random characters (9, the longest allowed)."""
    alphabet = string.ascii_lowercase + string.digits
    return "orcht" + "".join(secrets.choice(alphabet) for _ in range(4))


@pytest.fixture
async def host_netns(run_prefix: str) -> AsyncIterator[str]:
    """A netns standing in for the agent's host; all run-prefixed netns removed after."""
    name = f"{run_prefix}host"
    await ns.create_netns(name)
    try:
        yield name
    finally:
        await cleanup_prefix(run_prefix)


@pytest.fixture
def settings(run_prefix: str, host_netns: str, tmp_path: Path) -> NetworkSettings:
    return NetworkSettings(
        prefix=run_prefix,
        state_dir=tmp_path / "state",
        host_netns=host_netns,
        bridge_subnet="10.213.7.0/24",
        command_timeout=10.0,
    )


@pytest.fixture
def manager(settings: NetworkSettings) -> EndpointManager:
    return EndpointManager(settings)
