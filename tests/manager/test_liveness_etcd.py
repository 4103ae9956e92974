"""Node liveness on a real etcd: the dispatcher's leased liveness key lives while the
agent sends messages and expires when it stops (a silent but open stream, as with a cut
link, included); the leader's node monitor then marks the node DOWN and orphans its tasks;
a new session makes the node READY again. Agents are played by gRPC clients."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from orch.manager.dispatcher import Dispatcher, DispatcherSettings
from orch.manager.logbroker import LogBroker
from orch.manager.nodemonitor import NodeMonitorLoop, NodeMonitorSettings
from orch.manager.store import Create, Kind, Store
from orch.manager.view import ClusterView
from orch.proto import dispatcher_pb2, dispatcher_pb2_grpc, objects_pb2
from orch.proto import types_pb2 as T

pytestmark = pytest.mark.integration

TTL = 2


@dataclass
class Env:
    store: Store
    view: ClusterView
    stub: dispatcher_pb2_grpc.DispatcherStub
    monitor: NodeMonitorLoop


@pytest.fixture
async def env(store: Store) -> AsyncIterator[Env]:
    view = ClusterView(store)
    tasks = [asyncio.create_task(view.run())]
    await view.ready()
    server = grpc.aio.server()
    settings = DispatcherSettings(heartbeat_period=0.5, liveness_ttl=TTL)
    dispatcher = Dispatcher(
        store=store, view=view, logs=LogBroker(), manager_id="m1", settings=settings
    )
    dispatcher_pb2_grpc.add_DispatcherServicer_to_server(dispatcher, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    monitor = NodeMonitorLoop(
        store=store,
        view=view,
        fence=lambda: None,
        settings_core=NodeMonitorSettings(grace=timedelta(seconds=1)),
        liveness_ttl=TTL,
    )
    tasks.append(asyncio.create_task(monitor.run()))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Env(store, view, dispatcher_pb2_grpc.DispatcherStub(channel), monitor)
    finally:
        await channel.close()
        await server.stop(0)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def register(stub: dispatcher_pb2_grpc.DispatcherStub, node_id: str) -> grpc.aio.Call:
    call = stub.Session()
    reg = dispatcher_pb2.Register(node_id=node_id)
    reg.description.hostname = node_id
    await call.write(dispatcher_pb2.AgentMessage(register=reg))
    started = await call.read()
    assert started.WhichOneof("msg") == "started"
    assert started.started.heartbeat_period.ToTimedelta() == timedelta(seconds=0.5)
    return call


async def until(env: Env, cond, timeout: float = 10.0):
    """Wait for ``cond()`` to hold, re-checked on every change the view sees."""
    changes = env.view.subscribe(Kind.NODE, Kind.LIVENESS, Kind.TASK)
    try:
        async with asyncio.timeout(timeout):
            while not (value := cond()):
                await changes.get()
            return value
    finally:
        env.view.unsubscribe(changes)


def node_state(env: Env, node_id: str) -> int:
    current = env.view.get(Kind.NODE, node_id)
    return current.obj.status.state if current else 0


def alive(env: Env, node_id: str) -> bool:
    return env.view.get(Kind.LIVENESS, node_id) is not None


async def test_heartbeats_keep_liveness_silence_makes_the_node_down(env: Env) -> None:
    call = await register(env.stub, "n1")
    await until(env, lambda: alive(env, "n1") and node_state(env, "n1") == T.NODE_READY)
    task = objects_pb2.Task(id="t1", service_id="s", slot=1, node_id="n1", desired_state=T.RUNNING)
    task.status.state = T.RUNNING
    await env.view.wait_for(await env.store.commit([Create(Kind.TASK, task)]))

    # Heartbeats for longer than two TTLs: the key lives and the node stays READY.
    end = time.monotonic() + 2 * TTL + 0.5
    while time.monotonic() < end:
        await call.write(dispatcher_pb2.AgentMessage(heartbeat=dispatcher_pb2.Heartbeat()))
        await asyncio.sleep(0.5)  # the agent's pace, not a wait for state
        assert alive(env, "n1") and node_state(env, "n1") == T.NODE_READY

    # Silence on an open stream (a cut link): the lease expires, the node goes DOWN and
    # its task is orphaned, within a TTL and etcd's expiry check (500 ms) plus a margin.
    silent = time.monotonic()
    await until(env, lambda: node_state(env, "n1") == T.NODE_DOWN, TTL + 2)
    assert time.monotonic() - silent <= TTL + 1.5
    assert not alive(env, "n1")
    await until(env, lambda: env.view.get(Kind.TASK, "t1").obj.status.state == T.ORPHANED, 2)
    assert env.view.get(Kind.TASK, "t1").obj.status.message == "node n1 is down"

    # The old stream speaks again: its lease is gone, so the dispatcher ends it.
    with contextlib.suppress(grpc.aio.AioRpcError):
        await call.write(dispatcher_pb2.AgentMessage(heartbeat=dispatcher_pb2.Heartbeat()))
    async with asyncio.timeout(5):
        while (msg := await call.read()) is not grpc.aio.EOF:
            assert msg.WhichOneof("msg") != "started"

    # A new session: the node is READY again; its orphaned task stays ORPHANED.
    again = await register(env.stub, "n1")
    await until(env, lambda: alive(env, "n1") and node_state(env, "n1") == T.NODE_READY)
    assert env.view.get(Kind.TASK, "t1").obj.status.state == T.ORPHANED
    again.cancel()


async def test_session_end_revokes_nothing_and_the_node_goes_down(env: Env) -> None:
    call = await register(env.stub, "n2")
    await until(env, lambda: alive(env, "n2"))
    call.cancel()  # the agent went away (the dispatcher marks it DISCONNECTED)
    await until(env, lambda: node_state(env, "n2") == T.NODE_DISCONNECTED, 2)
    assert alive(env, "n2"), "a session end must not revoke the lease"
    await until(env, lambda: node_state(env, "n2") == T.NODE_DOWN, TTL + 2)


async def test_new_leader_gives_a_grace_period(env: Env) -> None:
    # A READY node with no liveness record (all managers were away): the monitor marks it
    # down only once its grace period (1 s here) has passed.
    node = objects_pb2.Node(id="n3")
    node.status.state = T.NODE_READY
    await env.store.commit([Create(Kind.NODE, node)])
    await until(env, lambda: node_state(env, "n3") == T.NODE_DOWN, 5)
    marked = env.view.get(Kind.NODE, "n3").obj.status.timestamp.ToDatetime(tzinfo=UTC)
    assert marked >= env.monitor.grace_until - timedelta(milliseconds=50)
    assert marked <= datetime.now(UTC)
