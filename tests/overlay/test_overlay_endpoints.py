"""EndpointManager on the real kernel: netns, bridge, veths, addresses, pings.

Each test gets its own "host" netns (see conftest.py) in which the manager makes the
bridge and the host ends of veths, so the root namespace is untouched; the containers'
netns are real named netns under /run/netns with the run prefix.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shutil
import sys
from dataclasses import replace

import pytest
from overlay_helpers import needs_netns, ping

from orch.errors import NetworkError
from orch.overlay import netns as ns
from orch.overlay.endpoints import EndpointManager
from orch.overlay.ipam import IpamStore
from orch.overlay.links import KernelNet, VethPlug
from orch.overlay.settings import NetworkSettings

pytestmark = [pytest.mark.integration, needs_netns]


async def links_in(netns_name: str) -> dict[str, str]:
    """Link name -> "state addresses" inside a netns, read with iproute2 (not our code)."""
    rc, out, err = await ns.exec_in_netns(netns_name, ["ip", "-br", "addr"])
    assert rc == 0, err
    result = {}
    for line in out.splitlines():
        name, *rest = line.split()
        result[name.split("@")[0]] = " ".join(rest)
    return result


async def routes_in(netns_name: str) -> str:
    rc, out, err = await ns.exec_in_netns(netns_name, ["ip", "-4", "route"])
    assert rc == 0, err
    return out


def ipam_owners(settings: NetworkSettings) -> set[str]:
    return IpamStore(settings.network_dir / "ipam" / "bridge.json", settings.bridge_subnet).owners()


async def test_two_bridge_endpoints_ping_each_other(
    manager: EndpointManager, settings: NetworkSettings, host_netns: str
) -> None:
    a = await manager.setup("a", ["bridge"])
    b = await manager.setup("b", ["bridge"])
    (att_a,), (att_b,) = a.attachments, b.attachments
    assert a.netns_path == ns.netns_path(manager.netns_name("a"))
    assert (att_a.address, att_a.gateway, att_a.ifname) == ("10.213.7.2/24", "10.213.7.1", "eth0")
    assert att_a.mac == "02:42:0a:d5:07:02"
    inside = await links_in(manager.netns_name("a"))
    assert set(inside) == {"lo", "eth0"}
    assert "10.213.7.2/24" in inside["eth0"] and inside["eth0"].startswith("UP")
    host = await links_in(host_netns)
    assert "10.213.7.1/24" in host[settings.bridge]
    assert {att_a.host_ifname, att_b.host_ifname} <= set(host)
    assert await ping(manager.netns_name("a"), att_b.ip)
    assert await ping(manager.netns_name("b"), att_a.ip)
    assert await ping(manager.netns_name("a"), att_a.gateway)


async def test_no_default_route_unless_enabled(settings: NetworkSettings) -> None:
    closed = EndpointManager(settings)
    info = await closed.setup("closed", ["bridge"])
    routes = await routes_in(closed.netns_name("closed"))
    assert "default" not in routes and "10.213.7.0/24 dev eth0" in routes
    opened = EndpointManager(replace(settings, default_route=True))
    await opened.setup("open", ["bridge"])
    routes = await routes_in(opened.netns_name("open"))
    assert f"default via {info.attachments[0].gateway} dev eth0" in routes


async def test_none_endpoint_has_only_lo(manager: EndpointManager) -> None:
    info = await manager.setup("quiet", ["none"])
    assert info.attachments == () and info.netns_path is not None
    inside = await links_in(manager.netns_name("quiet"))
    assert list(inside) == ["lo"]
    assert "127.0.0.1/8" in inside["lo"]  # lo is up: it has its address


async def test_host_endpoint_has_no_netns(manager: EndpointManager, run_prefix: str) -> None:
    before = ns.list_netns(run_prefix + "-")
    info = await manager.setup("hosty", ["host"])
    assert info.netns_path is None and info.attachments == ()
    assert ns.list_netns(run_prefix + "-") == before


async def test_teardown_leaves_nothing(
    manager: EndpointManager, settings: NetworkSettings, host_netns: str, run_prefix: str
) -> None:
    a = await manager.setup("a", ["bridge"])
    await manager.setup("n", ["none"])
    await manager.teardown("a")
    await manager.teardown("n")
    await manager.teardown("a")  # safe twice
    assert ns.list_netns(run_prefix + "-") == []
    assert set(await links_in(host_netns)) == {"lo", settings.bridge}
    assert a.attachments[0].host_ifname not in await links_in(host_netns)
    assert ipam_owners(settings) == set()
    assert manager.records() == {}


async def test_failed_setup_rolls_back_in_the_kernel(
    manager: EndpointManager, settings: NetworkSettings, run_prefix: str, host_netns: str
) -> None:
    with pytest.raises(NetworkError, match="not usable"):
        await manager.setup("bad", ["bridge"], addresses={"bridge": "10.213.7.1"})  # the gateway
    assert ns.list_netns(run_prefix + "-") == []
    assert set(await links_in(host_netns)) == {"lo", settings.bridge}
    assert ipam_owners(settings) == set() and manager.records() == {}


async def test_concurrent_setups_get_distinct_addresses(manager: EndpointManager) -> None:
    infos = await asyncio.gather(*(manager.setup(f"c{i}", ["bridge"]) for i in range(8)))
    addresses = [i.attachments[0].ip for i in infos]
    assert len(set(addresses)) == 8
    assert all([await ping(manager.netns_name("c0"), ip) for ip in addresses[1:]])


async def test_sweep_removes_leftovers_of_a_crash_that_lost_its_state(
    settings: NetworkSettings, host_netns: str, run_prefix: str, tmp_path
) -> None:
    crashed = EndpointManager(settings)
    a = await crashed.setup("a", ["bridge"])
    await crashed.setup("n", ["none"])
    del crashed  # no teardown: the agent died, and its state dir is gone too
    fresh = EndpointManager(replace(settings, state_dir=tmp_path / "new-state"))
    report = await fresh.sweep()
    assert report.errors == ()
    assert set(report.netns) == {fresh.netns_name("a"), fresh.netns_name("n")}
    assert report.links == (a.attachments[0].host_ifname,)
    assert ns.list_netns(run_prefix + "-") == []
    assert set(await links_in(host_netns)) == {"lo", settings.bridge}
    assert (await fresh.sweep()).netns == ()


async def test_sweep_with_live_set_removes_dead_endpoints(
    settings: NetworkSettings, host_netns: str
) -> None:
    crashed = EndpointManager(settings)
    keep = await crashed.setup("keep", ["bridge"])
    gone = await crashed.setup("gone", ["bridge"])
    del crashed
    restarted = EndpointManager(settings)
    report = await restarted.sweep(live={"keep"})
    assert report.endpoints == ("gone",) and report.errors == ()
    assert not ns.netns_exists(restarted.netns_name("gone"))
    assert gone.attachments[0].host_ifname not in await links_in(host_netns)
    assert ipam_owners(settings) == {"keep"}
    assert await restarted.adopt("keep") == keep


async def test_restart_re_adopts_endpoints(settings: NetworkSettings, host_netns: str) -> None:
    first = EndpointManager(settings)
    a = await first.setup("a", ["bridge"])
    b = await first.setup("b", ["bridge"])
    del first
    second = EndpointManager(settings)
    assert await second.adopt("a") == a
    assert await second.adopt("b") == b
    report = await second.sweep(live={"a", "b"})
    assert (report.endpoints, report.netns, report.links, report.owners) == ((), (), (), ())
    assert await ping(second.netns_name("a"), b.attachments[0].ip)
    c = await second.setup("c", ["bridge"])
    assert c.attachments[0].ip not in {a.attachments[0].ip, b.attachments[0].ip}
    # An endpoint whose veth vanished while the agent was down is not adopted, and its
    # remains are removed so it can be set up afresh.
    await KernelNet(host_netns).delete_link(b.attachments[0].host_ifname)
    assert await second.adopt("b") is None
    assert not ns.netns_exists(second.netns_name("b"))
    assert ipam_owners(settings) == {"a", "c"}
    assert await second.adopt("never") is None


async def test_remove_all_cleans_the_host(
    manager: EndpointManager, settings: NetworkSettings, host_netns: str, run_prefix: str
) -> None:
    await manager.setup("a", ["bridge"])
    await manager.setup("n", ["none"])
    await manager.remove_all()
    assert ns.list_netns(run_prefix + "-") == []
    assert set(await links_in(host_netns)) == {"lo"}
    assert ipam_owners(settings) == set()


async def test_root_namespace_is_untouched(manager: EndpointManager, run_prefix: str) -> None:
    await manager.setup("a", ["bridge"])
    rc, out, _ = await ns.run_ip(["-o", "link"])
    assert rc == 0 and run_prefix not in out


async def test_run_in_netns_enters_only_that_thread(host_netns: str) -> None:
    target = os.stat(ns.netns_path(host_netns)).st_ino
    inside = await ns.run_in_netns(host_netns, lambda: os.stat("/proc/thread-self/ns/net").st_ino)
    assert inside == target
    assert os.stat("/proc/thread-self/ns/net").st_ino != target


async def test_missing_netns_is_a_network_error(run_prefix: str) -> None:
    with pytest.raises(NetworkError, match="does not exist"):
        await ns.exec_in_netns(f"{run_prefix}-nothere", ["true"])
    with pytest.raises(NetworkError, match="does not exist"):
        await ns.run_in_netns(f"{run_prefix}-nothere", lambda: None)
    assert await ns.delete_netns(f"{run_prefix}-nothere") is False


AGENT_IN_ITS_OWN_NETNS = """
import asyncio, json, sys
from pathlib import Path
from orch.overlay import netns as ns
from orch.overlay.endpoints import EndpointManager
from orch.overlay.settings import NetworkSettings

