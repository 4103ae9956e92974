"""Helpers shared by the agent tests (imported by name: pytest puts this dir on sys.path)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import pytest

from orch.agent.networks import Networks
from orch.overlay import netns as ns
from orch.overlay.endpoints import EndpointManager

needs_netns = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2"
)


@dataclass(eq=False)
class AgentHost:
    netns: str
    address: str
    endpoints: EndpointManager
    networks: Networks


async def run_ok(*argv: str) -> str:
    rc, out, err = await ns.run_command(list(argv))
    assert rc == 0, f"{' '.join(argv)}: {err.strip()}"
    return out
