"""Networks through the real Control API (gRPC) on a MemoryStore: creation with VNI, subnet
and claims, uniqueness under concurrent applies, immutability, removal rules, listings,
and the published-port checks of an apply."""

from __future__ import annotations

import asyncio
import ipaddress

import grpc
import pytest

from orch.manager.state.api import Create, Delete, Kind, Store
from orch.proto import control_pb2, objects_pb2, specs_pb2

from .conftest import Api


def net(name: str, subnet: str = "", **labels: str) -> specs_pb2.NetworkSpec:
    return specs_pb2.NetworkSpec(name=name, subnet=subnet, labels=labels)


def svc(name: str, *networks: str, ports: tuple[str, ...] = ()) -> specs_pb2.ServiceSpec:
    spec = specs_pb2.ServiceSpec(name=name, replicas=1)
    spec.container.image = "busybox"
    for n in networks:
        spec.networks.add(target=n)
    for p in ports:
        published, target = p.split(":")
        spec.ports.add(published=int(published), target=int(target))
    return spec


async def keys(store: Store, kind: Kind) -> dict[str, objects_pb2.Claim]:
    items, _ = await store.list(kind)
    return {v.key[len(kind.prefix) :]: v.obj for v in items}


async def error_of(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def test_apply_creates_networks_with_vni_subnet_gateway_and_claims(api: Api) -> None:
    response = await api.stub.Apply(
        control_pb2.ApplyRequest(
            networks=[net("front"), net("back", "10.20.0.0/16")],
            services=[svc("web", "front", "back")],
        )
    )
    assert [(c.kind, c.name, c.action) for c in response.changes] == [
        ("network", "front", "create"),
        ("network", "back", "create"),
        ("service", "web", "create"),
    ]
    front = (await api.stub.GetNetwork(control_pb2.GetNetworkRequest(name="front"))).network
    back = (await api.stub.GetNetwork(control_pb2.GetNetworkRequest(name="back"))).network
    assert (front.spec.driver, front.subnet, front.gateway, front.vni) == (
        "overlay",
        "10.10.0.0/24",
        "10.10.0.1",
        4096,
    )
    assert front.spec.subnet == ""  # the spec keeps what the user wrote
    assert (back.subnet, back.gateway, back.vni) == ("10.20.0.0/16", "10.20.0.1", 4097)
    claims = await keys(api.store, Kind.CLAIM)
    assert {k: v.owner for k, v in claims.items()} == {
        "vni/4096": "front",
        "vni/4097": "back",
        "subnet/10.10.0.0/24": "front",
        "subnet/10.20.0.0/16": "back",
    }


async def test_concurrent_applies_get_distinct_vnis_and_subnets(api: Api) -> None:
    async def apply(i: int) -> None:
        await api.stub.Apply(control_pb2.ApplyRequest(networks=[net(f"a{i}"), net(f"b{i}")]))

    await asyncio.gather(*(apply(i) for i in range(6)))
    assert api.store.conflicts > 0, "the applies did not race"  # type: ignore[attr-defined]
    networks = (await api.stub.ListNetworks(control_pb2.ListNetworksRequest())).networks
    assert len(networks) == 12
    vnis = [n.network.vni for n in networks]
    subnets = [ipaddress.IPv4Network(n.network.subnet) for n in networks]
    assert len(set(vnis)) == 12
    assert not any(a.overlaps(b) for i, a in enumerate(subnets) for b in subnets[i + 1 :])
    assert len(await keys(api.store, Kind.CLAIM)) == 24


async def test_networks_are_immutable_but_for_labels(api: Api) -> None:
    await api.stub.Apply(control_pb2.ApplyRequest(networks=[net("front")]))
    err = await error_of(
        api.stub.Apply(control_pb2.ApplyRequest(networks=[net("front", "10.30.0.0/24")]))
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == (
        "networks[0] (front): subnet cannot change (10.10.0.0/24 -> 10.30.0.0/24): networks "
        "are immutable but for labels; remove the network and create it again"
    )
    same = await api.stub.Apply(control_pb2.ApplyRequest(networks=[net("front", "10.10.0.0/24")]))
    assert [c.action for c in same.changes] == ["unchanged"]
    relabel = await api.stub.Apply(control_pb2.ApplyRequest(networks=[net("front", team="a")]))
    assert [(c.action, list(c.fields)) for c in relabel.changes] == [("update", ["labels"])]
    info = await api.stub.GetNetwork(control_pb2.GetNetworkRequest(name="front"))
    assert (info.network.subnet, dict(info.network.spec.labels)) == ("10.10.0.0/24", {"team": "a"})


async def test_a_subnet_overlapping_an_existing_network_is_refused(api: Api) -> None:
    await api.stub.Apply(control_pb2.ApplyRequest(networks=[net("big", "10.10.0.0/20")]))
    err = await error_of(
        api.stub.Apply(control_pb2.ApplyRequest(networks=[net("small", "10.10.5.0/24")]))
    )
    assert err.details() == (
        "networks[0] (small): subnet 10.10.5.0/24 overlaps network 'big' (10.10.0.0/20)"
    )
    # The pool skips what user subnets cover.
    await api.stub.Apply(control_pb2.ApplyRequest(networks=[net("auto")]))
    auto = await api.stub.GetNetwork(control_pb2.GetNetworkRequest(name="auto"))
    assert auto.network.subnet == "10.10.16.0/24"


async def test_remove_is_refused_while_in_use_and_deletes_the_claims(api: Api) -> None:
    await api.stub.Apply(
        control_pb2.ApplyRequest(
            networks=[net("front")], services=[svc("web", "front"), svc("api", "front")]
        )
    )
    err = await error_of(api.stub.RemoveNetwork(control_pb2.RemoveNetworkRequest(name="front")))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.details() == (
        "network front is in use by services api, web; remove them or take the network out "
        "of their specs first"
    )
    for name in ("web", "api"):
        await api.stub.RemoveService(control_pb2.RemoveServiceRequest(name=name))
    # A task of a removed service that still runs holds the network too.
    task = objects_pb2.Task(id="t1", service_name="web")
    task.networks.add(target="front")
    task.status.state = 7  # RUNNING
    revision = await api.store.commit([Create(Kind.TASK, task)])
    await api.view.wait_for(revision)
    err = await error_of(api.stub.RemoveNetwork(control_pb2.RemoveNetworkRequest(name="front")))
    assert err.details() == (
        "network front is still used by 1 stopping task (of web); try again once they are gone"
    )
    current = api.view.get(Kind.TASK, "t1")
    await api.view.wait_for(
        await api.store.commit([Delete(Kind.TASK, current.key, current.mod_revision)])
    )
    await api.stub.RemoveNetwork(control_pb2.RemoveNetworkRequest(name="front"))
    assert await keys(api.store, Kind.NETWORK) == {}
    assert await keys(api.store, Kind.CLAIM) == {}
    err = await error_of(api.stub.GetNetwork(control_pb2.GetNetworkRequest(name="front")))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    # The name and values are free again.
    await api.stub.Apply(control_pb2.ApplyRequest(networks=[net("front")]))
    again = await api.stub.GetNetwork(control_pb2.GetNetworkRequest(name="front"))
    assert (again.network.vni, again.network.subnet) == (4096, "10.10.0.0/24")


async def test_listing_shows_services_and_endpoints(api: Api) -> None:
    await api.stub.Apply(
        control_pb2.ApplyRequest(
            networks=[net("front"), net("back")], services=[svc("web", "front")]
        )
    )
    lease = objects_pb2.AddressLease(network="front", address="10.10.0.2", task_id="x")
    await api.view.wait_for(await api.store.commit([Create(Kind.LEASE, lease)]))
    infos = (await api.stub.ListNetworks(control_pb2.ListNetworksRequest())).networks
    assert [(i.network.spec.name, list(i.services), i.endpoints) for i in infos] == [
        ("back", [], 0),
        ("front", ["web"], 1),
    ]


async def test_ports_are_normalized_and_clashes_across_services_refused(api: Api) -> None:
    err = await error_of(
        api.stub.Apply(
            control_pb2.ApplyRequest(
                services=[svc("web", ports=("8080:80",)), svc("api", ports=("8080:81",))]
            )
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == (
        "services[1] (api): published port 8080/tcp is also published by service 'web' in "
        "this apply"
    )
    await api.stub.Apply(control_pb2.ApplyRequest(services=[svc("web", ports=("8080:80",))]))
    stored = (await api.stub.GetService(control_pb2.GetServiceRequest(name="web"))).service
    assert [(p.protocol, p.mode) for p in stored.spec.ports] == [("tcp", "host")]
    # Sending it again without the defaults is no change.
    again = await api.stub.Apply(
        control_pb2.ApplyRequest(services=[svc("web", ports=("8080:80",))])
    )
    assert [c.action for c in again.changes] == ["unchanged"]
