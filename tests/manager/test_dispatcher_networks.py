"""Overlay peers through real dispatcher sessions on a MemoryStore: an agent's full set
carries its networks with their peers, peer sets follow tasks as they come and go, and a
network the node no longer takes part in is removed. Agents are played by gRPC clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from orch.manager.dispatcher.status import merge_attachments
from orch.manager.state.api import Create, Delete, Kind, Update
from orch.manager.state.memstore import MemoryStore
from orch.proto import dispatcher_pb2, objects_pb2, specs_pb2
from orch.proto import types_pb2 as T

from .agents import Agent, Env, dispatcher_env


@pytest.fixture
async def env(memstore: MemoryStore) -> AsyncIterator[Env]:
    async with dispatcher_env(memstore) as served:
        yield served


A = "a" * 25  # node ids are the certificates' CNs
B = "b" * 25


def network(name: str, vni: int) -> objects_pb2.Network:
    return objects_pb2.Network(
        spec=specs_pb2.NetworkSpec(name=name, driver="overlay"),
        vni=vni,
        subnet="10.10.0.0/24",
        gateway="10.10.0.1",
    )


def task(task_id: str, node_id: str, address: str) -> objects_pb2.Task:
    t = objects_pb2.Task(id=task_id, node_id=node_id, desired_state=T.RUNNING)
    t.status.state = T.ASSIGNED
    t.networks.add(target="front")
    t.attachments.add(network="front", addresses=[f"{address}/24"], mac=f"02:42:{address}")
    return t


def peer_ids(assignments: dispatcher_pb2.Assignments, name: str = "front") -> list[str]:
    for n in assignments.networks:
        if n.network.spec.name == name:
            return [p.task_id for p in n.peers]
    raise AssertionError(f"{name} not in {assignments}")


def has_network(name: str) -> Callable[[dispatcher_pb2.Assignments], bool]:
    return lambda a: any(n.network.spec.name == name for n in a.networks)


async def test_peers_follow_tasks_and_networks_are_removed(env: Env) -> None:
    await env.store.commit(
        [
            Create(Kind.NETWORK, network("front", 4096)),
            Create(Kind.TASK, task("a1", A, "10.10.0.2")),
        ]
    )
    a, b = Agent(env, A, "10.212.0.11"), Agent(env, B, "10.212.0.12")
    try:
        full = await a.start()
        assert full.full and [t.id for t in full.tasks] == ["a1"]
        assert peer_ids(full) == []
        assert full.networks[0].network.vni == 4096
        await b.start()

        # A task lands on b: a hears of the new peer, with b's underlay address.
        await env.store.commit([Create(Kind.TASK, task("b1", B, "10.10.0.3"))])
        got = await a.until(has_network("front"))
        assert [(p.task_id, p.address, p.mac, p.node_addr) for p in got.networks[0].peers] == [
            ("b1", "10.10.0.3", "02:42:10.10.0.3", "10.212.0.12")
        ]
        assert not got.full
        got_b = await b.until(has_network("front"))
        assert [t.id for t in got_b.tasks] == ["b1"] and peer_ids(got_b) == ["a1"]

        # A status change that does not change the peer set sends nothing about networks.
        current = env.view.get(Kind.TASK, "b1")
        running = objects_pb2.Task()
        running.CopyFrom(current.obj)
        running.status.state = T.RUNNING
        # (Were one sent, a's next network message below would still list b1.)
        await env.view.wait_for(
            await env.store.commit([Update(Kind.TASK, running, current.mod_revision)])
        )
        # b1 ends: a's peer set empties, b leaves the network.
        current = env.view.get(Kind.TASK, "b1")
        ended = objects_pb2.Task()
        ended.CopyFrom(current.obj)
        ended.status.state = T.SHUTDOWN
        ended.desired_state = T.SHUTDOWN
        await env.store.commit([Update(Kind.TASK, ended, current.mod_revision)])
        got = await a.until(has_network("front"))
        assert peer_ids(got) == []
        got_b = await b.until(lambda m: m.removed_networks or m.networks)
        assert list(got_b.removed_networks) == ["front"]

        # a1 is deleted: a leaves the network too.
        current = env.view.get(Kind.TASK, "a1")
        await env.store.commit([Delete(Kind.TASK, current.key, current.mod_revision)])
        got = await a.until(lambda m: m.removed_networks or m.networks)
        assert list(got.removed) == ["a1"] and list(got.removed_networks) == ["front"]
    finally:
        await a.close()
        await b.close()


async def test_a_new_session_gets_every_network_with_its_peers(env: Env) -> None:
    await env.store.commit(
        [
            Create(Kind.NETWORK, network("front", 4096)),
            Create(Kind.TASK, task("a1", A, "10.10.0.2")),
            Create(Kind.TASK, task("b1", B, "10.10.0.3")),
            Create(Kind.TASK, task("b2", B, "10.10.0.4")),
        ]
    )
    b = Agent(env, B, "10.212.0.12")
    a = Agent(env, A, "10.212.0.11")
    try:
        await b.start()  # b's node (and address) must exist for a to see b's tasks as peers
        full = await a.start()
        assert full.full and peer_ids(full) == ["b1", "b2"]
    finally:
        await a.close()
        await b.close()


def test_agent_reports_keep_the_addresses_the_allocator_wrote() -> None:
    overlay = objects_pb2.NetworkAttachment(network="front", addresses=["10.10.0.2/24"], mac="m")
    old_bridge = objects_pb2.NetworkAttachment(network="bridge", addresses=["172.18.0.2/24"])
    new_bridge = objects_pb2.NetworkAttachment(network="bridge", addresses=["172.18.0.9/24"])
    wrong = objects_pb2.NetworkAttachment(network="front", addresses=["10.99.0.2/24"])
    assert merge_attachments([overlay], [new_bridge]) == [overlay, new_bridge]
    assert merge_attachments([overlay, old_bridge], [wrong, new_bridge]) == [overlay, new_bridge]
    assert merge_attachments([], []) == []
