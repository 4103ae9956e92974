"""Node liveness on a real etcd: the dispatcher's leased liveness key lives while the
agent sends messages and expires when it stops (a silent but open stream, as with a cut
link, included); the leader's node monitor then marks the node DOWN and orphans its tasks;
a new session makes the node READY again. A graceful agent restart (Leaving) moves the key
onto a longer lease, so the node outlives the short TTL, and a new session puts it back on
the short one. Agents are played by gRPC clients, and by the agent's own Session."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from orch.agent.session import Session, SessionSettings
from orch.identity.ca import Role
from orch.manager.authz import StoreDenyList
from orch.manager.dispatcher.server import Dispatcher
from orch.manager.dispatcher.settings import DispatcherSettings
from orch.manager.nodes.core import NodeMonitorSettings
from orch.manager.nodes.loop import NodeMonitorLoop
from orch.manager.state.api import Create, Kind, Store
from orch.manager.state.view import ClusterView
from orch.manager.streams.logbroker import LogBroker
from orch.proto import dispatcher_pb2, dispatcher_pb2_grpc, objects_pb2
from orch.proto import types_pb2 as T

from .mtls import ClusterCA, client_tls, serve

pytestmark = pytest.mark.integration

TTL = 2
GRACE = 30  # the manager's restart grace (and the most an agent may ask for)


N1, N2, N3, N4, N5, N6, N7, N8 = (f"n{i}".ljust(25, "0") for i in range(1, 9))


@dataclass
class Env:
    store: Store
    view: ClusterView
    ca: ClusterCA
    monitor: NodeMonitorLoop
    address: str
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    def stub(self, node_id: str) -> dispatcher_pb2_grpc.DispatcherStub:
        """A stub on a channel with the certificate of node ``node_id``."""
        channel = self.ca.channel(self.address, self.ca.issue(Role.WORKER, node_id))
        self.channels.append(channel)
        return dispatcher_pb2_grpc.DispatcherStub(channel)


@pytest.fixture
async def env(store: Store, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Env]:
    ca = ClusterCA()
    view = ClusterView(store)
    tasks = [asyncio.create_task(view.run())]
    await view.ready()
    settings = DispatcherSettings(heartbeat_period=0.5, liveness_ttl=TTL, restart_grace=GRACE)
    dispatcher = Dispatcher(
        store=store, view=view, logs=LogBroker(), manager_id="m1", settings=settings
    )
    monitor = NodeMonitorLoop(
        store=store,
        view=view,
        fence=lambda: None,
        settings_core=NodeMonitorSettings(grace=timedelta(seconds=1)),
        liveness_ttl=TTL,
    )
    tasks.append(asyncio.create_task(monitor.run()))
    env = None
    try:
        async with serve(
            ca,
            lambda server: dispatcher_pb2_grpc.add_DispatcherServicer_to_server(dispatcher, server),
            deny=StoreDenyList(view),
        ) as (_, address):
            env = Env(store, view, ca, monitor, address)
            yield env
    finally:
        for channel in env.channels if env else ():
            await channel.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def register(env: Env, node_id: str) -> grpc.aio.Call:
    call = env.stub(node_id).Session()
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
    call = await register(env, N1)
    await until(env, lambda: alive(env, N1) and node_state(env, N1) == T.NODE_READY)
    task = objects_pb2.Task(id="t1", service_id="s", slot=1, node_id=N1, desired_state=T.RUNNING)
    task.status.state = T.RUNNING
    await env.view.wait_for(await env.store.commit([Create(Kind.TASK, task)]))

    # Heartbeats for longer than two TTLs: the key lives and the node stays READY.
    end = time.monotonic() + 2 * TTL + 0.5
    while time.monotonic() < end:
        await call.write(dispatcher_pb2.AgentMessage(heartbeat=dispatcher_pb2.Heartbeat()))
        await asyncio.sleep(0.5)  # the agent's pace, not a wait for state
        assert alive(env, N1) and node_state(env, N1) == T.NODE_READY

    # Silence on an open stream (a cut link): the lease expires, the node goes DOWN and
    # its task is orphaned, within a TTL and etcd's expiry check (500 ms) plus a margin.
    silent = time.monotonic()
    await until(env, lambda: node_state(env, N1) == T.NODE_DOWN, TTL + 2)
    assert time.monotonic() - silent <= TTL + 1.5
    assert not alive(env, N1)
    await until(env, lambda: env.view.get(Kind.TASK, "t1").obj.status.state == T.ORPHANED, 2)
    assert env.view.get(Kind.TASK, "t1").obj.status.message == f"node {N1} is down"

    # The old stream speaks again: its lease is gone, so the dispatcher ends it.
    with contextlib.suppress(grpc.aio.AioRpcError):
        await call.write(dispatcher_pb2.AgentMessage(heartbeat=dispatcher_pb2.Heartbeat()))
    async with asyncio.timeout(5):
        while (msg := await call.read()) is not grpc.aio.EOF:
            assert msg.WhichOneof("msg") != "started"

    # A new session: the node is READY again; its orphaned task stays ORPHANED.
    again = await register(env, N1)
    await until(env, lambda: alive(env, N1) and node_state(env, N1) == T.NODE_READY)
    assert env.view.get(Kind.TASK, "t1").obj.status.state == T.ORPHANED
    again.cancel()


async def test_session_end_revokes_nothing_and_the_node_goes_down(env: Env) -> None:
    call = await register(env, N2)
    await until(env, lambda: alive(env, N2))
    call.cancel()  # the agent went away (the dispatcher marks it DISCONNECTED)
    await until(env, lambda: node_state(env, N2) == T.NODE_DISCONNECTED, 2)
    assert alive(env, N2), "a session end must not revoke the lease"
    await until(env, lambda: node_state(env, N2) == T.NODE_DOWN, TTL + 2)


async def test_new_leader_gives_a_grace_period(env: Env) -> None:
    # A READY node with no liveness record (all managers were away): the monitor marks it
    # down only once its grace period (1 s here) has passed.
    node = objects_pb2.Node(id=N3)
    node.status.state = T.NODE_READY
    await env.store.commit([Create(Kind.NODE, node)])
    await until(env, lambda: node_state(env, N3) == T.NODE_DOWN, 5)
    marked = env.view.get(Kind.NODE, N3).obj.status.timestamp.ToDatetime(tzinfo=UTC)
    assert marked >= env.monitor.grace_until - timedelta(milliseconds=50)
    assert marked <= datetime.now(UTC)


async def liveness_lease(env: Env, node_id: str) -> tuple[int, int]:
    """(lease id, granted TTL) of the node's liveness key."""
    kv = await env.store.get_key(Kind.LIVENESS.key(node_id))
    assert kv is not None and kv.lease
    ttl = await env.store.client.lease.time_to_live(kv.lease)
    return kv.lease, ttl.grantedTTL


