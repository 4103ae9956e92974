"""Logs and exec through any manager, on one MemoryStore: two managers' Control and
Dispatcher APIs on loopback, and an agent made of the real agent code (Session,
LogPublisher, ExecRunner) whose only stand-in is the container: its "exec" runs the
command as a host process (an ExecProcess all the same) and its logs come from a dict.
The agent holds its session with m1; calls to m2 must be forwarded. Containers for real:
test_exec.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from tests_support import eventually

from orch.agent.execs import ExecRunner
from orch.agent.logs import LogPublisher
from orch.agent.session import Session, SessionSettings
from orch.identity.ca import Role, new_id
from orch.identity.peer import NodeIdentity
from orch.manager import authz
from orch.manager.authz import StoreDenyList
from orch.manager.controlapi.server import ControlAPI
from orch.manager.dispatcher.server import Dispatcher
from orch.manager.dispatcher.settings import DispatcherSettings
from orch.manager.state.api import Create, Kind, Store
from orch.manager.state.memstore import MemoryStore
from orch.manager.state.presence import announce
from orch.manager.state.view import ClusterView
from orch.manager.streams.execbroker import ExecBroker
from orch.manager.streams.forwarding import SessionRouter
from orch.manager.streams.logbroker import LogBroker
from orch.manager.streams.sessionroutes import TargetError
from orch.proto import (
    control_pb2,
    control_pb2_grpc,
    dispatcher_pb2_grpc,
    objects_pb2,
    specs_pb2,
    types_pb2,
)
from orch.runtime.exec import ExecFiles, ExecProcess
from orch.runtime.model import LogLine

from .mtls import ClusterCA, client_tls, serve

NODE = "node000000000000000000001"  # a certificate CN: 25 characters of base 36
TASK = "task0000000000000000000001"
TTL = 2


@dataclass
class Manager:
    id: str
    address: str
    stub: control_pb2_grpc.ControlStub  # with an admin certificate, as the CLI calls
    server: grpc.aio.Server


class HostRuntime:
    """The agent's runtime with the container taken out: exec runs argv on the host."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.pids: list[int] = []

    async def exec(self, container_id: str, argv: list[str], *, env=None) -> ExecProcess:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **dict(e.split("=", 1) for e in env or [])},
        )
        self.pids.append(proc.pid)
        return ExecProcess(container_id, proc, ExecFiles(self.folder))


async def read_logs(task_id: str, tail: int, follow: bool) -> AsyncIterator[LogLine]:
    for i in (1, 2):
        yield LogLine("2024-01-01T00:00:00.000000001Z", "stdout", f"line {i} of {task_id}".encode())


@dataclass
class Cluster:
    m1: Manager
    m2: Manager
    runtime: HostRuntime
    session: asyncio.Task
    store: MemoryStore
    ca: ClusterCA
    jobs: list[asyncio.Task] = field(default_factory=list)


async def start_manager(
    store: Store, manager_id: str, jobs: list[asyncio.Task], ca: ClusterCA
) -> Manager:
    """One manager as it serves: mTLS with the interceptor, the store's deny list, and a
    router that forwards with the manager's own certificate."""
    view = ClusterView(store)
    jobs.append(asyncio.create_task(view.run()))
    await view.ready()
    logs, execs = LogBroker(), ExecBroker()
    settings = DispatcherSettings(heartbeat_period=0.3, liveness_ttl=TTL)
    dispatcher = Dispatcher(
        store=store, view=view, logs=logs, manager_id=manager_id, settings=settings, execs=execs
    )
    router = SessionRouter(
        view=view,
        logs=logs,
        execs=execs,
        manager_id=manager_id,
        open_channel=lambda address: ca.channel(address, ca.issue(Role.MANAGER)),
    )
    control = ControlAPI(store=store, view=view, logs=logs, router=router)

    def add(server: grpc.aio.Server) -> None:
        control_pb2_grpc.add_ControlServicer_to_server(control, server)
        dispatcher_pb2_grpc.add_DispatcherServicer_to_server(dispatcher, server)

    served = serve(ca, add, deny=StoreDenyList(view))
    server, address = await served.__aenter__()
    jobs.append(asyncio.create_task(_until_cancelled(served)))
    jobs.append(asyncio.create_task(dispatcher.status.run()))
    jobs.append(asyncio.create_task(announce(store, manager_id, address, ttl=TTL)))
    channel = ca.channel(address, ca.issue(Role.ADMIN))
    return Manager(manager_id, address, control_pb2_grpc.ControlStub(channel), server)


