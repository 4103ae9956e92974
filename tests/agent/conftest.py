"""Fixtures for agent tests: two netns "hosts" joined by a veth, each with the agent's
network side (EndpointManager + Networks) working in it, as an agent inside it would.

Every netns whose name starts with the run's base prefix (hosts and containers) is
deleted afterwards, also on failure; links, nft tables and sysctls go with them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from agent_helpers import AgentHost, run_ok
from tests_support import fresh_netns_base

from orch.agent.networks import Networks
from orch.overlay import netns as ns
from orch.overlay.endpoints import EndpointManager
from orch.overlay.links import KernelNet
from orch.overlay.settings import NetworkSettings


@pytest.fixture
async def two_hosts(tmp_path: Path) -> AsyncIterator[tuple[AgentHost, AgentHost]]:
    base = fresh_netns_base()
    try:
        hosts = []
        for i in (1, 2):
            await ns.create_netns(f"{base}h{i}")
        await run_ok("ip", "link", "add", "ul", "netns", f"{base}h1", "type", "veth",
                     "peer", "name", "ul", "netns", f"{base}h2")  # fmt: skip
        for i in (1, 2):
            netns, address = f"{base}h{i}", f"10.98.0.{i}"
            await run_ok("ip", "-n", netns, "addr", "add", f"{address}/24", "dev", "ul")
            await run_ok("ip", "-n", netns, "link", "set", "ul", "up")
            settings = NetworkSettings(
                prefix=f"{base}{i}",
                state_dir=tmp_path / f"h{i}",
                host_netns=netns,
                host_address=address,
                bridge_subnet=f"10.213.{20 + i}.0/24",
            )
            endpoints = EndpointManager(settings, net=KernelNet(netns))
            hosts.append(AgentHost(netns, address, endpoints, Networks(endpoints)))
        yield hosts[0], hosts[1]
    finally:
        for name in ns.list_netns(base):
            await ns.delete_netns(name)