async def add_task(env: Env, task_id: str, node_id: str) -> None:
    task = objects_pb2.Task(
        id=task_id, service_id="s", slot=1, node_id=node_id, desired_state=T.RUNNING
    )
    task.status.state = T.RUNNING
    await env.view.wait_for(await env.store.commit([Create(Kind.TASK, task)]))


def leaving(seconds: float) -> dispatcher_pb2.AgentMessage:
    msg = dispatcher_pb2.AgentMessage(leaving=dispatcher_pb2.Leaving())
    msg.leaving.restart_grace.FromTimedelta(timedelta(seconds=seconds))
    return msg


async def ended(call: grpc.aio.Call) -> None:
    """The manager ends the stream (cleanly) within 2 s; assignments before that are read."""
    async with asyncio.timeout(2):
        while (msg := await call.read()) is not grpc.aio.EOF:
            assert msg.WhichOneof("msg") == "assignments"
    assert await call.code() == grpc.StatusCode.OK


async def hold_no_down(env: Env, node_id: str, task_id: str, seconds: float) -> None:
    """For ``seconds``, on every change the view sees (and at least every 0.2 s): the
    node is not DOWN, its liveness key is there, its task is not orphaned."""
    changes = env.view.subscribe(Kind.NODE, Kind.LIVENESS, Kind.TASK)
    try:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            assert node_state(env, node_id) != T.NODE_DOWN
            assert alive(env, node_id)
            assert env.view.get(Kind.TASK, task_id).obj.status.state == T.RUNNING
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, 0.2)):
                    await changes.get()
    finally:
        env.view.unsubscribe(changes)


