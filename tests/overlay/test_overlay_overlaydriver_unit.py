"""OverlayDriver + EndpointManager on an in-memory kernel: when peers are written, and
who removes the devices when (the race of a last teardown against a new setup).

The same code runs on the real kernel in test_overlay_vxlan.py; the fake lets the
interleaving be driven exactly.
"""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path

import pytest
from tests_support import always

from orch.overlay import names
from orch.overlay.endpoints import EndpointManager
from orch.overlay.links import LinkInfo, OverlayDevices, VethPlug
from orch.overlay.peers import PeerChanges, PeerEntry, PeerTable
from orch.overlay.settings import NetworkSettings
from orch.overlay.vxlan import OverlayDriver, OverlayNetwork

FRONT = OverlayNetwork.parse("front", 4097, "10.10.0.0/24", "10.10.0.1")
B = PeerEntry("10.10.0.3", "02:42:0a:0a:00:03", "192.0.2.20", "b")


class FakeOverlayNet:
    """OverlayNet in memory. ``gate`` (if set) holds every delete of a vxlan device."""

    def __init__(self) -> None:
        self.netns: set[str] = set()
        self.links: dict[str, LinkInfo] = {}
        self.entries: dict[str, PeerTable] = {}
        self.writes: list[PeerChanges] = []
        self.gate: asyncio.Event | None = None
        self.deleting = asyncio.Event()
        self._index = 1

    async def create_netns(self, name: str) -> str:
        self.netns.add(name)
        return name

    async def delete_netns(self, name: str) -> bool:
        existed = name in self.netns
        self.netns.discard(name)
        return existed

    def list_netns(self, prefix: str) -> list[str]:
        return sorted(n for n in self.netns if n.startswith(prefix))

    def netns_exists(self, name: str) -> bool:
        return name in self.netns

    async def list_links(self) -> list[LinkInfo]:
        return list(self.links.values())

    def _add(self, name: str, kind: str, master: int | None = None) -> None:
        self._index += 1
        self.links[name] = LinkInfo(name, kind, self._index, master)

    async def ensure_bridge(self, name: str, address: ipaddress.IPv4Interface, mtu: int) -> None:
        self.links.get(name) or self._add(name, "bridge")

    async def delete_link(self, name: str) -> bool:
        if self.gate is not None and self.links.get(name, LinkInfo("", "", 0)).kind == "vxlan":
            self.deleting.set()
            await self.gate.wait()
        self.entries.pop(name, None)
        return self.links.pop(name, None) is not None

    async def plug_veth(self, plug: VethPlug) -> None:
        assert plug.netns in self.netns
        bridge = self.links[plug.master or ""]  # KeyError: plugged into a missing bridge
        self._add(plug.host_ifname, "veth", bridge.index)

    async def ensure_overlay(self, devices: OverlayDevices) -> bool:
        self.links.get(devices.bridge) or self._add(devices.bridge, "bridge")
        made = devices.vxlan not in self.links
        if made:
            self._add(devices.vxlan, "vxlan", self.links[devices.bridge].index)
            self.entries[devices.vxlan] = PeerTable()
        return made

    async def read_peers(self, vxlan: str) -> PeerTable:
        return self.entries.get(vxlan, PeerTable())

    async def write_peers(self, vxlan: str, changes: PeerChanges) -> None:
        table = self.entries[vxlan]
        fdb, neigh = dict(table.fdb), dict(table.neigh)
        for mac in changes.fdb_del:
            fdb.pop(mac)
        for ip in changes.neigh_del:
            neigh.pop(ip)
        fdb.update(changes.fdb_set)
        neigh.update(changes.neigh_set)
        self.entries[vxlan] = PeerTable(fdb, neigh)
        self.writes.append(changes)


@pytest.fixture
def fake() -> FakeOverlayNet:
    return FakeOverlayNet()


@pytest.fixture
def settings(tmp_path: Path) -> NetworkSettings:
    return NetworkSettings(prefix="orchu", state_dir=tmp_path, host_address="192.0.2.10")


