"""Cluster identity on a real local cluster (etcd, a manager, two hosts with agents), each
claim a refusal or a survival seen from the outside: no plaintext and no stranger on the
mTLS port, no expired certificate, no join with a wrong or foreign token, a rotated token
refused while joined nodes run on, and node certificates of two minutes renewed several
times with every task left running.

The cluster's node certificates live two minutes (CLUSTER_CERT_LIFETIME), so every test
here runs through renewals; the admin credentials of the CLI are not node certificates
and keep their 90 days.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from tests_support import STEADY_SERVICE, ControlProbe, Sampler, runc_running, wait_until

from orch.errors import IdentityError
from orch.identity import ca as pki
from orch.identity import channels
from orch.identity.errors import CAPinMismatchError
from orch.identity.join import join
from orch.identity.tokens import JoinToken, parse_join_token
from orch.manager.ca.records import load_cluster
from orch.manager.state.store import EtcdStore
from orch.proto import control_pb2, control_pb2_grpc, types_pb2

pytestmark = pytest.mark.integration

CLUSTER_NODES = 2
CLUSTER_CERT_LIFETIME = "2m"
RENEWALS = 2  # "several": each node's certificate replaced at least this many times

SERVICE = STEADY_SERVICE


def list_nodes(address: str, tls: channels.ClientTLS) -> control_pb2.ListNodesResponse:
    options = [("grpc.use_local_subchannel_pool", 1)]  # never a connection made before
    with channels.channel(address, tls, options=options) as channel:
        stub = control_pb2_grpc.ControlStub(channel)
        return stub.ListNodes(control_pb2.ListNodesRequest(), timeout=10)


def refused(address: str, tls: channels.ClientTLS | None) -> grpc.StatusCode:
    options = [("grpc.use_local_subchannel_pool", 1)]
    channel = (
        grpc.insecure_channel(address, options=options)
        if tls is None
        else channels.channel(address, tls, options=options)
    )
    with channel, pytest.raises(grpc.RpcError) as err:
        control_pb2_grpc.ControlStub(channel).ListNodes(control_pb2.ListNodesRequest(), timeout=10)
    return err.value.code()


async def cluster_ca(cluster):
    store = await EtcdStore.connect(cluster.record.etcd.split(","), tls=cluster.etcd_tls())
    try:
        return await load_cluster(store)
    finally:
        await store.close()


def test_the_admin_credentials_work_and_a_plaintext_channel_fails(cluster) -> None:
    assert len(list_nodes(cluster.managers[0], cluster.tls()).nodes) == CLUSTER_NODES
    assert refused(cluster.managers[0], None) == grpc.StatusCode.UNAVAILABLE


def test_a_client_certificate_of_another_ca_fails_the_handshake(cluster) -> None:
    other = pki.create_root_ca()
    key = pki.new_private_key()
    cert = pki.issue_certificate(
        other, pki.create_csr(key), node_id=pki.new_id(), role=pki.Role.ADMIN
    )
    stranger = channels.ClientTLS(pki.key_pem(key), pki.cert_pem(cert), cluster.tls().roots_pem)
    assert refused(cluster.managers[0], stranger) == grpc.StatusCode.UNAVAILABLE


def test_an_expired_certificate_is_refused(cluster) -> None:
    ca = asyncio.run(cluster_ca(cluster)).ca
    key = pki.new_private_key()
    cert = pki.issue_certificate(
        ca,
        pki.create_csr(key),
        node_id=pki.new_id(),
        role=pki.Role.ADMIN,
        validity=timedelta(minutes=1),
        now=pki.utcnow() - timedelta(hours=1),
    )
    expired = channels.ClientTLS(pki.key_pem(key), pki.cert_pem(cert), cluster.tls().roots_pem)
    assert refused(cluster.managers[0], expired) == grpc.StatusCode.UNAVAILABLE


def test_a_wrong_token_and_a_foreign_token_cannot_join(cluster) -> None:
    worker = parse_join_token(cluster.record.tokens["worker"])
    joins = cluster.record.join_addresses
    with pytest.raises(IdentityError, match="not valid: it was rotated, or mistyped"):
        asyncio.run(join(joins, str(JoinToken(worker.ca_digest, "z" * 25))))
    with pytest.raises(CAPinMismatchError, match="man in the middle"):
        asyncio.run(join(joins, str(JoinToken("7" * 50, worker.secret))))


def test_an_agent_with_a_wrong_token_says_so_and_exits(cluster, tmp_path: Path) -> None:
    token = cluster.record.tokens["worker"]
    wrong = token[:-25] + "0" * 25
    # Joining happens before the agent touches the host: the root netns will do.
    res = subprocess.run(
        agent_argv(cluster, tmp_path / "stranger"),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ORCH_JOIN_TOKEN": wrong},
    )
    assert res.returncode == 1
    assert "the join token is not valid" in res.stderr
    assert not (tmp_path / "stranger" / "tls" / "node.key").exists()


def agent_argv(cluster, state_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "orch.agent",
        "--state-dir", str(state_dir),
        "--manager", ",".join(cluster.managers),
        "--join-addr", ",".join(cluster.record.join_addresses),
        "--network-prefix", "orchzz",
    ]  # fmt: skip


def test_a_rotated_token_is_refused_and_joined_nodes_keep_running(orch, cluster) -> None:
    old = cluster.record.tokens["worker"]
    assert orch("join-token", "worker", "-q").stdout.strip() == old
    new = orch("join-token", "worker", "--rotate", "-q").stdout.strip()
    assert new != old and new[:57] == old[:57]  # same CA digest, new secret
    assert orch("join-token", "worker", "-q").stdout.strip() == new
    assert orch("join-token", "manager", "-q").stdout.strip() == cluster.record.tokens["manager"]
    with pytest.raises(IdentityError, match="rotated"):
        asyncio.run(join(cluster.record.join_addresses, old))
    nodes = orch.json("nodes")
    assert [n["status"] for n in nodes] == ["ready"] * CLUSTER_NODES
    _, who = asyncio.run(join(cluster.record.join_addresses, new))
    assert who.role is pki.Role.WORKER


def test_issue_admin_writes_working_credentials_made_here(orch, cluster, tmp_path) -> None:
    out = tmp_path / "alice"
    res = orch("ca", "issue-admin", "alice", "--out", str(out))
    assert "admin alice" in res.stdout
    assert out.stat().st_mode & 0o777 == 0o700
    alice = channels.load_admin_tls(out)
    assert len(list_nodes(cluster.managers[0], alice).nodes) == CLUSTER_NODES
    again = orch("ca", "issue-admin", "bob", "--out", str(out), check=False)
    assert again.returncode == 1 and "already holds admin credentials" in again.stderr


def serials(cluster) -> dict[str, int]:
    """The serial of every node certificate on disk: each agent's and the manager's."""
    paths = {
        a["hostname"]: Path(a["state_dir"]) / "tls" / "node.crt" for a in cluster.record.agents
    }
    paths["manager"] = cluster.state_dir / "manager-state" / "m0" / "tls" / "node.crt"
    return {who: pki.load_certs(path.read_bytes())[0].serial_number for who, path in paths.items()}


@pytest.mark.timeout(480)
def test_renewals_of_two_minute_certificates_keep_every_task_running(
    orch, cluster, tmp_path: Path
) -> None:
    path = tmp_path / "svc.yaml"
    path.write_text(SERVICE.replace("REGISTRY", cluster.record.registry))
    orch("apply", "-f", str(path))
    try:
        running = wait_until(
            lambda: len(orch.running("steady")) == 2 and orch.running("steady"), 60
        )
        before = {t["id"] for t in running}
        containers = {h: runc_running(cluster, h) for h in ("node1", "node2")}
        seen = {who: [serial] for who, serial in serials(cluster).items()}

        def renewed_enough() -> bool:
            for who, serial in serials(cluster).items():
                if serial != seen[who][-1]:
                    seen[who].append(serial)
            return all(len(s) > RENEWALS for s in seen.values())

        def steady(api: ControlProbe) -> tuple:
            tasks = api.tasks("steady", history=True)
            ready = [n.status.state for n in api.nodes().values()]
            return (
                {t.id for t in tasks},
                all(t.status.state == types_pb2.RUNNING for t in tasks),
                ready,
            )

        with ControlProbe(cluster) as api, Sampler(lambda: steady(api), 0.5, "steady") as s:
            # 2-minute certificates renew at 60-96 s of their life: two renewals each
            # within 192 s, plus slack for a loaded machine.
            wait_until(renewed_enough, 300, 1.0, f"{RENEWALS} renewals of every certificate")
        # Renewed at 50-80% of each life, not in a loop: at most one a minute.
        assert all(len(s) <= RENEWALS + 2 for s in seen.values()), seen
        s.assert_all(
            lambda v: v == (before, True, [types_pb2.NODE_READY] * CLUSTER_NODES),
            "the same tasks running and every node ready",
        )
        assert {h: runc_running(cluster, h) for h in ("node1", "node2")} == containers
        tasks = orch.tasks("steady", all=True)
        assert all(t["restart_count"] == 0 for t in tasks), json.dumps(tasks, indent=1)
        # The CLI still gets in, and the manager serves its renewed certificate.
        assert len(list_nodes(cluster.managers[0], cluster.tls()).nodes) == CLUSTER_NODES
    finally:
        orch("rm", "steady", check=False)