async def test_leaving_keeps_the_node_until_it_registers_again(env: Env) -> None:
    call = await register(env, N4)
    await until(env, lambda: alive(env, N4) and node_state(env, N4) == T.NODE_READY)
    await add_task(env, "t4", N4)
    short, granted = await liveness_lease(env, N4)
    assert granted == TTL

    # Leaving (0: the manager's default grace); the manager ends the session once the
    # liveness key sits on the grace lease.
    await call.write(leaving(0))
    await call.done_writing()
    await ended(call)
    moved, granted = await liveness_lease(env, N4)
    assert moved != short and granted == GRACE
    await until(env, lambda: node_state(env, N4) == T.NODE_DISCONNECTED, 2)
    status = env.view.get(Kind.NODE, N4).obj.status
    assert status.message == f"agent restarting (grace {GRACE}s)"
    assert env.view.get(Kind.LIVENESS, N4).obj.status.manager == ""  # no session holder

    # Well past the short TTL (and etcd's expiry check): nothing is declared lost.
    await hold_no_down(env, N4, "t4", TTL + 2)

    # The agent is back: READY, on a fresh short lease, and the task was never touched.
    again = await register(env, N4)
    await until(env, lambda: node_state(env, N4) == T.NODE_READY)
    back, granted = await liveness_lease(env, N4)
    assert back not in (short, moved) and granted == TTL
    assert env.view.get(Kind.NODE, N4).obj.status.message == ""
    assert env.view.get(Kind.TASK, "t4").obj.status.state == T.RUNNING

    # The short lease really is back: silence now makes the node DOWN within the TTL.
    silent = time.monotonic()
    await until(env, lambda: node_state(env, N4) == T.NODE_DOWN, TTL + 2)
    assert time.monotonic() - silent <= TTL + 1.5
    again.cancel()


async def test_leaving_without_return_goes_down_when_the_grace_ends(env: Env) -> None:
    call = await register(env, N5)
    await until(env, lambda: alive(env, N5) and node_state(env, N5) == T.NODE_READY)
    await add_task(env, "t5", N5)
    await call.write(leaving(4))  # asks for less than the manager's grace: gets that
    await call.done_writing()
    left = time.monotonic()
    await ended(call)
    assert (await liveness_lease(env, N5))[1] == 4
    await hold_no_down(env, N5, "t5", TTL + 1)
    await until(env, lambda: node_state(env, N5) == T.NODE_DOWN, 5)
    assert time.monotonic() - left >= 4
    assert env.view.get(Kind.NODE, N5).obj.status.message == "liveness lease expired"
    await until(env, lambda: env.view.get(Kind.TASK, "t5").obj.status.state == T.ORPHANED, 2)


async def test_a_stale_sessions_leaving_moves_nothing(env: Env) -> None:
    # The agent already holds a newer session (it reconnected); the old stream's Leaving
    # must not put the new session's key on a long lease.
    old = await register(env, N6)
    await until(env, lambda: alive(env, N6))
    new = await register(env, N6)
    await until(env, lambda: node_state(env, N6) == T.NODE_READY)
    current, _ = await liveness_lease(env, N6)
    await old.write(leaving(0))
    await old.done_writing()
    await ended(old)
    assert await liveness_lease(env, N6) == (current, TTL)
    new.cancel()
    await until(env, lambda: node_state(env, N6) == T.NODE_DOWN, TTL + 2)


async def test_agent_session_leave_is_acknowledged_and_bounded(env: Env) -> None:
    # The agent's own Session: leave() sends Leaving and returns once the manager ended the
    # stream (well within its 1 s bound).
    session = Session(
        node_id=N7,
        description=objects_pb2.NodeDescription(hostname=N7),
        settings=SessionSettings(managers=[env.address], restart_grace=5),
        tls=lambda: client_tls(env.ca, env.ca.issue(Role.WORKER, N7)),
        on_assignments=_ignore,
        on_log_subscription=lambda *_: None,
    )
    running = asyncio.create_task(session.run())
    try:
        async with asyncio.timeout(5):
            await session.connected.wait()
        # True only when the manager ended the stream before the session's own bound
        # (leave_timeout, 1 s) ran out: the bound is the session's timer, not a wall-clock
        # figure taken around it here.
        assert session._settings.leave_timeout == 1.0
        assert await session.leave()
        assert (await liveness_lease(env, N7))[1] == 5
        await until(env, lambda: node_state(env, N7) == T.NODE_DISCONNECTED, 2)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_agent_session_leave_without_a_manager_returns_at_once() -> None:
    # No manager listens on port 1: nobody to tell, the agent just stops.
    ca = ClusterCA()
    session = Session(
        node_id=N8,
        description=objects_pb2.NodeDescription(hostname=N8),
        settings=SessionSettings(managers=["127.0.0.1:1"]),
        tls=lambda: client_tls(ca, ca.issue(Role.WORKER, N8)),
        on_assignments=_ignore,
        on_log_subscription=lambda *_: None,
    )
    running = asyncio.create_task(session.run())
    try:
        await asyncio.sleep(0.3)  # let it fail a connection attempt or two
        # At once: leave() returns without ever yielding to the event loop (no wait at all,
        # however loaded the machine), so its first step already ends it.
        stepping = session.leave()
        with pytest.raises(StopIteration) as returned:
            stepping.send(None)
        assert returned.value.value is False
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def _ignore(_msg: dispatcher_pb2.Assignments) -> None:
    return None
