"""A whole manager (Control API, dispatcher, election and the leader's loops) on a
MemoryStore, with two agents played by gRPC sessions: an apply of a network and a service
with a published port ends with every task addressed on the overlay, one replica per
node, the third replica pending with the port as the reason, and each agent told its
peers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from orch.identity import ca as pki
from orch.identity import channels
from orch.identity.channels import load_admin_tls
from orch.manager.ca.records import load_cluster
from orch.manager.ca.tls import init_cluster
from orch.manager.main import Manager, ManagerSettings
from orch.manager.state.memstore import MemoryStore
from orch.proto import (
    control_pb2,
    control_pb2_grpc,
    dispatcher_pb2,
    dispatcher_pb2_grpc,
    specs_pb2,
)
from orch.proto import types_pb2 as T

# Node ids as the CA writes them (25 characters of base 36); each agent's session dials
# with a worker certificate naming its id: the Dispatcher takes the id only from there.
A, B = "a" * 25, "b" * 25


@pytest.fixture
async def manager(memstore: MemoryStore, tmp_path: Path) -> AsyncIterator[Manager]:
    await init_cluster(memstore, state_dir=tmp_path / "m1", admin_dir=tmp_path / "admin")
    m = Manager(ManagerSettings(manager_id="m1", listen="127.0.0.1:0", state_dir=tmp_path / "m1"))
    started = asyncio.Event()
    running = asyncio.create_task(m.run(started, store=memstore))
    async with asyncio.timeout(20):
        await started.wait()
    m.admin = channels.aio_channel(f"127.0.0.1:{m.port}", load_admin_tls(tmp_path / "admin"))
    m.ca = (await load_cluster(memstore)).ca
    m.channels = []
    try:
        yield m
    finally:
        for channel in [m.admin, *m.channels]:
            await channel.close()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def session(m: Manager, node_id: str, addr: str) -> grpc.aio.StreamStreamCall:
    """A session as node ``node_id``, on a channel with that node's worker certificate."""
    key = pki.new_private_key()
    cert = pki.issue_certificate(m.ca, pki.create_csr(key), node_id=node_id, role=pki.Role.WORKER)
    tls = channels.ClientTLS(pki.key_pem(key), pki.cert_pem(cert), pki.cert_pem(m.ca.cert))
    channel = channels.aio_channel(f"127.0.0.1:{m.port}", tls)
    m.channels.append(channel)
    call = dispatcher_pb2_grpc.DispatcherStub(channel).Session()
    reg = dispatcher_pb2.Register(node_id=node_id)
    reg.description.hostname, reg.description.addr = node_id, addr
    await call.write(dispatcher_pb2.AgentMessage(register=reg))
    assert (await call.read()).WhichOneof("msg") == "started"
    return call


async def test_apply_allocates_places_by_port_and_tells_agents_their_peers(manager) -> None:
    control = control_pb2_grpc.ControlStub(manager.admin)
    agents = {n: await session(manager, n, a) for n, a in ((A, "10.212.0.11"), (B, "10.212.0.12"))}
    try:
        web = specs_pb2.ServiceSpec(name="web", replicas=3)
        web.container.image = "busybox"
        web.networks.add(target="front")
        web.ports.add(published=8080, target=80)
        await control.Apply(
            control_pb2.ApplyRequest(networks=[specs_pb2.NetworkSpec(name="front")], services=[web])
        )
        reason = "no suitable node (2 nodes): 2 with port 8080/tcp taken"

        async def settled() -> list:
            while True:
                tasks = (await control.ListTasks(control_pb2.ListTasksRequest())).tasks
                states = sorted(t.status.state for t in tasks)
                if states == [T.PENDING, T.ASSIGNED, T.ASSIGNED] and any(
                    t.status.err == reason for t in tasks
                ):
                    return list(tasks)
                await asyncio.sleep(0.05)  # polling the API is the test's own way to look

        async with asyncio.timeout(10):
            tasks = await settled()
        assert sorted(t.node_id for t in tasks) == ["", A, B]
        addresses = [t.attachments[0].addresses[0] for t in tasks]
        assert sorted(addresses) == ["10.10.0.2/24", "10.10.0.3/24", "10.10.0.4/24"]
        for t in tasks:
            assert [(p.published, p.target, p.protocol, p.mode) for p in t.ports] == [
                (8080, 80, "tcp", "host")
            ]

        # Each agent has its task and the network with the other node's task as a peer.
        by_node = {t.node_id: t for t in tasks if t.node_id}
        for node, other in ((A, B), (B, A)):
            async with asyncio.timeout(5):
                while True:
                    msg = await agents[node].read()
                    if msg.WhichOneof("msg") != "assignments":
                        continue
                    nets = {n.network.spec.name: n for n in msg.assignments.networks}
                    if "front" in nets and nets["front"].peers:
                        break
            [peer] = nets["front"].peers
            assert peer.task_id == by_node[other].id
            assert peer.node_addr == {A: "10.212.0.11", B: "10.212.0.12"}[other]
            assert nets["front"].network.vni == 4096
    finally:
        for call in agents.values():
            call.cancel()
