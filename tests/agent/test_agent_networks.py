"""The agent's network side: Assignments.networks -> overlay drivers and peers, a task's
networks/addresses/ports -> its endpoint.

Pure helpers are tested on protobufs; the wiring on two real netns "hosts" joined by a
veth, with the messages a dispatcher sends, checked by ping and iproute2.
"""

from __future__ import annotations

import pytest
from agent_helpers import AgentHost, needs_netns, run_ok

from orch import model
from orch.agent.containers import cluster_attachments, ports_of, setup_endpoint
from orch.agent.networks import overlay_of, peers_of
from orch.errors import NetworkError
from orch.overlay import netns as ns
from orch.overlay.ports import PortMapping
from orch.proto import dispatcher_pb2, objects_pb2, specs_pb2

FRONT = objects_pb2.Network(
    id="n1",
    spec=specs_pb2.NetworkSpec(name="front", driver="overlay"),
    vni=4097,
    subnet="10.10.0.0/24",
    gateway="10.10.0.1",
)


def task(task_id: str, *networks: str, addresses: dict[str, str] | None = None,
         ports: list[specs_pb2.PortConfig] | None = None) -> objects_pb2.Task:  # fmt: skip
    """A task as the manager sends it: networks in order, the allocator's attachments."""
    return objects_pb2.Task(
        id=task_id,
        networks=[specs_pb2.NetworkAttachmentConfig(target=n) for n in networks],
        attachments=[
            objects_pb2.NetworkAttachment(
                network=net, addresses=[address], mac=model.mac_for(address)
            )
            for net, address in (addresses or {}).items()
        ],
        ports=ports or [],
    )


def peer(task_id: str, address: str, host: AgentHost) -> dispatcher_pb2.Peer:
    return dispatcher_pb2.Peer(
        task_id=task_id, address=address, mac=model.mac_for(address), node_addr=host.address
    )


def assignments(*peers: dispatcher_pb2.Peer, full: bool = False) -> dispatcher_pb2.Assignments:
    return dispatcher_pb2.Assignments(
        full=full, networks=[dispatcher_pb2.NetworkPeers(network=FRONT, peers=peers)]
    )


# -- pure -------------------------------------------------------------------------------


def test_a_tasks_networks_addresses_and_ports() -> None:
    t = task(
        "t1",
        "front",
        "bridge",
        addresses={"front": "10.10.0.5/24", "bridge": "10.213.0.9/24", "stale": "10.9.0.2/24"},
        ports=[
            specs_pb2.PortConfig(target=80, published=8080),
            specs_pb2.PortConfig(target=53, published=5353, protocol="udp", mode="host"),
            specs_pb2.PortConfig(target=81, published=8081, mode="ingress"),
        ],
    )
    assert model.networks_of(t) == ["front", "bridge"]
    assert model.networks_of(task("t2")) == ["bridge"]
    # Built-in networks' addresses are the agent's to choose; networks the task is not
    # on are ignored.
    assert list(cluster_attachments(t)) == ["front"]
    assert ports_of(t) == [PortMapping(8080, 80, "tcp"), PortMapping(5353, 53, "udp")]


def test_network_and_peers_from_the_dispatcher() -> None:
    net = overlay_of(FRONT)
    assert (net.name, net.vni, str(net.subnet), str(net.gateway)) == (
        "front", 4097, "10.10.0.0/24", "10.10.0.1",
    )  # fmt: skip
    reserved = objects_pb2.Network(spec=specs_pb2.NetworkSpec(name="bridge"), vni=9)
    with pytest.raises(NetworkError, match="reserved"):
        overlay_of(reserved)
    with pytest.raises(NetworkError, match="no VNI"):
        overlay_of(objects_pb2.Network(spec=specs_pb2.NetworkSpec(name="x"), subnet="10.1.0.0/24"))
    (entry,) = peers_of(
        [dispatcher_pb2.Peer(task_id="t", address="10.10.0.7", mac="m", node_addr="n")]
    )
    assert (entry.task_id, entry.address, entry.mac, entry.node_addr) == (
        "t",
        "10.10.0.7",
        "m",
        "n",
    )


# -- on the kernel ----------------------------------------------------------------------