async def _until_cancelled(served) -> None:
    """Holds a served context open until the job is cancelled, then closes it."""
    try:
        await asyncio.Future()
    finally:
        await served.__aexit__(None, None, None)


@pytest.fixture
async def cluster(
    memstore: MemoryStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Cluster]:
    store = memstore
    jobs: list[asyncio.Task] = []
    ca = ClusterCA()
    m1 = await start_manager(store, "m1", jobs, ca)
    m2 = await start_manager(store, "m2", jobs, ca)
    agent_tls = client_tls(ca, ca.issue(Role.WORKER, NODE))
    now = Timestamp(seconds=1_700_000_000)
    service = objects_pb2.Service(
        id="svc1",
        meta=objects_pb2.Meta(version=1, created_at=now),
        spec=specs_pb2.ServiceSpec(name="web"),
    )
    task = objects_pb2.Task(
        id=TASK, service_id="svc1", service_name="web", slot=1, node_id=NODE,
        meta=objects_pb2.Meta(version=1, created_at=now),
        desired_state=types_pb2.RUNNING, status=objects_pb2.TaskStatus(state=types_pb2.RUNNING),
    )  # fmt: skip
    await store.commit([Create(Kind.SERVICE, service), Create(Kind.TASK, task)])
    runtime = HostRuntime(tmp_path)
    execs = ExecRunner(node_id=NODE, runtime=runtime)
    logs = LogPublisher(node_id=NODE, read_logs=read_logs, tasks=lambda: {TASK: task})

    async def assigned(msg) -> None:
        pass

    session = Session(
        node_id=NODE,
        description=objects_pb2.NodeDescription(hostname="node1"),
        settings=SessionSettings(managers=[m1.address]),
        tls=lambda: agent_tls,
        on_assignments=assigned,
        on_log_subscription=logs.handle,
        on_exec=execs.handle,
    )
    running = asyncio.create_task(session.run())
    await asyncio.wait_for(session.connected.wait(), 10)
    c = Cluster(m1, m2, runtime, running, store, ca, jobs)

    async def routable() -> bool:  # m2's view has the liveness and m1's presence
        nodes = await m2.stub.ListNodes(control_pb2.ListNodesRequest())
        managers = await m2.stub.ListManagers(control_pb2.ListManagersRequest())
        return len(nodes.nodes) == 1 and len(managers.managers) == 2

    await eventually(routable, 10, "m2 to see the node and m1")
    try:
        yield c
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await execs.close()
        await logs.close()
        for m in (m1, m2):
            await m.server.stop(0)
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)


async def exec_via(m: Manager, target: str, *argv: str) -> tuple[bytes, bytes, int | None]:
    out, err, code = b"", b"", None
    async for msg in m.stub.Exec(control_pb2.ExecRequest(target=target, argv=argv)):
        if msg.stream == "stdout":
            out += msg.data
        elif msg.stream == "stderr":
            err += msg.data
        if msg.exited:
            code = msg.exit_code
    return out, err, code


async def test_exec_through_either_manager(cluster: Cluster) -> None:
    script = "echo hi; echo err >&2; exit 3"
    for m in (cluster.m1, cluster.m2):
        assert await exec_via(m, "web", "sh", "-c", script) == (b"hi\n", b"err\n", 3)


async def test_logs_through_the_manager_without_the_session(cluster: Cluster) -> None:
    entries = [
        e async for e in cluster.m2.stub.Logs(control_pb2.LogsRequest(target="web.1", tail=-1))
    ]
    assert [e.line for e in entries] == [f"line {i} of {TASK}".encode() for i in (1, 2)]
    assert {e.node_id for e in entries} == {NODE}


async def test_a_forwarded_call_is_never_forwarded_again(cluster: Cluster) -> None:
    # m2 does not hold the session: a call that names the task ids (as a forwarding
    # manager sends it) is refused rather than passed on to m1.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in cluster.m2.stub.Logs(control_pb2.LogsRequest(task_ids=[TASK])):
            pass
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.value.details() == "node node1 just lost its session with manager m2; retry shortly"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in cluster.m2.stub.Exec(control_pb2.ExecRequest(task_id=TASK, argv=["true"])):
            pass
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_client_that_leaves_through_the_other_manager_kills_the_command(
    cluster: Cluster,
) -> None:
    call = cluster.m2.stub.Exec(
        control_pb2.ExecRequest(target="web", argv=["sh", "-c", "echo started; exec sleep 1000"])
    )
    stream = call.__aiter__()
    assert (await anext(stream)).task_id == TASK
    assert (await anext(stream)).data == b"started\n"
    [pid] = cluster.runtime.pids
    call.cancel()

    async def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A killed child the agent has not reaped yet is a zombie: gone all the same.
        stat = Path(f"/proc/{pid}/stat").read_text()  # noqa: ASYNC240 (tiny procfs read)
        return stat.rsplit(")", 1)[1].split()[0] == "Z"

    await eventually(gone, 10, "the command to be killed")


