"""Fixtures for overlay tests: a per-run name prefix, a throwaway "host" netns, and an
underlay of several "hosts" (netns on one test switch, each with its own endpoint manager).

Integration tests run the EndpointManager with ``host_netns`` set to a netns of their
own, so the bridge and the host ends of veths never appear in the root namespace. Every
netns whose name starts with the run prefix is deleted afterwards, also on failure;
deleting the host netns takes its bridge and veths with it.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from overlay_helpers import Host, cleanup_prefix, run_ok
from tests_support import fresh_netns_base

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


@pytest.fixture
async def underlay(tmp_path: Path) -> AsyncIterator[Callable[[int], Awaitable[list[Host]]]]:
    """A factory of ``count`` hosts on one switch: netns ``<base>h<i>`` with address
    10.99.0.<i>/24 on link ``ul``, veth'd to bridge ``sw`` in netns ``<base>u``; host i's
    agent prefix is ``<base><i>``. Every netns starting with ``<base>`` (hosts, switch,
    containers) is deleted afterwards, which takes links, nft tables and sysctls along."""
    base = fresh_netns_base()

    async def make(count: int) -> list[Host]:
        switch = f"{base}u"
        await ns.create_netns(switch)
        await run_ok("ip", "-n", switch, "link", "add", "sw", "type", "bridge")
        await run_ok("ip", "-n", switch, "link", "set", "sw", "up")
        hosts = []
        for i in range(1, count + 1):
            netns, address = f"{base}h{i}", f"10.99.0.{i}"
            await ns.create_netns(netns)
            await run_ok("ip", "link", "add", f"p{i}", "netns", switch, "type", "veth",
                         "peer", "name", "ul", "netns", netns)  # fmt: skip
            await run_ok("ip", "-n", switch, "link", "set", f"p{i}", "master", "sw", "up")
            await run_ok("ip", "-n", netns, "addr", "add", f"{address}/24", "dev", "ul")
            await run_ok("ip", "-n", netns, "link", "set", "ul", "up")
            settings = NetworkSettings(
                prefix=f"{base}{i}",
                state_dir=tmp_path / f"h{i}",
                host_netns=netns,
                host_address=address,
                bridge_subnet=f"10.213.{10 + i}.0/24",
            )
            hosts.append(Host(netns, address, settings, EndpointManager(settings)))
        return hosts

    try:
        yield make
    finally:
        await cleanup_prefix(base)