async def fdb(host: AgentHost, vxlan: str) -> set[str]:
    out = await run_ok("bridge", "-n", host.netns, "fdb", "show", "dev", vxlan)
    return {line.split()[0] for line in out.splitlines() if "self" in line.split()}


async def links(host: AgentHost) -> set[str]:
    out = await run_ok("ip", "-n", host.netns, "-o", "link", "show")
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


async def ping(host: AgentHost, task_id: str, address: str) -> bool:
    """One ICMP echo from the task's netns (busybox ping)."""
    netns = host.endpoints.netns_name(task_id)
    rc, _, _ = await ns.exec_in_netns(netns, ["busybox", "ping", "-c1", "-W1", address])
    return rc == 0


@pytest.mark.integration
@needs_netns
async def test_agents_follow_networks_and_peers_from_assignments(two_hosts) -> None:
    h1, h2 = two_hosts
    t1 = task("t1", "front", addresses={"front": "10.10.0.2/24"})
    t2 = task("t2", "front", "bridge", addresses={"front": "10.10.0.3/24"})
    await h1.networks.apply(assignments(peer("t2", "10.10.0.3", h2), full=True))
    await h2.networks.apply(assignments(peer("t1", "10.10.0.2", h1), full=True))
    a = await setup_endpoint(h1.endpoints, t1)
    b = await setup_endpoint(h2.endpoints, t2)
    got = [(x.network, x.address, x.ifname) for x in b.attachments]
    assert got[0] == ("front", "10.10.0.3/24", "eth0")
    assert got[1][0::2] == ("bridge", "eth1")
    assert a.attachments[0].mac == "02:42:0a:0a:00:02"
    assert await ping(h1, "t1", "10.10.0.3")
    assert await ping(h2, "t2", "10.10.0.2")

    driver = h1.networks.drivers["front"]
    # A third task appears on host 2, then goes: host 1's entries follow each message.
    await h1.networks.apply(assignments(peer("t2", "10.10.0.3", h2), peer("t3", "10.10.0.4", h2)))
    assert await fdb(h1, driver.vxlan) == {"02:42:0a:0a:00:03", "02:42:0a:0a:00:04"}
    await h1.networks.apply(assignments(peer("t2", "10.10.0.3", h2)))
    assert await fdb(h1, driver.vxlan) == {"02:42:0a:0a:00:03"}

    # Host 1's task leaves: a full set without it and without the network. The devices
    # go with the endpoint (the task's teardown), then the driver is dropped.
    await h1.networks.apply(dispatcher_pb2.Assignments(full=True))
    assert "front" in h1.endpoints.drivers and "front" not in h1.networks.drivers
    assert driver.vxlan in await links(h1)
    await h1.endpoints.teardown("t1")
    assert "front" not in h1.endpoints.drivers
    assert {driver.bridge, driver.vxlan}.isdisjoint(await links(h1))
    # The network comes back with a new task: a fresh driver, devices made on attach.
    await h1.networks.apply(assignments(peer("t2", "10.10.0.3", h2), full=True))
    await setup_endpoint(h1.endpoints, task("t4", "front", addresses={"front": "10.10.0.2/24"}))
    assert await ping(h1, "t4", "10.10.0.3")
    await h1.networks.apply(dispatcher_pb2.Assignments(removed_networks=["front"]))
    await h1.endpoints.teardown("t4")
    assert {driver.bridge, driver.vxlan}.isdisjoint(await links(h1))


@pytest.mark.integration
@needs_netns
async def test_a_bad_network_does_not_stop_the_others(two_hosts) -> None:
    h1, _ = two_hosts
    bad = objects_pb2.Network(spec=specs_pb2.NetworkSpec(name="bad"), subnet="10.1.0.0/24")
    msg = dispatcher_pb2.Assignments(
        full=True,
        networks=[
            dispatcher_pb2.NetworkPeers(network=bad),
            dispatcher_pb2.NetworkPeers(network=FRONT),
        ],
    )
    await h1.networks.apply(msg)
    assert set(h1.networks.drivers) == {"front"}
    with pytest.raises(NetworkError, match="no network named bad"):
        await setup_endpoint(h1.endpoints, task("t1", "bad", addresses={"bad": "10.1.0.2/24"}))
