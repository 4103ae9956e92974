"""DNS records through real dispatcher sessions on a MemoryStore: the full set carries the
records of every network of the node's tasks, a task turning healthy (or being shut down)
is pushed to every node on its network in the session, bridge records stay on their node.
Agents are played by gRPC clients (the session helpers of the overlay peer tests)."""

from __future__ import annotations

from orch.manager.state.api import Create, Kind, Update
from orch.proto import dispatcher_pb2, objects_pb2
from orch.proto import types_pb2 as T

from . import test_dispatcher_networks as sessions
from .agents import Agent, Env
from .test_dispatcher_networks import A, B, network

env = sessions.env  # the fixture: a Dispatcher on a MemoryStore, served over mTLS


def task(
    task_id: str, node_id: str, service: str, slot: int, network: str, address: str
) -> objects_pb2.Task:
    t = objects_pb2.Task(
        id=task_id, node_id=node_id, service_name=service, slot=slot, desired_state=T.RUNNING
    )
    t.status.state = T.RUNNING
    t.status.health = T.HEALTH_STARTING
    if network != "bridge":
        t.networks.add(target=network)
    t.attachments.add(network=network, addresses=[f"{address}/24"])
    return t


def dns(msg: dispatcher_pb2.Assignments, name: str) -> list[tuple[str, str, bool]] | None:
    for records in msg.dns:
        if records.network == name:
            return [(e.task_id, e.address, e.answerable) for e in records.endpoints]
    return None


def has_dns(name: str):
    return lambda m: dns(m, name) is not None


async def set_task(env: Env, task_id: str, **changes) -> None:
    current = env.view.get(Kind.TASK, task_id)
    t = objects_pb2.Task()
    t.CopyFrom(current.obj)
    for field, value in changes.items():
        if field in ("state", "health"):
            setattr(t.status, field, value)
        else:
            setattr(t, field, value)
    await env.store.commit([Update(Kind.TASK, t, current.mod_revision)])


async def test_records_follow_health_on_every_node_of_the_network(env: Env) -> None:
    await env.store.commit(
        [
            Create(Kind.NETWORK, network("front", 4096)),
            Create(Kind.TASK, task("a1", A, "web", 1, "front", "10.10.0.2")),
            Create(Kind.TASK, task("b1", B, "web", 2, "front", "10.10.0.3")),
        ]
    )
    a, b = Agent(env, A, "10.212.0.11"), Agent(env, B, "10.212.0.12")
    try:
        full = await a.start()
        assert full.full
        assert dns(full, "front") == [("a1", "10.10.0.2", False), ("b1", "10.10.0.3", False)]
        assert list(full.dns_network_names.names) == ["front"]
        await b.start()

        # b1 turns healthy: a (another node) hears it, in a message of its own.
        await set_task(env, "b1", health=T.HEALTH_HEALTHY)
        got = await a.until(has_dns("front"))
        assert not got.full and not got.tasks and not got.HasField("dns_network_names")
        assert dns(got, "front") == [("a1", "10.10.0.2", False), ("b1", "10.10.0.3", True)]
        got_b = await b.until(has_dns("front"))
        assert dns(got_b, "front")[1] == ("b1", "10.10.0.3", True)

        # b1 is being shut down: out of the answers at once, still listed until it ends.
        await set_task(env, "b1", desired_state=T.SHUTDOWN)
        got = await a.until(has_dns("front"))
        assert dns(got, "front")[1] == ("b1", "10.10.0.3", False)
        await set_task(env, "b1", state=T.SHUTDOWN)
        got = await a.until(has_dns("front"))
        assert dns(got, "front") == [("a1", "10.10.0.2", False)]
        got_b = await b.until(lambda m: "front" in m.removed_dns)
        assert "front" in got_b.removed_networks  # b left the network altogether
    finally:
        await a.close()
        await b.close()


async def test_bridge_records_stay_on_their_node(env: Env) -> None:
    await env.store.commit(
        [
            Create(Kind.TASK, task("a1", A, "web", 1, "bridge", "172.18.0.2")),
            Create(Kind.TASK, task("b1", B, "web", 2, "bridge", "172.18.1.2")),
        ]
    )
    a, b = Agent(env, A, "10.212.0.11"), Agent(env, B, "10.212.0.12")
    try:
        assert dns(await a.start(), "bridge") == [("a1", "172.18.0.2", False)]
        assert dns(await b.start(), "bridge") == [("b1", "172.18.1.2", False)]
        await set_task(env, "b1", health=T.HEALTH_NONE)
        got_b = await b.until(has_dns("bridge"))
        assert dns(got_b, "bridge") == [("b1", "172.18.1.2", True)]
        # a hears nothing of it: its next message is about its own task.
        await set_task(env, "a1", health=T.HEALTH_HEALTHY)
        got = await a.until(lambda m: m.dns or m.removed_dns)
        assert dns(got, "bridge") == [("a1", "172.18.0.2", True)]
    finally:
        await a.close()
        await b.close()
