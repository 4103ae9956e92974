"""A node is only itself on the Dispatcher, asserted from the outside over mTLS: agent A's
certificate cannot open a session as B, report B's tasks, publish logs or exec output for
B, nor attach a task to a network it is not on; a removed node's session is closed and a
new one refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from tests_support import eventually

from orch.identity.ca import Role
from orch.manager.controlapi.server import ControlSettings
from orch.manager.dispatcher.settings import DispatcherSettings
from orch.manager.state.api import Create, Kind
from orch.manager.state.memstore import MemoryStore
from orch.proto import control_pb2, dispatcher_pb2, objects_pb2
from orch.proto import types_pb2 as T

from .agents import Agent, Env, dispatcher_env
from .conftest import serve_control_api

A = "a" * 25
B = "b" * 25


@pytest.fixture
async def env(memstore: MemoryStore) -> AsyncIterator[Env]:
    async with dispatcher_env(memstore, DispatcherSettings(status_flush=0.01)) as served:
        yield served


def task(task_id: str, node_id: str, *networks: str) -> objects_pb2.Task:
    t = objects_pb2.Task(id=task_id, node_id=node_id, service_name="web", desired_state=T.RUNNING)
    t.status.state = T.ASSIGNED
    for name in networks:
        t.networks.add(target=name)
    return t


def report(
    task_id: str, *attachments: objects_pb2.NetworkAttachment
) -> dispatcher_pb2.AgentMessage:
    update = dispatcher_pb2.TaskStatusUpdate(
        task_id=task_id,
        status=objects_pb2.TaskStatus(state=T.RUNNING),
        attachments=attachments,
    )
    return dispatcher_pb2.AgentMessage(status=dispatcher_pb2.StatusBatch(updates=[update]))


def state(env: Env, task_id: str) -> int:
    return env.view.get(Kind.TASK, task_id).obj.status.state


async def refusal(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value


async def test_a_node_cannot_open_a_session_as_another(env: Env) -> None:
    a_as_b = Agent(env, A, "10.0.0.1", claim=B)
    try:
        await a_as_b.register()
        err = await refusal(a_as_b.call.read())
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert err.details() == f"the certificate of node {A} may not open a session as node {B}"
        assert env.view.get(Kind.NODE, B) is None and env.view.get(Kind.NODE, A) is None
    finally:
        await a_as_b.close()
    # A Register without a node id (or with its own) is the certificate's node.
    a = Agent(env, A, "10.0.0.1", claim="")
    try:
        await a.register()
        started = await a.read()
        assert started.started.node_id == A
    finally:
        await a.close()


async def test_a_node_reports_only_its_own_tasks_on_their_networks(env: Env) -> None:
    await env.store.commit(
        [
            Create(Kind.TASK, task("a1", A, "front")),
            Create(Kind.TASK, task("a2", A, "front")),
            Create(Kind.TASK, task("b1", B)),
        ]
    )
    a = Agent(env, A, "10.0.0.1")
    try:
        await a.start()
        front = objects_pb2.NetworkAttachment(network="front", addresses=["10.10.0.9/24"])
        back = objects_pb2.NetworkAttachment(network="back", addresses=["10.20.0.9/24"])
        await a.send(report("b1"))  # B's task
        await a.send(report("a1", back))  # a network a1 is not on
        await a.send(report("a2", front))  # all good: when it lands, the others were seen
        await eventually(lambda: state(env, "a2") == T.RUNNING, 5, "a2's report to land")
        assert state(env, "b1") == T.ASSIGNED
        a1 = env.view.get(Kind.TASK, "a1").obj
        assert a1.status.state == T.ASSIGNED and not a1.attachments
        assert [x.network for x in env.view.get(Kind.TASK, "a2").obj.attachments] == ["front"]
    finally:
        await a.close()


async def test_a_node_publishes_logs_only_for_what_it_was_asked(env: Env) -> None:
    b1, a1 = task("b1", B), task("a1", A)
    await env.store.commit([Create(Kind.TASK, b1), Create(Kind.TASK, a1)])
    a, b = Agent(env, A, "10.0.0.1"), Agent(env, B, "10.0.0.2")
    try:
        await a.start()
        await b.start()
        entries: list[control_pb2.LogEntry] = []

        async def read() -> None:
            async for entry in env.logs.stream([b1], follow=True, tail=-1):
                entries.append(entry)

        reader = asyncio.create_task(read())
        asked = await b.read()
        while asked.WhichOneof("msg") != "log_subscription":
            asked = await b.read()
        sub = asked.log_subscription.id

        async def publish(*msgs):
            for msg in msgs:
                yield msg

        def line(task_id: str, text: bytes, node_id: str = "") -> dispatcher_pb2.PublishLogsMessage:
            entry = control_pb2.LogEntry(task_id=task_id, line=text, node_id=node_id)
            return dispatcher_pb2.PublishLogsMessage(
                subscription_id=sub, node_id=node_id, entries=[entry]
            )

        # A, for B's task under B's subscription; as B; for its own task: all refused.
        for forged in (line("b1", b"forged"), line("b1", b"forged", B), line("a1", b"mine")):
            err = await refusal(a.stub.PublishLogs(publish(forged)))
            assert err.code() == grpc.StatusCode.PERMISSION_DENIED
            assert err.details().startswith(f"node {A} may not publish logs")
        # B itself may not slip in a task it was not asked for.
        err = await refusal(b.stub.PublishLogs(publish(line("a1", b"other"))))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        await b.stub.PublishLogs(publish(line("b1", b"real")))
        await eventually(lambda: bool(entries), 5, "B's line")
        assert [(e.line, e.node_id) for e in entries] == [(b"real", "")]
        reader.cancel()
    finally:
        await a.close()
        await b.close()


async def test_a_node_publishes_exec_output_only_for_its_own_exec(env: Env) -> None:
    b1 = task("b1", B)
    b1.status.state = T.RUNNING
    await env.store.commit([Create(Kind.TASK, b1)])
    a, b = Agent(env, A, "10.0.0.1"), Agent(env, B, "10.0.0.2")
    try:
        await a.start()
        await b.start()
        run = env.execs.run(b1, ["id"], [])
        first = asyncio.ensure_future(anext(run))
        asked = await b.read()
        while asked.WhichOneof("msg") != "exec":
            asked = await b.read()
        exec_id = asked.exec.id

        async def publish(node_id: str, **output):
            yield dispatcher_pb2.PublishExecMessage(
                exec_id=exec_id, node_id=node_id, output=control_pb2.ExecOutput(**output)
            )

        for claimed in ("", B):
            err = await refusal(a.stub.PublishExec(publish(claimed, task_id="b1", data=b"x")))
            assert err.code() == grpc.StatusCode.PERMISSION_DENIED
            assert err.details() == (
                f"node {A} may not publish the output of exec {exec_id}: it was not sent "
                "to this node"
            )
        call = b.stub.PublishExec(publish(B, task_id="b1", data=b"uid=0"))
        started = await asyncio.wait_for(first, 5)
        assert started.data == b"uid=0"
        await run.aclose()
        await call
    finally:
        await a.close()
        await b.close()


async def test_a_removed_node_loses_its_session_and_is_refused(env: Env) -> None:
    a = Agent(env, A, "10.0.0.1")
    try:
        await a.start()
        async with serve_control_api(env.store, ca=env.ca) as api:
            await api.stub.RemoveNode(control_pb2.RemoveNodeRequest(id=A, force=True))
            denied = await api.store.get(Kind.DENIED, A)
            assert denied is not None and (await api.store.get(Kind.NODE, A)) is None
        # Closed at once, and told why.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            while True:
                msg = await a.read()
                assert msg != grpc.aio.EOF, "the session ended without a refusal"
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert f"node {A} was removed from the cluster" in err.value.details()
    finally:
        await a.close()
    again = Agent(env, A, "10.0.0.1")
    try:
        await again.register()
        err2 = await refusal(again.call.read())
        assert err2.code() == grpc.StatusCode.PERMISSION_DENIED
        assert f"node {A} was removed from the cluster" in err2.details()
    finally:
        await again.close()
    # The entry ends with its lease, once the node's last certificate has expired.
    deny_for = ControlSettings().deny_for.total_seconds()
    env.store.advance(deny_for - 60)
    assert await env.store.get(Kind.DENIED, A) is not None
    env.store.advance(60)
    assert await env.store.get(Kind.DENIED, A) is None


async def test_node_rm_of_an_unknown_node_denies_nothing(memstore: MemoryStore) -> None:
    async with serve_control_api(memstore) as api:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await api.stub.RemoveNode(control_pb2.RemoveNodeRequest(id=A, force=True))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert (await memstore.list(Kind.DENIED))[0] == []


async def test_an_admin_certificate_cannot_hold_a_session(env: Env) -> None:
    admin = Agent(env, A, "10.0.0.1", role=Role.ADMIN)
    try:
        await admin.register()
        err = await refusal(admin.call.read())
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert err.details() == "an admin certificate may not call orch.v1.Dispatcher/Session"
    finally:
        await admin.close()
