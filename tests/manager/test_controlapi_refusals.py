"""Hostile or mistaken writes through the real Control API (gRPC) on a MemoryStore: each is
refused with one line naming the field and the limit, and the store is unchanged."""

from __future__ import annotations

import grpc
import pytest

from orch.manager.state.api import Create, Kind
from orch.proto import control_pb2, objects_pb2, specs_pb2

from .conftest import Api


def service(name: str = "web", ports: tuple[int, ...] = ()) -> specs_pb2.ServiceSpec:
    spec = specs_pb2.ServiceSpec(name=name, replicas=1)
    spec.container.image = "busybox"
    for port in ports:
        spec.ports.add(published=port, target=80)
    return spec


async def refused(api: Api, call: object) -> str:
    """The one-line INVALID_ARGUMENT message of ``call``, checking nothing was written."""
    before = await api.store.revision()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await api.store.revision() == before
    return caught.value.details()


async def test_scale_beyond_the_bound_is_refused(api: Api) -> None:
    await api.stub.Apply(control_pb2.ApplyRequest(services=[service()]))
    request = control_pb2.ScaleRequest(replicas={"web": 2**64 - 1})
    assert await refused(api, api.stub.Scale(request)) == (
        f"replicas.web: expected at most 10000 replicas, got {2**64 - 1}"
    )
    ok = await api.stub.Scale(control_pb2.ScaleRequest(replicas={"web": 10_000}))
    assert [c.name for c in ok.changes] == ["web"]


async def test_scale_with_a_bad_name_is_refused_before_any_read(api: Api) -> None:
    request = control_pb2.ScaleRequest(replicas={"x" * 100_000: 1})
    assert await refused(api, api.stub.Scale(request)) == (
        "service name: 100000 characters, at most 63 allowed"
    )


async def test_an_oversized_apply_is_refused(api: Api) -> None:
    spec = service()
    spec.container.env.append("K=" + "v" * 200_000)
    message = await refused(api, api.stub.Apply(control_pb2.ApplyRequest(services=[spec])))
    assert message == "services[0] (web): spec.env: 200002 bytes, at most 131072 allowed"


async def add_hosts(api: Api) -> None:
    """A manager serving on 7700 and a node at 10.0.0.5, as their presence records say."""
    node = objects_pb2.Node(
        id="n1", description=objects_pb2.NodeDescription(hostname="h1", addr="10.0.0.5")
    )
    manager = objects_pb2.ManagerInfo(id="m1", addr="10.0.0.9:7700")
    revision = await api.store.commit([Create(Kind.NODE, node), Create(Kind.MANAGER, manager)])
    await api.view.wait_for(revision)


@pytest.mark.parametrize(
    ("port", "why"),
    [
        (22, "reserved on every node (the manager's reserved_ports)"),
        (2379, "reserved on every node (the manager's reserved_ports)"),
        (7700, "the port manager m1 serves on"),
    ],
)
async def test_publishing_a_reserved_host_port_is_refused(api: Api, port: int, why: str) -> None:
    await add_hosts(api)
    request = control_pb2.ApplyRequest(services=[service("ok"), service("web", ports=(8080, port))])
    assert await refused(api, api.stub.Apply(request)) == (
        f"services[1] (web): spec.ports[1].published: host port {port} is reserved: {why} "
        "(accepted: another port)"
    )
    dry = control_pb2.ApplyRequest(services=[service("web", ports=(port,))], dry_run=True)
    assert "is reserved" in await refused(api, api.stub.Apply(dry))


@pytest.mark.parametrize(
    ("subnet", "what"),
    [
        ("10.0.0.0/24", "the address of node h1 (10.0.0.5/32)"),
        ("10.0.0.8/29", "the address of manager m1 (10.0.0.9/32)"),
        ("10.213.5.0/24", "the agents' bridge subnet (10.213.0.0/16)"),
        ("10.0.0.0/8", "the agents' bridge subnet (10.213.0.0/16)"),
    ],
)
async def test_a_subnet_over_host_addresses_or_the_bridge_is_refused(
    api: Api, subnet: str, what: str
) -> None:
    await add_hosts(api)
    network = specs_pb2.NetworkSpec(name="front", subnet=subnet)
    message = await refused(api, api.stub.Apply(control_pb2.ApplyRequest(networks=[network])))
    assert f"networks[0] (front): subnet {subnet} overlaps {what}" in message.splitlines()


async def test_the_pool_skips_host_addresses(api: Api) -> None:
    node = objects_pb2.Node(id="n1", description=objects_pb2.NodeDescription(addr="10.10.0.7"))
    await api.view.wait_for(await api.store.commit([Create(Kind.NODE, node)]))
    await api.stub.Apply(control_pb2.ApplyRequest(networks=[specs_pb2.NetworkSpec(name="a")]))
    info = await api.stub.GetNetwork(control_pb2.GetNetworkRequest(name="a"))
    assert info.network.subnet == "10.10.1.0/24"


async def test_two_new_networks_of_one_apply_may_not_overlap(api: Api) -> None:
    """Checked by the manager, not only by the CLI's loader: any client reaches Apply."""
    nets = [
        specs_pb2.NetworkSpec(name="a", subnet="10.20.0.0/16"),
        specs_pb2.NetworkSpec(name="b", subnet="10.20.1.0/24"),
    ]
    message = await refused(api, api.stub.Apply(control_pb2.ApplyRequest(networks=nets)))
    assert message == (
        "networks[1] (b): subnet 10.20.1.0/24 overlaps network 'a' of this request (10.20.0.0/16)"
    )


async def test_a_rollback_to_a_port_reserved_since_is_refused(api: Api) -> None:
    await api.stub.Apply(control_pb2.ApplyRequest(services=[service(ports=(7700,))]))
    await api.stub.Apply(control_pb2.ApplyRequest(services=[service(ports=(8080,))]))
    await add_hosts(api)  # a manager now serves on 7700
    message = await refused(api, api.stub.Rollback(control_pb2.RollbackRequest(name="web")))
    assert message == (
        "services[0] (web): spec.ports[0].published: host port 7700 is reserved: "
        "the port manager m1 serves on (accepted: another port)"
    )
