"""The store, the cluster view and the election against a real etcd server (what only etcd
shows: its JSON values, raw fence keys, the view and election on it). The guards of every
write run on both stores in test_store_contract.py."""

from __future__ import annotations

import asyncio

import pytest
from tests_support import always

from orch import model
from orch.errors import ConflictError
from orch.manager.state.api import Create, Delete, Fence, Kind
from orch.manager.state.election import LEADER_KEY, Election, ElectionSettings
from orch.manager.state.view import ClusterView
from orch.proto import objects_pb2, specs_pb2

pytestmark = pytest.mark.integration


def service(name: str, replicas: int = 1) -> objects_pb2.Service:
    return objects_pb2.Service(
        id=model.new_id(),
        meta=objects_pb2.Meta(version=1),
        spec=specs_pb2.ServiceSpec(name=name, replicas=replicas),
    )


async def test_values_are_protobuf_json_readable_by_a_person(store) -> None:
    await store.commit([Create(Kind.SERVICE, service("web", 3))])
    resp = await store.client.kv.get("/orch/v1/services/web")
    text = resp.kvs[0].value.decode()
    assert '"name": "web"' in text and '"replicas": "3"' in text


async def test_fence_blocks_writes_of_a_deposed_leader(store) -> None:
    await store.client.kv.put(LEADER_KEY, "m2")
    with pytest.raises(ConflictError):
        await store.commit([Create(Kind.SERVICE, service("x"))], fence=Fence(LEADER_KEY, b"m1"))
    assert await store.get(Kind.SERVICE, "x") is None
    await store.commit([Create(Kind.SERVICE, service("x"))], fence=Fence(LEADER_KEY, b"m2"))


async def test_view_follows_writes_and_deletes(store) -> None:
    view = ClusterView(store)
    runner = asyncio.create_task(view.run())
    try:
        await asyncio.wait_for(view.ready(), 5)
        queue = view.subscribe(Kind.SERVICE)
        rev = await store.commit([Create(Kind.SERVICE, service("web"))])
        await view.wait_for(rev)
        assert view.get(Kind.SERVICE, "web").obj.spec.name == "web"
        batch = await asyncio.wait_for(queue.get(), 5)
        assert [e.key for e in batch] == ["/orch/v1/services/web"]
        current = view.get(Kind.SERVICE, "web")
        rev = await store.commit([Delete(Kind.SERVICE, current.key, current.mod_revision)])
        await view.wait_for(rev)
        assert view.get(Kind.SERVICE, "web") is None
    finally:
        runner.cancel()


async def test_one_leader_and_a_standby_takes_over(store) -> None:
    settings = ElectionSettings(lease_ttl=2, keepalive_interval=0.3)
    leading: list[str] = []
    started = {name: asyncio.Event() for name in ("m1", "m2")}

    def lead_as(name: str):
        async def lead() -> None:
            leading.append(name)
            started[name].set()
            await asyncio.Event().wait()  # lead until cancelled

        return lead

    e1, e2 = Election(store, "m1", settings), Election(store, "m2", settings)
    t1 = asyncio.create_task(e1.run(lead_as("m1")))
    await asyncio.wait_for(started["m1"].wait(), 5)
    t2 = asyncio.create_task(e2.run(lead_as("m2")))
    try:
        # m2 campaigns and must not lead while m1 does: watched for longer than a lease TTL
        # (so m1's keep-alives are what keep it leader), not checked once.
        async def m1_alone() -> bool:
            return not started["m2"].is_set() and await e2.leader() == "m1"

        await always(m1_alone, settings.lease_ttl + 0.5, "m1 alone leading", interval=0.05)
        t1.cancel()  # m1 dies: its lease is revoked on the way out
        await asyncio.wait_for(started["m2"].wait(), 5)
        assert leading == ["m1", "m2"]
        assert await e2.leader() == "m2"
    finally:
        t1.cancel()
        t2.cancel()
