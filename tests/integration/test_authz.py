"""Authorization on a real, secured local cluster (a manager, two hosts with agents), each
claim a refusal seen from the outside: an agent's certificate on the Control API, agent A
opening a session as B, a node reporting another node's task or an attachment on a network
its task is not on, and `orch node rm` cutting a node off (its session closed, a new one
refused).

Runs once the local cluster is secure (branch id-spine: mTLS ports, join tokens, agents'
certificates in <state dir>/tls, ``orch.identity.channels``) and manager/main.py serves
with ``authz.server_interceptors``; skipped before. The in-process versions (every claim
here and more: logs and exec output of other nodes' tasks) are tests/manager/
test_authz.py and test_dispatcher_authz.py.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from tests_support import STEADY_SERVICE, wait_until

from orch.identity import ca as pki
from orch.identity.material import load_node_material
from orch.manager.state.store import EtcdStore
from orch.proto import (
    control_pb2,
    control_pb2_grpc,
    dispatcher_pb2,
    dispatcher_pb2_grpc,
    objects_pb2,
    types_pb2,
)

channels = pytest.importorskip(
    "orch.identity.channels", reason="the local cluster is not secure yet (id-spine)"
)
records = pytest.importorskip("orch.manager.ca.records")

pytestmark = pytest.mark.integration

CLUSTER_NODES = 2
OPTIONS = [("grpc.use_local_subchannel_pool", 1)]  # a connection of its own, per test

SERVICE = STEADY_SERVICE


def agent_tls(cluster, hostname: str):
    """The certificate the agent of ``hostname`` joined with (its state dir's tls/)."""
    material = load_node_material(Path(cluster.host(hostname)["state_dir"]) / "tls")
    return channels.ClientTLS.from_material(material)


def node_ids(cluster) -> dict[str, str]:
    """hostname -> node id, as the admin sees them."""
    with channels.channel(cluster.managers[0], cluster.tls(), options=OPTIONS) as channel:
        nodes = control_pb2_grpc.ControlStub(channel).ListNodes(
            control_pb2.ListNodesRequest(), timeout=10
        )
    return {n.description.hostname: n.id for n in nodes.nodes}


def intruder_tls(cluster):
    """A worker certificate of a node that never joined: what a stolen worker certificate
    is. Issued from the cluster's CA as a join would."""

    async def load():
        store = await EtcdStore.connect(cluster.record.etcd.split(","), tls=cluster.etcd_tls())
        try:
            return await records.load_cluster(store)
        finally:
            await store.close()

    ca = asyncio.run(load()).ca
    key = pki.new_private_key()
    node_id = pki.new_id()
    cert = pki.issue_certificate(ca, pki.create_csr(key), node_id=node_id, role=pki.Role.WORKER)
    tls = channels.ClientTLS(pki.key_pem(key), pki.cert_pem(*ca.chain_for(cert)),
                             cluster.tls().roots_pem)  # fmt: skip
    return node_id, tls


def test_an_agent_certificate_on_the_control_api_is_refused(cluster) -> None:
    tls = agent_tls(cluster, "node1")
    with channels.channel(cluster.managers[0], tls, options=OPTIONS) as channel:
        with pytest.raises(grpc.RpcError) as err:
            control_pb2_grpc.ControlStub(channel).ListServices(
                control_pb2.ListServicesRequest(), timeout=10
            )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.value.details() == (
        "an agent (worker) certificate may not call orch.v1.Control/ListServices"
    )


def test_agent_a_cannot_open_a_session_as_node_b(cluster) -> None:
    ids = node_ids(cluster)

    async def attempt() -> grpc.aio.AioRpcError:
        async with channels.aio_channel(
            cluster.managers[0], agent_tls(cluster, "node1"), options=OPTIONS
        ) as channel:
            call = dispatcher_pb2_grpc.DispatcherStub(channel).Session()
            register = dispatcher_pb2.Register(node_id=ids["node2"])
            await call.write(dispatcher_pb2.AgentMessage(register=register))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await asyncio.wait_for(call.read(), 10)
            return err.value

    err = asyncio.run(attempt())
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.details() == (
        f"the certificate of node {ids['node1']} may not open a session as node {ids['node2']}"
    )


def task_state(cluster, task_id: str) -> int:
    with channels.channel(cluster.managers[0], cluster.tls(), options=OPTIONS) as channel:
        task = control_pb2_grpc.ControlStub(channel).GetTask(
            control_pb2.GetTaskRequest(id=task_id), timeout=10
        )
    return task.status.state


def test_a_node_cannot_report_another_nodes_task_and_rm_cuts_it_off(
    orch, cluster, tmp_path: Path
) -> None:
    manifest = tmp_path / "steady.yaml"
    manifest.write_text(SERVICE.replace("REGISTRY", cluster.record.registry))
    orch("apply", "-f", str(manifest))
    ids = node_ids(cluster)

    def running_on_node2():
        with channels.channel(cluster.managers[0], cluster.tls(), options=OPTIONS) as ch:
            tasks = control_pb2_grpc.ControlStub(ch).ListTasks(
                control_pb2.ListTasksRequest(service="steady"), timeout=10
            )
        return next(
            (t for t in tasks.tasks
             if t.node_id == ids["node2"] and t.status.state == types_pb2.RUNNING),
            None,
        )  # fmt: skip

    victim = wait_until(running_on_node2, 120, what="a task of steady running on node2")
    intruder, tls = intruder_tls(cluster)

    async def scenario() -> None:
        async with channels.aio_channel(cluster.managers[0], tls, options=OPTIONS) as channel:
            stub = dispatcher_pb2_grpc.DispatcherStub(channel)
            call = stub.Session()
            register = dispatcher_pb2.Register(node_id=intruder)
            register.description.hostname = "intruder"
            await call.write(dispatcher_pb2.AgentMessage(register=register))
            started = await asyncio.wait_for(call.read(), 10)
            assert started.started.node_id == intruder
            # node2's task reported FAILED by the intruder: it stays RUNNING.
            forged = dispatcher_pb2.TaskStatusUpdate(
                task_id=victim.id, status=objects_pb2.TaskStatus(state=types_pb2.FAILED)
            )
            await call.write(
                dispatcher_pb2.AgentMessage(status=dispatcher_pb2.StatusBatch(updates=[forged]))
            )
            end = time.monotonic() + 2  # 20 status flushes
            while time.monotonic() < end:
                assert await asyncio.to_thread(task_state, cluster, victim.id) == (
                    types_pb2.RUNNING
                )
                await asyncio.sleep(0.2)  # the pace of the look, not a wait for state
            # orch node rm: the open session is closed at once, a new one refused.
            await asyncio.to_thread(orch, "node", "rm", "--force", intruder)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async with asyncio.timeout(10):
                    while await call.read() is not grpc.aio.EOF:
                        pass
                    pytest.fail("the session ended without a refusal")
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert f"node {intruder} was removed from the cluster" in err.value.details()
            again = stub.Session()
            with pytest.raises(grpc.aio.AioRpcError) as err:  # refused before it is read
                await again.write(dispatcher_pb2.AgentMessage(register=register))
                await asyncio.wait_for(again.read(), 10)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert f"node {intruder} was removed from the cluster" in err.value.details()

    try:
        asyncio.run(scenario())
        assert "intruder" not in node_ids(cluster)
    finally:
        orch("rm", "steady", check=False)