async def main():
    m = EndpointManager(NetworkSettings(prefix=sys.argv[1], state_dir=Path(sys.argv[2])))
    a = await m.setup("a", ["bridge"])
    b = await m.setup("b", ["bridge"])
    rc, _, _ = await ns.exec_in_netns(m.netns_name("a"), sys.argv[3:] + [b.attachments[0].ip])
    _, links, _ = await ns.run_ip(["-o", "link"])
    await m.remove_all()
    print(json.dumps({"ping": rc, "links": links}))

asyncio.run(main())
"""


async def test_agent_running_inside_its_own_netns(
    host_netns: str, run_prefix: str, tmp_path
) -> None:
    """host_netns=None really means "the netns this process runs in" (the next issue's
    agents each run in their own netns, started with nsenter)."""
    ping_argv = (
        ["ping", "-c1", "-W1"] if shutil.which("ping") else ["busybox", "ping", "-c1", "-W1"]
    )
    proc = await asyncio.create_subprocess_exec(
        "nsenter",
        f"--net={ns.netns_path(host_netns)}",
        sys.executable,
        "-c",
        AGENT_IN_ITS_OWN_NETNS,
        run_prefix,
        str(tmp_path / "agent"),
        *ping_argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    result = json.loads(out)
    assert result["ping"] == 0
    assert f"{run_prefix}-br" in result["links"]  # the bridge was in the agent's netns...
    rc, root_links, _ = await ns.run_ip(["-o", "link"])
    assert rc == 0 and run_prefix not in root_links  # ...and never in ours
    assert ns.list_netns(run_prefix + "-") == []


async def test_plug_that_fails_half_way_removes_its_veth(host_netns: str, run_prefix: str) -> None:
    """The veth exists before the container end is configured; a failure there (here: a
    gateway outside the subnet) must take the veth away again, both ends."""
    net = KernelNet(host_netns)
    await net.ensure_bridge(f"{run_prefix}-br", ipaddress.IPv4Interface("10.213.9.1/24"), 1500)
    inner = f"{run_prefix}-inner"
    await net.create_netns(inner)
    plug = VethPlug(
        host_ifname=f"{run_prefix}-vv",
        netns=inner,
        ifname="eth0",
        address=ipaddress.IPv4Interface("10.213.9.2/24"),
        mac="02:42:0a:d5:09:02",
        mtu=1500,
        master=f"{run_prefix}-br",
        gateway=ipaddress.IPv4Address("192.0.2.1"),
    )
    with pytest.raises(NetworkError, match=f"plug {run_prefix}-vv into netns {inner}"):
        await net.plug_veth(plug)
    assert set(await links_in(host_netns)) == {"lo", f"{run_prefix}-br"}
    assert set(await links_in(inner)) == {"lo"}
    await net.plug_veth(replace(plug, gateway=None))  # the names are free again
    assert set(await links_in(inner)) == {"lo", "eth0"}