@pytest.fixture
def mgr(settings: NetworkSettings, fake: FakeOverlayNet) -> tuple[EndpointManager, OverlayDriver]:
    manager = EndpointManager(settings, net=fake)
    driver = OverlayDriver(settings, fake, FRONT)
    manager.register_driver(driver)
    return manager, driver


async def test_peers_wait_for_the_devices_and_repeats_write_nothing(mgr, fake) -> None:
    manager, driver = mgr
    assert await driver.set_peers([B]) == PeerChanges()  # no devices yet: kept only
    assert fake.writes == [] and driver.vxlan not in fake.links
    await manager.setup("a", ["front"], addresses={"front": "10.10.0.2"})
    assert dict(fake.entries[driver.vxlan].fdb) == {B.mac: B.node_addr}
    assert len(fake.writes) == 1
    assert await driver.set_peers([B]) == PeerChanges()
    assert len(fake.writes) == 1  # a repeated set costs no kernel write
    local = PeerEntry("10.10.0.9", "02:42:0a:0a:00:09", "192.0.2.10")  # this node: skipped
    await driver.set_peers([B, local])
    assert len(fake.writes) == 1


async def test_devices_stay_while_used_and_go_with_the_last_endpoint(mgr, fake) -> None:
    manager, driver = mgr
    await manager.setup("a", ["front"], addresses={"front": "10.10.0.2"})
    await manager.setup("b", ["front", "bridge"], addresses={"front": "10.10.0.3"})
    assert await driver.remove_if_unused(lambda: manager.in_use("front")) is False
    await manager.teardown("a")
    assert {driver.bridge, driver.vxlan} <= set(fake.links)
    await manager.teardown("b")
    assert {driver.bridge, driver.vxlan}.isdisjoint(fake.links)
    assert manager.settings.bridge in fake.links  # the local bridge network is not idle-removed


async def test_a_setup_racing_the_last_teardown_gets_fresh_devices(mgr, fake) -> None:
    manager, driver = mgr
    await driver.set_peers([B])
    await manager.setup("a", ["front"], addresses={"front": "10.10.0.2"})
    fake.gate = asyncio.Event()
    teardown = asyncio.create_task(manager.teardown("a"))
    await fake.deleting.wait()  # the teardown decided "unused" and is deleting devices
    setup = asyncio.create_task(manager.setup("c", ["front"], addresses={"front": "10.10.0.4"}))
    # The setup waits for the teardown's deletion (the driver's lock), however many turns
    # the loop gives it: watched for a while, not after a single yield.
    await always(lambda: not setup.done(), 0.2, "the setup waiting for the teardown")
    fake.gate.set()
    await teardown
    info = await setup
    # The devices were made again for "c", which sits on the new bridge with its peers.
    bridge = fake.links[driver.bridge]
    assert fake.links[info.attachments[0].host_ifname].master == bridge.index
    assert dict(fake.entries[driver.vxlan].fdb) == {B.mac: B.node_addr}


async def test_retired_network_is_dropped_with_its_last_endpoint(mgr, fake) -> None:
    manager, driver = mgr
    await manager.setup("a", ["front"], addresses={"front": "10.10.0.2"})
    assert await manager.retire_driver("front") is False
    assert manager.drivers["front"] is driver
    await manager.teardown("a")
    assert "front" not in manager.drivers
    assert {driver.bridge, driver.vxlan}.isdisjoint(fake.links)
    # Registering the network again (it came back) cancels a pending retirement.
    again = OverlayDriver(manager.settings, fake, FRONT)
    manager.register_driver(again)
    await manager.setup("b", ["front"], addresses={"front": "10.10.0.3"})
    assert await manager.retire_driver("front") is False
    manager.register_driver(again)
    await manager.teardown("b")
    assert manager.drivers["front"] is again


def test_device_names_follow_the_vni(settings: NetworkSettings, fake) -> None:
    driver = OverlayDriver(settings, fake, FRONT)
    assert driver.bridge == names.overlay_bridge_name("orchu", 4097)
    assert driver.vxlan == names.overlay_vxlan_name("orchu", 4097)
    devices = driver.devices()
    assert (devices.vni, str(devices.local), str(devices.gateway), devices.mtu, devices.port) == (
        4097, "192.0.2.10", "10.10.0.1/24", 1450, 4789,
    )  # fmt: skip
