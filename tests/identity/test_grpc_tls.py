"""A real mTLS handshake on loopback with grpc.aio and certificates from orch.identity.

The server (tlsserver.py) is what the Dispatcher and the Control API will be:
ssl_server_credentials with require_client_auth, the caller's identity read from
``context.auth_context()`` only.
"""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest

from orch.identity import ca as pki
from orch.identity.lifecycle import DenyList
from orch.identity.peer import identity_from_auth_context
from orch.identity.rotation import start_rotation

from .pki import Issued, issue
from .tlsserver import Whoami, client_creds, mtls_server, refused, serve, who


@pytest.fixture(scope="module")
def cluster() -> pki.CertificateAuthority:
    return pki.create_root_ca()


@pytest.fixture(scope="module")
def manager(cluster: pki.CertificateAuthority) -> Issued:
    return issue(cluster, pki.Role.MANAGER)


@pytest.fixture
def roots(cluster: pki.CertificateAuthority) -> bytes:
    return pki.cert_pem(cluster.cert)


@pytest.mark.parametrize("role", list(pki.Role))
async def test_the_server_sees_the_role_and_node_id_the_ca_wrote(
    cluster: pki.CertificateAuthority, manager: Issued, roots: bytes, role: pki.Role
) -> None:
    node_id = pki.new_id()
    client = issue(cluster, role, node_id=node_id)
    async with serve(mtls_server(manager, roots), Whoami(cluster.cluster_id)) as port:
        seen = await who(port, client_creds(roots, client))
    assert seen == {"node_id": node_id, "role": role.value, "cluster": cluster.cluster_id}


async def test_a_client_certificate_of_another_ca_fails_the_handshake(
    cluster: pki.CertificateAuthority, manager: Issued, roots: bytes
) -> None:
    stranger = issue(pki.create_root_ca(), pki.Role.ADMIN)
    async with serve(mtls_server(manager, roots), Whoami(cluster.cluster_id)) as port:
        assert await refused(port, client_creds(roots, stranger)) == grpc.StatusCode.UNAVAILABLE


async def test_no_client_certificate_or_no_tls_fails(
    cluster: pki.CertificateAuthority, manager: Issued, roots: bytes
) -> None:
    async with serve(mtls_server(manager, roots), Whoami(cluster.cluster_id)) as port:
        assert await refused(port, client_creds(roots, None)) == grpc.StatusCode.UNAVAILABLE
        assert await refused(port, None) == grpc.StatusCode.UNAVAILABLE


async def test_an_expired_client_certificate_fails_the_handshake(
    cluster: pki.CertificateAuthority, manager: Issued, roots: bytes
) -> None:
    # Issued two days ago for one day: expired, without waiting for it.
    past = pki.utcnow() - timedelta(days=2)
    expired = issue(cluster, pki.Role.WORKER, validity=timedelta(days=1), now=past)
    async with serve(mtls_server(manager, roots), Whoami(cluster.cluster_id)) as port:
        assert await refused(port, client_creds(roots, expired)) == grpc.StatusCode.UNAVAILABLE


async def test_a_client_that_does_not_trust_the_server_ca_fails(
    cluster: pki.CertificateAuthority, manager: Issued, roots: bytes
) -> None:
    client = issue(cluster)
    wrong_roots = pki.cert_pem(pki.create_root_ca().cert)
    async with serve(mtls_server(manager, roots), Whoami(cluster.cluster_id)) as port:
        assert await refused(port, client_creds(wrong_roots, client)) == grpc.StatusCode.UNAVAILABLE


async def test_a_removed_nodes_valid_certificate_is_denied_after_the_handshake(
    cluster: pki.CertificateAuthority, manager: Issued, roots: bytes
) -> None:
    removed = issue(cluster)
    removed_id = identity_from_auth_context(
        {"transport_security_type": [b"ssl"], "x509_pem_cert": [pki.cert_pem(removed.cert)]}
    ).node_id
    whoami = Whoami(cluster.cluster_id, DenyList().deny_nodes([removed_id]))
    async with serve(mtls_server(manager, roots), whoami) as port:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await who(port, client_creds(roots, removed))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert f"node {removed_id} was removed" in (err.value.details() or "")
        assert (await who(port, client_creds(roots, issue(cluster))))["role"] == "worker"


async def test_a_renewed_server_certificate_is_picked_up_without_a_restart(
    cluster: pki.CertificateAuthority, roots: bytes
) -> None:
    """dynamic_ssl_server_credentials asks the fetcher on every new connection; the
    manager's renewal loop will swap the configuration it returns."""
    past = pki.utcnow() - timedelta(days=2)
    stale = issue(cluster, pki.Role.MANAGER, validity=timedelta(days=1), now=past)
    current = {
        "config": grpc.ssl_server_certificate_configuration(
            [(stale.key_pem, stale.chain_pem)], roots
        )
    }
    fetched: list[int] = []

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        fetched.append(1)
        return current.pop("config", None)  # None: keep what the server has

    credentials = grpc.dynamic_ssl_server_credentials(
        current["config"], fetch, require_client_authentication=True
    )
    client = client_creds(roots, issue(cluster))
    async with serve(credentials, Whoami(cluster.cluster_id)) as port:
        assert await refused(port, client) == grpc.StatusCode.UNAVAILABLE  # expired server cert
        renewed = issue(cluster, pki.Role.MANAGER)
        current["config"] = grpc.ssl_server_certificate_configuration(
            [(renewed.key_pem, renewed.chain_pem)], roots
        )
        assert (await who(port, client))["cluster"] == cluster.cluster_id
    assert fetched  # the fetcher really ran


async def test_during_a_ca_rotation_old_and_new_nodes_talk(
    cluster: pki.CertificateAuthority,
) -> None:
    """The swarmkit scheme end to end: the manager serves a new-key certificate with the
    cross-signed one after it and trusts both roots; a node still trusting only the old
    root accepts it, and nodes holding old or new leaves are both accepted."""
    old_roots = pki.cert_pem(cluster.cert)
    plan = start_rotation(cluster)
    bundle = pki.cert_pem(*plan.trust_bundle)
    manager = issue(plan.signing_ca, pki.Role.MANAGER)
    old_node, new_node = issue(cluster), issue(plan.signing_ca)
    async with serve(mtls_server(manager, bundle), Whoami(cluster.cluster_id)) as port:
        assert (await who(port, client_creds(old_roots, old_node)))["role"] == "worker"
        assert (await who(port, client_creds(old_roots, new_node)))["role"] == "worker"
        assert (await who(port, client_creds(bundle, new_node)))["role"] == "worker"
    # A manager that has not loaded the bundle yet still accepts a renewed node: the node
    # sends the cross-signed certificate after its leaf.
    lagging = issue(cluster, pki.Role.MANAGER)
    async with serve(mtls_server(lagging, old_roots), Whoami(cluster.cluster_id)) as port:
        assert (await who(port, client_creds(bundle, new_node)))["role"] == "worker"
    # A manager that trusts only the new root (the rotation finished) refuses old leaves.
    finished = issue(plan.new_root, pki.Role.MANAGER)
    new_roots = pki.cert_pem(plan.new_root.cert)
    async with serve(mtls_server(finished, new_roots), Whoami(cluster.cluster_id)) as port:
        assert await refused(port, client_creds(new_roots, old_node)) == grpc.StatusCode.UNAVAILABLE
        assert (await who(port, client_creds(new_roots, new_node)))["role"] == "worker"
