"""The allocator loop on a MemoryStore: two allocators (each with its own view, as two
managers have) racing over many tasks on several networks never lease an address twice
(read back from the store), exhaustion keeps a task NEW with the reason, and leases of
ended or deleted tasks are released and reused."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator, Callable

from orch import model
from orch.manager.allocator import ipam
from orch.manager.allocator.loop import AllocatorLoop
from orch.manager.loop import LoopSettings
from orch.manager.state.api import Create, Delete, Kind, Store, Update
from orch.manager.state.memstore import MemoryStore
from orch.manager.state.view import ClusterView
from orch.proto import objects_pb2, specs_pb2
from orch.proto import types_pb2 as T


def network(name: str, subnet: str, vni: int) -> objects_pb2.Network:
    return objects_pb2.Network(
        id=model.new_id(),
        spec=specs_pb2.NetworkSpec(name=name, driver="overlay"),
        vni=vni,
        subnet=subnet,
        gateway=ipam.gateway_of(subnet),
    )


def new_task(*networks: str) -> objects_pb2.Task:
    task = objects_pb2.Task(id=model.new_id(), service_name="svc", desired_state=T.RUNNING)
    task.meta.created_at.CopyFrom(model.timestamp())
    task.status.state = T.NEW
    for name in networks:
        task.networks.add(target=name)
    return task


async def wait_view(view: ClusterView, pred: Callable[[], bool], timeout: float = 20) -> None:
    """Until ``pred()`` holds over the view, re-checked after every batch it applies."""
    queue = view.subscribe()
    try:
        async with asyncio.timeout(timeout):
            while not pred():
                await queue.get()
    finally:
        view.unsubscribe(queue)


@contextlib.asynccontextmanager
async def allocators(stores: list[Store]) -> AsyncIterator[list[ClusterView]]:
    """One view and one allocator loop per store, all running; torn down on exit."""
    views = [ClusterView(s) for s in stores]
    loops = [
        AllocatorLoop(store=s, view=v, fence=lambda: None, settings=LoopSettings(quiet=0.005))
        for s, v in zip(stores, views, strict=True)
    ]
    running = [asyncio.create_task(v.run()) for v in views]
    running += [asyncio.create_task(loop.run()) for loop in loops]
    try:
        for v in views:
            await v.ready()
        yield views
    finally:
        for t in running:
            t.cancel()
        await asyncio.gather(*running, return_exceptions=True)


async def read(store: Store, kind: Kind) -> list:
    items, _ = await store.list(kind)
    return [v.obj for v in items]


def held(tasks: list[objects_pb2.Task]) -> list[tuple[str, str, str]]:
    """(network, address, task id) for every address a live task records."""
    return [
        (a.network, a.addresses[0].split("/")[0], t.id)
        for t in tasks
        if ipam.holds_addresses(t)
        for a in t.attachments
    ]


def assert_consistent(tasks: list[objects_pb2.Task], leases: list) -> None:
    """No address held twice; the leases stored are exactly the addresses tasks hold."""
    addresses = held(tasks)
    pairs = [(n, a) for n, a, _ in addresses]
    assert len(pairs) == len(set(pairs)), "an address is held by two tasks"
    assert sorted(addresses) == sorted((le.network, le.address, le.task_id) for le in leases)


async def test_two_racing_allocators_never_lease_an_address_twice(memstore: MemoryStore) -> None:
    store = memstore
    nets = [network(f"n{i}", f"10.10.{i}.0/24", 4096 + i) for i in range(3)]
    await store.commit([Create(Kind.NETWORK, n) for n in nets])
    shapes = [("n0",), ("n1",), ("n2",), ("n0", "n1"), ("n1", "bridge", "n2"), ("bridge",), ()]
    tasks = [new_task(*shapes[i % len(shapes)]) for i in range(210)]
    async with allocators([store, store]) as views:
        # Tasks arrive in bursts while both allocators run, as the orchestrator makes them.
        for i in range(0, len(tasks), 30):
            await store.commit([Create(Kind.TASK, t) for t in tasks[i : i + 30]])
        await wait_view(
            views[0],
            lambda: (
                all(t.status.state == T.PENDING for t in views[0].objects(Kind.TASK))
                and len(views[0].items(Kind.TASK)) == len(tasks)
            ),
        )
    stored = await read(store, Kind.TASK)
    leases = await read(store, Kind.LEASE)
    assert_consistent(stored, leases)
    by_id = {t.id: t for t in stored}
    for t in tasks:
        got = by_id[t.id]
        overlay = model.cluster_networks(t)
        assert [a.network for a in got.attachments] == overlay
        for a in got.attachments:
            address = a.addresses[0].split("/")[0]
            assert a.mac == model.mac_for(address)
            subnet = ipaddress.IPv4Network(by_name(nets, a.network).subnet)
            assert int(ipaddress.IPv4Address(address)) in ipam.usable_range(subnet)
    assert len(leases) == sum(len(held([t])) for t in stored) == 210
    assert memstore.conflicts > 0, "the allocators did not race"


def by_name(nets: list[objects_pb2.Network], name: str) -> objects_pb2.Network:
    return next(n for n in nets if n.spec.name == name)


async def test_exhaustion_waits_with_the_reason_and_release_lets_the_next_task_in(
    memstore: MemoryStore,
) -> None:
    store = memstore
    await store.commit([Create(Kind.NETWORK, network("tiny", "10.10.9.0/29", 4200))])
    first = [new_task("tiny") for _ in range(5)]
    await store.commit([Create(Kind.TASK, t) for t in first])
    async with allocators([store]) as [view]:

        def states() -> list[int]:
            return [t.status.state for t in view.objects(Kind.TASK)]

        await wait_view(view, lambda: states() == [T.PENDING] * 5)
        late = new_task("tiny")
        await view.wait_for(await store.commit([Create(Kind.TASK, late)]))
        reason = "network tiny: no free address in 10.10.9.0/29 (5 in use)"
        await wait_view(view, lambda: view.get(Kind.TASK, late.id).obj.status.err == reason)
        assert view.get(Kind.TASK, late.id).obj.status.state == T.NEW
        assert view.get(Kind.TASK, late.id).obj.status.message == "waiting for an address"

        # One task ends (its lease is released), one is deleted outright.
        ended = view.get(Kind.TASK, first[0].id)
        task = objects_pb2.Task()
        task.CopyFrom(ended.obj)
        task.status.state = T.SHUTDOWN
        gone = view.get(Kind.TASK, first[1].id)
        await store.commit(
            [
                Update(Kind.TASK, task, ended.mod_revision),
                Delete(Kind.TASK, gone.key, gone.mod_revision),
            ]
        )
        await wait_view(view, lambda: view.get(Kind.TASK, late.id).obj.status.state == T.PENDING)
        await wait_view(view, lambda: len(view.items(Kind.LEASE)) == 4)
        assert view.get(Kind.TASK, late.id).obj.status.err == ""
        freed = {a.addresses[0] for t in (ended.obj, gone.obj) for a in t.attachments}
        assert {a.addresses[0] for a in view.get(Kind.TASK, late.id).obj.attachments} <= freed
    assert_consistent(await read(store, Kind.TASK), await read(store, Kind.LEASE))
