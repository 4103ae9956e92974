"""A real mTLS handshake on loopback with grpc.aio and certificates from orch.identity.

The server is what the Dispatcher and the Control API will be: ssl_server_credentials
with require_client_auth, the caller's identity read from ``context.auth_context()`` only.
A generic handler answers with the identity it saw, so no proto is needed.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from datetime import timedelta

import grpc
import pytest

from orch.errors import IdentityError
from orch.identity import ca as pki
from orch.identity.errors import CertificateDeniedError
from orch.identity.lifecycle import DenyList
from orch.identity.peer import identity_from_auth_context
from orch.identity.rotation import start_rotation

from .pki import Issued, issue

SERVICE = "orch.test.Whoami"
METHOD = f"/{SERVICE}/Who"
MANAGER_NAME = "orch-manager"  # every manager certificate's SAN; peers check against it


class Whoami:
    """Answers with the caller's identity, or refuses the way the real servers will."""

    def __init__(self, cluster_id: str, deny: DenyList | None = None) -> None:
        self.cluster_id = cluster_id
        self.deny = deny or DenyList()

    async def who(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            identity = identity_from_auth_context(
                context.auth_context(), cluster_id=self.cluster_id
            )
            self.deny.check(identity)
        except CertificateDeniedError as exc:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        except IdentityError as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        return json.dumps(
            {
                "node_id": identity.node_id,
                "role": identity.role.value,
                "cluster": identity.cluster_id,
            }
        ).encode()


@contextlib.asynccontextmanager
async def serve(credentials: grpc.ServerCredentials, whoami: Whoami) -> AsyncIterator[int]:
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Who": grpc.unary_unary_rpc_method_handler(whoami.who)}
    )
    server.add_generic_rpc_handlers([handler])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


def mtls_server(server: Issued, roots: bytes) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials(
        [(server.key_pem, server.chain_pem)], root_certificates=roots, require_client_auth=True
    )


def client_creds(roots: bytes, client: Issued | None) -> grpc.ChannelCredentials:
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=roots)
    return grpc.ssl_channel_credentials(roots, client.key_pem, client.chain_pem)


async def who(port: int, credentials: grpc.ChannelCredentials | None) -> dict:
    # A local subchannel pool: every call here makes its own connection and handshake,
    # never one left by an earlier call with other credentials.
    options = [
        ("grpc.ssl_target_name_override", MANAGER_NAME),
        ("grpc.use_local_subchannel_pool", 1),
    ]
    target = f"127.0.0.1:{port}"
    channel = (
        grpc.aio.insecure_channel(target, options=options)
        if credentials is None
        else grpc.aio.secure_channel(target, credentials, options=options)
    )
    async with channel:
        return json.loads(await channel.unary_unary(METHOD)(b"", timeout=10))


async def refused(port: int, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await who(port, credentials)
    return err.value.code()


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
