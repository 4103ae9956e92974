"""A whole manager on a real etcd, its ports as a client meets them: `init`, the mTLS port
(no plaintext, no stranger's certificate, no expired one), the plaintext join port
(tokens proved by HMAC, pinned roots, replayed CSRs), renewal, and a second manager
joining with the manager token."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from tests_support import EtcdMembers

from orch.errors import IdentityError
from orch.identity import ca as pki
from orch.identity import channels
from orch.identity.errors import CAPinMismatchError
from orch.identity.join import join
from orch.identity.material import load_node_material
from orch.identity.peer import identity_from_certificate
from orch.identity.tokens import JoinToken, join_proof
from orch.manager.ca.records import ClusterCA, load_cluster, save_cluster, set_cert_lifetime
from orch.manager.ca.tls import init_cluster
from orch.manager.main import Manager, ManagerSettings
from orch.manager.state.store import EtcdStore
from orch.proto import ca_pb2, ca_pb2_grpc, control_pb2, control_pb2_grpc


@dataclass
class Running:
    manager: Manager
    task: asyncio.Task
    cluster: ClusterCA
    admin: channels.ClientTLS

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.manager.port}"

    @property
    def join_address(self) -> str:
        return f"127.0.0.1:{self.manager.join_port}"


async def start(settings: ManagerSettings, etcd: EtcdMembers) -> tuple[Manager, asyncio.Task]:
    manager = Manager(settings)
    started = asyncio.Event()
    store = await EtcdStore.connect(etcd.endpoints, tls=etcd.tls)
    task = asyncio.create_task(manager.run(started, store=store))
    done, _ = await asyncio.wait(
        [task, asyncio.create_task(started.wait())], timeout=20, return_when="FIRST_COMPLETED"
    )
    if task in done:
        task.result()  # raises what stopped it
    assert started.is_set(), "the manager did not start within 20 s"
    return manager, task


async def stop(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.fixture
async def running(
    store: EtcdStore, session_etcd: EtcdMembers, tmp_path: Path
) -> AsyncIterator[Running]:
    cluster = await init_cluster(store, state_dir=tmp_path / "m1", admin_dir=tmp_path / "admin")
    admin = channels.load_admin_tls(tmp_path / "admin")
    settings = ManagerSettings(
        manager_id="m1",
        listen="127.0.0.1:0",
        etcd=session_etcd.endpoints,
        state_dir=tmp_path / "m1",
    )
    manager, task = await start(settings, session_etcd)
    try:
        yield Running(manager, task, cluster, admin)
    finally:
        await stop(task)


async def list_nodes(address: str, tls: channels.ClientTLS) -> control_pb2.ListNodesResponse:
    # A subchannel of its own: a connection made with other credentials is never reused.
    options = [("grpc.use_local_subchannel_pool", 1)]
    async with channels.aio_channel(address, tls, options=options) as channel:
        stub = control_pb2_grpc.ControlStub(channel)
        return await stub.ListNodes(control_pb2.ListNodesRequest(), timeout=10)


async def test_init_writes_private_admin_credentials_and_refuses_a_second_cluster(
    running: Running, store: EtcdStore, tmp_path: Path
) -> None:
    for name in ("ca.pem", "admin.pem", "admin-key.pem"):
        assert (tmp_path / "admin" / name).stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "admin").stat().st_mode & 0o777 == 0o700
    admin = identity_from_certificate(
        pki.load_certs(running.admin.chain_pem)[0], cluster_id=running.cluster.cluster_id
    )
    assert admin.role is pki.Role.ADMIN
    with pytest.raises(IdentityError, match="already holds cluster"):
        await init_cluster(store, state_dir=tmp_path / "m9", admin_dir=tmp_path / "admin9")
    assert not (tmp_path / "m9").exists() and not (tmp_path / "admin9").exists()
    assert (await load_cluster(store)).cluster_id == running.cluster.cluster_id


async def test_the_admin_certificate_reaches_the_control_api(running: Running) -> None:
    await list_nodes(running.address, running.admin)


async def test_a_plaintext_channel_to_the_main_port_fails(running: Running) -> None:
    async with grpc.aio.insecure_channel(running.address) as channel:
        stub = control_pb2_grpc.ControlStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListNodes(control_pb2.ListNodesRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_client_certificate_of_another_ca_fails_the_handshake(running: Running) -> None:
    other = pki.create_root_ca()
    key = pki.new_private_key()
    cert = pki.issue_certificate(
        other, pki.create_csr(key), node_id=pki.new_id(), role=pki.Role.ADMIN
    )
    # It even trusts our root: only its own certificate is wrong.
    stranger = channels.ClientTLS(
        pki.key_pem(key), pki.cert_pem(cert), pki.cert_pem(running.cluster.ca.cert)
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await list_nodes(running.address, stranger)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_an_expired_certificate_is_refused_by_the_handshake(running: Running) -> None:
    key = pki.new_private_key()
    long_ago = pki.utcnow() - timedelta(days=1)
    cert = pki.issue_certificate(
        running.cluster.ca,
        pki.create_csr(key),
        node_id=pki.new_id(),
        role=pki.Role.ADMIN,
        validity=timedelta(minutes=2),
        now=long_ago,
    )
    expired = channels.ClientTLS(
        pki.key_pem(key), pki.cert_pem(cert), pki.cert_pem(running.cluster.ca.cert)
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await list_nodes(running.address, expired)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_worker_joins_through_the_join_port_and_renews_over_mtls(
    running: Running, tmp_path: Path
) -> None:
    from orch.agent.identity import obtain_identity

    agent = await obtain_identity(
        tmp_path / "agent",
        join_token=str(running.cluster.tokens.worker),
        join_addresses=[running.join_address],
    )
    assert agent.identity.role is pki.Role.WORKER
    assert agent.identity.cluster_id == running.cluster.cluster_id
    assert pki.is_id(agent.node_id)
    tls = tmp_path / "agent" / "tls"
    assert tls.stat().st_mode & 0o777 == 0o700
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in tls.iterdir())
    # A restart loads the same identity; no token needed.
    again = await obtain_identity(tmp_path / "agent")
    assert again.node_id == agent.node_id
    before = agent.current().leaf
    await agent.renew(running.address)
    after = load_node_material(tls).leaf
    assert identity_from_certificate(after).node_id == agent.node_id
    assert after.serial_number != before.serial_number
    assert after.public_key() != before.public_key()


async def test_a_wrong_secret_and_another_clusters_token_are_refused(running: Running) -> None:
    good = running.cluster.tokens.worker
    wrong = JoinToken(good.ca_digest, "0" * 25)
    with pytest.raises(IdentityError, match="not valid: it was rotated, or mistyped"):
        await join([running.join_address], str(wrong))
    # A token pinning another CA: the joiner refuses the roots it is served.
    other = JoinToken("1" * 50, good.secret)
    with pytest.raises(CAPinMismatchError, match="man in the middle"):
        await join([running.join_address], str(other))


async def join_raw(address: str, request: ca_pb2.JoinRequest) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ca_pb2_grpc.NodeCAStub(channel).Join(request, timeout=10)
    return err.value


def signed_request(secret: str, digest: str) -> ca_pb2.JoinRequest:
    csr = pki.create_csr(pki.new_private_key())
    der = csr.public_bytes(serialization.Encoding.DER)
    return ca_pb2.JoinRequest(
        token_digest=digest, csr_pem=pki.csr_pem(csr), proof=join_proof(secret, der)
    )


async def test_the_join_port_refuses_a_digest_of_another_ca_and_a_replayed_csr(
    running: Running,
) -> None:
    good = running.cluster.tokens.worker
    err = await join_raw(running.join_address, signed_request(good.secret, "1" * 50))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "pins another CA" in err.details()
    request = signed_request(good.secret, good.ca_digest)
    async with grpc.aio.insecure_channel(running.join_address) as channel:
        await ca_pb2_grpc.NodeCAStub(channel).Join(request, timeout=10)
    err = await join_raw(running.join_address, request)  # the same request again
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "already issued for this request's key" in err.details()
    huge = ca_pb2.JoinRequest(token_digest=good.ca_digest, csr_pem=b"x" * 5000, proof=b"p" * 32)
    err = await join_raw(running.join_address, huge)
    assert "at most 4096 accepted" in err.details()


async def test_a_rotated_token_is_refused_and_joined_nodes_keep_working(
    running: Running, store: EtcdStore, tmp_path: Path
) -> None:
    from orch.agent.identity import obtain_identity

    old = str(running.cluster.tokens.worker)
    agent = await obtain_identity(
        tmp_path / "a1", join_token=old, join_addresses=[running.join_address]
    )
    await save_cluster(store, running.cluster.rotated(pki.Role.WORKER))
    with pytest.raises(IdentityError, match="rotated"):
        await join([running.join_address], old)
    await agent.renew(running.address)  # the joined node still talks over mTLS
    fresh = (await load_cluster(store)).tokens.worker
    await join([running.join_address], str(fresh))


async def test_a_second_manager_joins_with_the_manager_token(
    running: Running, session_etcd: EtcdMembers, tmp_path: Path
) -> None:
    settings = ManagerSettings(
        manager_id="m2",
        listen="127.0.0.1:0",
        etcd=session_etcd.endpoints,
        state_dir=tmp_path / "m2",
        join_token=str(running.cluster.tokens.manager),
        join=[running.join_address],
    )
    m2, task = await start(settings, session_etcd)
    try:
        assert m2.identity is not None and m2.identity.identity.role is pki.Role.MANAGER
        await list_nodes(f"127.0.0.1:{m2.port}", running.admin)
    finally:
        await stop(task)
    # A worker token does not make a manager.
    worker = dataclass_replace(settings, state_dir=tmp_path / "m3", manager_id="m3")
    worker.join_token = str(running.cluster.tokens.worker)
    with pytest.raises(IdentityError, match="is a worker token"):
        await start(worker, session_etcd)


def dataclass_replace(settings: ManagerSettings, **changes: object) -> ManagerSettings:
    import dataclasses

    return dataclasses.replace(settings, **changes)


async def test_the_certificate_lifetime_is_a_cluster_setting_the_ca_reads(
    running: Running, store: EtcdStore
) -> None:
    await set_cert_lifetime(store, timedelta(minutes=3))
    material, _ = await join([running.join_address], str(running.cluster.tokens.worker))
    leaf = material.leaf
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(minutes=3) + (
        pki.CLOCK_SKEW
    )
    with pytest.raises(IdentityError, match="out of range"):
        await set_cert_lifetime(store, timedelta(seconds=30))


async def test_the_ca_administration_is_for_admins_only(running: Running, tmp_path: Path) -> None:
    from orch.agent.identity import obtain_identity

    agent = await obtain_identity(
        tmp_path / "a",
        join_token=str(running.cluster.tokens.worker),
        join_addresses=[running.join_address],
    )
    request = ca_pb2.JoinTokenRequest(role="manager")
    options = [("grpc.use_local_subchannel_pool", 1)]
    async with channels.aio_channel(running.address, agent.client_tls(), options=options) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ca_pb2_grpc.ClusterCAStub(ch).JoinToken(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "may not call orch.v1.ClusterCA/JoinToken" in err.value.details()
    async with channels.aio_channel(running.address, running.admin, options=options) as ch:
        stub = ca_pb2_grpc.ClusterCAStub(ch)
        answer = await stub.JoinToken(request, timeout=10)
        assert answer.token == str(running.cluster.tokens.manager)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.JoinToken(ca_pb2.JoinTokenRequest(role="admin"), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        bad = ca_pb2.IssueAdminRequest(name="../x", csr_pem=b"")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.IssueAdmin(bad, timeout=10)
        assert "is not an admin name" in err.value.details()


def test_presence_carries_the_advertised_address_never_a_wildcard() -> None:
    from orch.errors import ValidationError
    from orch.manager.main import advertised, check_advertise

    plain = ManagerSettings(manager_id="m", listen="10.0.0.5:7700")
    assert advertised(plain, 7700) == "10.0.0.5:7700"
    assert advertised(ManagerSettings(manager_id="m", listen="127.0.0.1:0"), 4242) == (
        "127.0.0.1:4242"
    )
    wild = ManagerSettings(manager_id="m", listen="0.0.0.0:7700")
    with pytest.raises(ValidationError, match="pass --advertise-addr"):
        check_advertise(wild)
    wild.advertise_addr = "10.0.0.5"
    check_advertise(wild)
    assert advertised(wild, 7700) == "10.0.0.5:7700"
    wild.advertise_addr = "m1.example:7800"
    assert advertised(wild, 7700) == "m1.example:7800"


async def test_a_state_dir_of_another_cluster_is_refused(
    store: EtcdStore, session_etcd: EtcdMembers, tmp_path: Path
) -> None:
    from orch.manager.state.memstore import MemoryStore

    elsewhere = MemoryStore()  # another cluster's store: its manager's state dir
    other = await init_cluster(elsewhere, state_dir=tmp_path / "m", admin_dir=tmp_path / "a1")
    ours = await init_cluster(store, state_dir=tmp_path / "ours", admin_dir=tmp_path / "a2")
    settings = ManagerSettings(
        manager_id="m", listen="127.0.0.1:0", etcd=session_etcd.endpoints, state_dir=tmp_path / "m"
    )
    with pytest.raises(IdentityError, match=f"of cluster {other.cluster_id}, but the store"):
        await start(settings, session_etcd)
    assert (await load_cluster(store)).cluster_id == ours.cluster_id


async def test_an_agent_whose_certificate_expired_must_join_again(
    running: Running, tmp_path: Path
) -> None:
    from orch.agent.identity import obtain_identity
    from orch.identity.material import NodeMaterial, save_node_material

    key = pki.new_private_key()
    cert = pki.issue_certificate(
        running.cluster.ca,
        pki.create_csr(key),
        node_id=pki.new_id(),
        role=pki.Role.WORKER,
        validity=timedelta(minutes=1),
        now=pki.utcnow() - timedelta(hours=1),
    )
    save_node_material(
        tmp_path / "old" / "tls", NodeMaterial(key, (cert,), (running.cluster.ca.cert,))
    )
    with pytest.raises(IdentityError, match=r"expired .* must join again"):
        await obtain_identity(tmp_path / "old")
    fresh = await obtain_identity(
        tmp_path / "old",
        join_token=str(running.cluster.tokens.worker),
        join_addresses=[running.join_address],
    )
    assert fresh.node_id != identity_from_certificate(cert).node_id
