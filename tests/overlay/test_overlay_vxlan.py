"""VXLAN overlays on the real kernel: two or three netns "hosts" on a test switch.

Each host runs its own EndpointManager (working in the host's netns, as an agent inside
it does), with overlay drivers registered as agent/networks.py would. Containers are
named netns; reachability is checked with ping, kernel state with iproute2 (``bridge fdb``,
``ip neigh``, ``ip -d link``), which is not our code.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from overlay_helpers import (
    Host,
    fdb_of,
    fetch,
    http_server,
    link_names,
    needs_netns,
    neigh_of,
    ping,
    run_ok,
)

from orch import model
from orch.errors import NetworkError
from orch.overlay import netns as ns
from orch.overlay.endpoints import EndpointManager
from orch.overlay.peers import PeerChanges, PeerEntry
from orch.overlay.vxlan import OverlayNetwork

pytestmark = [pytest.mark.integration, needs_netns]

FRONT = OverlayNetwork.parse("front", 4097, "10.10.0.0/24", "10.10.0.1")
# Same subnet on purpose: only the VNI and the peer entries keep the two apart.
BACK = OverlayNetwork.parse("back", 4098, "10.10.0.0/24")


def peer(task: str, address: str, host: Host) -> PeerEntry:
    return PeerEntry(address, model.mac_for(address), host.address, task)


async def test_endpoints_on_two_hosts_reach_each_other_and_other_networks_do_not(
    underlay,
) -> None:
    h1, h2 = await underlay(2)
    front1, front2 = h1.join(FRONT), h2.join(FRONT)
    back1, back2 = h1.join(BACK), h2.join(BACK)
    await front1.set_peers([peer("b", "10.10.0.3", h2)])
    await front2.set_peers([peer("a", "10.10.0.2", h1)])
    await back1.set_peers([peer("d", "10.10.0.21", h2)])
    await back2.set_peers([peer("c", "10.10.0.20", h1)])

    a = await h1.manager.setup("a", ["front"], addresses={"front": "10.10.0.2/24"})
    await h2.manager.setup("b", ["front"], addresses={"front": "10.10.0.3/24"})
    c = await h1.manager.setup("c", ["back"], addresses={"back": "10.10.0.20/24"})
    await h2.manager.setup("d", ["back"], addresses={"back": "10.10.0.21/24"})
    (att,) = a.attachments
    assert (att.network, att.address, att.mac, att.gateway, att.ifname) == (
        "front", "10.10.0.2/24", "02:42:0a:0a:00:02", "10.10.0.1", "eth0",
    )  # fmt: skip

    assert await ping(h1.manager.netns_name("a"), "10.10.0.3")  # across hosts
    assert await ping(h2.manager.netns_name("b"), "10.10.0.2")
    assert await ping(h1.manager.netns_name("c"), "10.10.0.21")  # back works too
    assert not await ping(h1.manager.netns_name("c"), "10.10.0.3")  # front, other host
    assert not await ping(h1.manager.netns_name("c"), "10.10.0.2")  # front, same host
    assert not await ping(h2.manager.netns_name("b"), c.attachments[0].ip)

    # The devices, as iproute2 sees them.
    details = await run_ok("ip", "-n", h1.netns, "-d", "link", "show", front1.vxlan)
    for word in ("vxlan id 4097", "local 10.99.0.1", "dev ul", "dstport 4789", "nolearning",
                 "proxy", "mtu 1450", f"master {front1.bridge}", "state UNKNOWN"):  # fmt: skip
        assert word in details, (word, details)
    bridge = await run_ok("ip", "-n", h1.netns, "-d", "addr", "show", front1.bridge)
    assert "mtu 1450" in bridge and "inet 10.10.0.1/24" in bridge
    inside = await run_ok("ip", "-n", h1.manager.netns_name("a"), "route")
    assert "default" not in inside
    assert await fdb_of(h1.netns, front1.vxlan) == {"02:42:0a:0a:00:03": "10.99.0.2"}
    assert await neigh_of(h1.netns, front1.vxlan) == {"10.10.0.3": "02:42:0a:0a:00:03"}
    assert await fdb_of(h1.netns, back1.vxlan) == {"02:42:0a:0a:00:15": "10.99.0.2"}


async def test_peer_changes_follow_and_repeats_write_nothing(underlay) -> None:
    h1, h2, h3 = await underlay(3)
    drivers = {h: h.join(FRONT) for h in (h1, h2, h3)}
    a = peer("a", "10.10.0.2", h1)
    b = peer("b", "10.10.0.3", h2)
    c = peer("c", "10.10.0.4", h3)
    await drivers[h1].set_peers([b, c])
    await drivers[h2].set_peers([a, c])
    await drivers[h3].set_peers([a, b])
    for host, eid, address in ((h1, "a", a), (h2, "b", b), (h3, "c", c)):
        await host.manager.setup(eid, ["front"], addresses={"front": address.address})
    assert await ping(h1.manager.netns_name("a"), "10.10.0.4")
    assert await ping(h1.manager.netns_name("a"), "10.10.0.3")
    vx = drivers[h1].vxlan
    assert await fdb_of(h1.netns, vx) == {b.mac: h2.address, c.mac: h3.address}

    assert await drivers[h1].set_peers([b, c]) == PeerChanges()  # nothing to write
    changes = await drivers[h1].set_peers([b])  # c left (scaled down)
    assert changes == PeerChanges(fdb_del=(c.mac,), neigh_del=(c.address,))
    assert await fdb_of(h1.netns, vx) == {b.mac: h2.address}
    assert await neigh_of(h1.netns, vx) == {b.address: b.mac}
    assert not await ping(h1.manager.netns_name("a"), "10.10.0.4")
    assert await ping(h1.manager.netns_name("a"), "10.10.0.3")

    # An address that moved to another node: the entry is replaced, not duplicated.
    await h2.manager.teardown("b")
    moved = peer("b2", "10.10.0.3", h3)
    await h3.manager.setup("b2", ["front"], addresses={"front": "10.10.0.3"})
    await drivers[h3].set_peers([a])
    await drivers[h1].set_peers([moved])
    assert await fdb_of(h1.netns, vx) == {moved.mac: h3.address}
    assert await ping(h1.manager.netns_name("a"), "10.10.0.3")


async def test_last_endpoint_takes_the_devices_and_the_next_brings_them_back(
    underlay,
) -> None:
    h1, h2 = await underlay(2)
    front1, front2 = h1.join(FRONT), h2.join(FRONT)
    back1 = h1.join(BACK)
    await front1.set_peers([peer("b", "10.10.0.3", h2)])
    await front2.set_peers([peer("a", "10.10.0.2", h1), peer("a2", "10.10.0.5", h1)])
    await h2.manager.setup("b", ["front"], addresses={"front": "10.10.0.3"})
    await h1.manager.setup("a", ["front"], addresses={"front": "10.10.0.2"})
    await h1.manager.setup("a2", ["front"], addresses={"front": "10.10.0.5"})
    await h1.manager.setup("c", ["back"], addresses={"back": "10.10.0.20"})
    overlay = {front1.bridge, front1.vxlan, back1.bridge, back1.vxlan}
    assert overlay <= await link_names(h1.netns)

    await h1.manager.teardown("a")
    assert overlay <= await link_names(h1.netns)  # a2 still uses front
    await h1.manager.teardown("a2")
    assert {front1.bridge, front1.vxlan}.isdisjoint(await link_names(h1.netns))
    assert {back1.bridge, back1.vxlan} <= await link_names(h1.netns)  # c still on back
    assert not h1.manager.in_use("front")

    # The driver kept the peer set: a new first endpoint finds its peers programmed.
    await h1.manager.setup("a3", ["front"], addresses={"front": "10.10.0.2"})
    assert await fdb_of(h1.netns, front1.vxlan) == {"02:42:0a:0a:00:03": "10.99.0.2"}
    assert await ping(h1.manager.netns_name("a3"), "10.10.0.3")

    # The network leaves the node while an endpoint still uses it: the driver goes with
    # the endpoint, not before.
    assert await h1.manager.retire_driver("front") is False
    assert "front" in h1.manager.drivers
    await h1.manager.teardown("a3")
    assert "front" not in h1.manager.drivers
    assert {front1.bridge, front1.vxlan}.isdisjoint(await link_names(h1.netns))
    await h1.manager.teardown("c")
    assert await h1.manager.retire_driver("back") is True
    assert await link_names(h1.netns) == {"lo", "ul"}


async def test_several_networks_per_endpoint_in_task_order(underlay) -> None:
    (h1,) = await underlay(1)
    h1.join(FRONT)
    other = OverlayNetwork.parse("other", 4099, "10.30.0.0/24", "10.30.0.1")
    h1.join(other)
    info = await h1.manager.setup(
        "multi",
        ["other", "bridge", "front"],
        addresses={"front": "10.10.0.9/24", "other": "10.30.0.9/24"},
        macs={"front": "02:42:0a:0a:00:99"},
    )
    got = [(a.ifname, a.network, a.address, a.mac) for a in info.attachments]
    assert got[0] == ("eth0", "other", "10.30.0.9/24", "02:42:0a:1e:00:09")
    assert got[1][:2] == ("eth1", "bridge")
    assert got[2] == ("eth2", "front", "10.10.0.9/24", "02:42:0a:0a:00:99")
    inside = await run_ok("ip", "-n", h1.manager.netns_name("multi"), "-br", "addr")
    assert "10.30.0.9/24" in inside and "10.10.0.9/24" in inside
    mtu = await run_ok("ip", "-n", h1.manager.netns_name("multi"), "link", "show", "eth2")
    assert "mtu 1450" in mtu
    assert await ping(h1.manager.netns_name("multi"), "10.10.0.1")  # the local gateway
    record = h1.manager.records()["multi"]
    assert set(record.host_ifnames) == {"other", "bridge", "front"}

    # After a restart (new manager, drivers registered again) the endpoint is adopted.
    restarted = EndpointManager(h1.settings)
    for net in (FRONT, other):
        Host(h1.netns, h1.address, h1.settings, restarted).join(net)
    assert await restarted.adopt("multi") == info
    await restarted.teardown("multi")
    assert await link_names(h1.netns) == {"lo", "ul", h1.settings.bridge}
    assert ns.list_netns(h1.settings.prefix + "-") == []


async def test_overlay_needs_an_address_inside_its_subnet(underlay) -> None:
    (h1,) = await underlay(1)
    h1.join(FRONT)
    with pytest.raises(NetworkError, match="no address given"):
        await h1.manager.setup("x", ["front"])
    with pytest.raises(NetworkError, match=r"outside 10\.10\.0\.0/24"):
        await h1.manager.setup("x", ["front"], addresses={"front": "10.20.0.2/24"})
    assert ns.list_netns(h1.settings.prefix + "-") == []
    assert h1.manager.records() == {}


async def test_restarted_driver_reads_entries_back_before_writing(underlay) -> None:
    h1, h2 = await underlay(2)
    first = h1.join(FRONT)
    stale, kept = peer("s", "10.10.0.7", h2), peer("k", "10.10.0.8", h2)
    await first.set_peers([stale, kept])
    await h1.manager.setup("a", ["front"], addresses={"front": "10.10.0.2"})
    # The agent restarts: a fresh manager and driver that wrote nothing yet.
    restarted = EndpointManager(h1.settings)
    again = Host(h1.netns, h1.address, h1.settings, restarted).join(FRONT)
    assert await restarted.adopt("a") is not None
    changes = await again.set_peers([kept])
    assert changes == PeerChanges(fdb_del=(stale.mac,), neigh_del=(stale.address,))
    assert await fdb_of(h1.netns, again.vxlan) == {kept.mac: h2.address}


async def test_sweep_and_remove_all_take_overlay_devices(underlay) -> None:
    (h1,) = await underlay(1)
    driver = h1.join(FRONT)
    await h1.manager.setup("a", ["front"], addresses={"front": "10.10.0.2"})
    # Crashed, and its state is gone: a fresh manager knows no driver and no record.
    fresh = EndpointManager(replace(h1.settings, state_dir=h1.settings.state_dir / "new"))
    report = await fresh.sweep()
    assert report.errors == ()
    assert {driver.bridge, driver.vxlan} <= set(report.links)
    assert await link_names(h1.netns) == {"lo", "ul"}

    await h1.manager.teardown("a")  # its record still named the old veth: safe
    h1.join(FRONT)
    await h1.manager.setup("b", ["front"], addresses={"front": "10.10.0.3"})
    await h1.manager.remove_all()
    assert await link_names(h1.netns) == {"lo", "ul"}
    assert ns.list_netns(h1.settings.prefix + "-") == []


async def test_remove_all_without_the_drivers_takes_recorded_overlay_endpoints(underlay) -> None:
    """The local cluster's `down` after the agent stopped (its containers live on): a
    fresh manager on the same state knows the endpoints' records but no overlay driver
    (those come from the session). The endpoints, their veths and the overlay devices
    must all go, without errors."""
    (h1,) = await underlay(1)
    h1.join(FRONT)
    await h1.manager.setup("a", ["front"], addresses={"front": "10.10.0.2"})
    await h1.manager.setup("b", ["front"], addresses={"front": "10.10.0.3"})
    stopped_agent_state = EndpointManager(h1.settings)
    await stopped_agent_state.remove_all()
    assert await link_names(h1.netns) == {"lo", "ul"}
    assert ns.list_netns(h1.settings.prefix + "-") == []
    assert stopped_agent_state.records() == {}


async def test_tcp_across_hosts_with_full_size_segments(underlay, tmp_path: Path) -> None:
    """A page (large enough for full 1450-byte frames) fetched over the overlay from
    two other hosts' containers; a client on another network gets nothing."""
    h1, h2, h3 = await underlay(3)
    webs = {h1: ("web1", "10.10.0.2"), h2: ("web2", "10.10.0.3")}
    client = ("client", "10.10.0.9")
    everyone = [peer(eid, address, host) for host, (eid, address) in webs.items()]
    everyone.append(peer(client[0], client[1], h3))
    for host in (h1, h2, h3):
        await host.join(FRONT).set_peers(everyone)
    h3.join(BACK)
    for host, (eid, address) in webs.items():
        await host.manager.setup(eid, ["front"], addresses={"front": address})
    await h3.manager.setup(client[0], ["front"], addresses={"front": client[1]})
    await h3.manager.setup("other", ["back"], addresses={"back": "10.10.0.30"})
    page = "x" * 200_000
    (tmp_path / "hello.txt").write_text(page)
    async with (
        http_server(h1.manager.netns_name("web1"), tmp_path),
        http_server(h2.manager.netns_name("web2"), tmp_path),
    ):
        for _, address in webs.values():
            assert (
                await fetch(h3.manager.netns_name("client"), f"http://{address}/hello.txt") == page
            )
            assert (
                await fetch(h3.manager.netns_name("other"), f"http://{address}/hello.txt") is None
            )