async def test_a_node_without_a_session_anywhere_is_a_clear_error(cluster: Cluster) -> None:
    cluster.session.cancel()

    async def expired() -> bool:
        # The lease's TTL passes; a heartbeat still in flight may have refreshed it, so
        # it passes again at every look.
        cluster.store.advance(TTL)
        return await cluster.store.get(Kind.LIVENESS, NODE) is None

    await eventually(expired, 10, "the liveness to expire")
    for m in (cluster.m1, cluster.m2):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in m.stub.Logs(control_pb2.LogsRequest(target="web")):
                pass
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert err.value.details() == (
            "node node1 is not connected to any manager; its logs stay on the node"
        )


async def test_a_holding_manager_that_does_not_answer_is_not_unavailable(
    cluster: Cluster,
) -> None:
    # m1 stops serving; its presence and the node's liveness outlive it for a moment.
    await cluster.m1.server.stop(0)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await exec_via(cluster.m2, "web", "true")
    # Not UNAVAILABLE: the CLI would take that for m2 being down and try elsewhere.
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"the manager at {cluster.m1.address}, which holds the session of node node1" in (
        err.value.details()
    )


async def test_output_comes_in_chunks_of_at_most_32_kib(cluster: Cluster) -> None:
    request = control_pb2.ExecRequest(target="web", argv=["head", "-c", "200000", "/dev/zero"])
    sizes = [len(m.data) async for m in cluster.m2.stub.Exec(request) if m.data]
    assert sum(sizes) == 200000
    assert max(sizes) <= 32 * 1024


async def test_a_forwarded_call_is_authorized_as_its_original_caller(cluster: Cluster) -> None:
    # What m2 sends m1 when forwarding: the task ids, from a manager certificate, on
    # behalf of the caller. m1 authorizes the caller's role, not the forwarder's.
    ca = cluster.ca
    manager = ca.issue(Role.MANAGER)
    request = control_pb2.LogsRequest(task_ids=[TASK], tail=-1)

    def caller(role: Role) -> NodeIdentity:
        return NodeIdentity(new_id(), role, ca.cluster_id, 1, datetime(2030, 1, 1, tzinfo=UTC))

    async with ca.channel(cluster.m1.address, manager) as channel:
        stub = control_pb2_grpc.ControlStub(channel)
        admin = authz.on_behalf_of(caller(Role.ADMIN))
        entries = [e async for e in stub.Logs(request, metadata=admin)]
        assert [e.line for e in entries] == [f"line {i} of {TASK}".encode() for i in (1, 2)]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.Logs(request, metadata=authz.on_behalf_of(caller(Role.WORKER))):
                pass
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert err.value.details() == (
            "an agent (worker) certificate may not call orch.v1.Control/Logs "
            f"(forwarded by manager {manager.node_id})"
        )
    # An agent cannot pass itself off as forwarding for an admin.
    async with ca.channel(cluster.m1.address, ca.issue(Role.WORKER, NODE)) as channel:
        stub = control_pb2_grpc.ControlStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.Logs(request, metadata=authz.on_behalf_of(caller(Role.ADMIN))):
                pass
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "may not call on behalf of another caller" in err.value.details()


async def test_a_router_without_credentials_forwards_nothing(cluster: Cluster) -> None:
    view = ClusterView(cluster.store)
    feed = asyncio.create_task(view.run())
    try:
        await view.ready()
        router = SessionRouter(view=view, logs=LogBroker(), execs=ExecBroker(), manager_id="m3")
        task = view.get(Kind.TASK, TASK).obj
        with pytest.raises(TargetError) as err:
            async for _ in router.exec(task, ["true"], []):
                pass
        assert str(err.value) == (
            f"cannot forward to the manager at {cluster.m1.address}: no credentials to do it with"
        )
    finally:
        feed.cancel()
        await asyncio.gather(feed, return_exceptions=True)
