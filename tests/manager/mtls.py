"""The manager's gRPC servers in tests as they run for real: mTLS with client certificates
required and the authorization interceptor (manager/authz.py), certificates per role from
a test CA made with orch.identity. Clients get channels with the certificate of the role
(and node id) a test plays."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc

from orch.identity import ca as pki
from orch.identity import channels
from orch.identity.lifecycle import DenyList
from orch.manager import authz

MANAGER_NAME = "orch-manager"  # every manager certificate's SAN; clients check against it


@dataclass(frozen=True)
class Cert:
    node_id: str
    role: pki.Role
    key_pem: bytes
    chain_pem: bytes


@dataclass
class ClusterCA:
    """A cluster's CA and the certificates a test hands out."""

    ca: pki.CertificateAuthority = field(default_factory=lambda: pki.create_root_ca(pki.new_id()))

    @property
    def cluster_id(self) -> str:
        return self.ca.cluster_id

    @property
    def roots(self) -> bytes:
        return pki.cert_pem(self.ca.cert)

    def issue(self, role: pki.Role, node_id: str | None = None) -> Cert:
        key = pki.new_private_key()
        node_id = node_id or pki.new_id()
        cert = pki.issue_certificate(self.ca, pki.create_csr(key), node_id=node_id, role=role)
        return Cert(node_id, role, pki.key_pem(key), pki.cert_pem(*self.ca.chain_for(cert)))

    def server_credentials(self) -> grpc.ServerCredentials:
        me = self.issue(pki.Role.MANAGER)
        return grpc.ssl_server_credentials(
            [(me.key_pem, me.chain_pem)], root_certificates=self.roots, require_client_auth=True
        )

    def credentials(self, cert: Cert | None) -> grpc.ChannelCredentials:
        if cert is None:
            return grpc.ssl_channel_credentials(self.roots)
        return grpc.ssl_channel_credentials(self.roots, cert.key_pem, cert.chain_pem)

    def channel(self, address: str, cert: Cert | None) -> grpc.aio.Channel:
        """A channel of its own (no subchannel shared with another certificate's)."""
        return grpc.aio.secure_channel(address, self.credentials(cert), options=OPTIONS)


OPTIONS = (
    ("grpc.ssl_target_name_override", MANAGER_NAME),
    ("grpc.use_local_subchannel_pool", 1),
)


@contextlib.asynccontextmanager
async def serve(
    ca: ClusterCA,
    add: Callable[[grpc.aio.Server], None],
    *,
    deny: authz.DenySource | None = None,
) -> AsyncIterator[tuple[grpc.aio.Server, str]]:
    """A grpc.aio server on loopback, as a manager serves: mTLS and the interceptor.
    ``add`` adds the servicers. Yields the server and its address."""
    server = grpc.aio.server(
        interceptors=authz.server_interceptors(ca.cluster_id, deny or DenyList())
    )
    add(server)
    port = server.add_secure_port("127.0.0.1:0", ca.server_credentials())
    await server.start()
    try:
        yield server, f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


def client_tls(ca: ClusterCA, cert: Cert) -> channels.ClientTLS:
    """What a client (e.g. the agent's Session) presents with ``cert``."""
    return channels.ClientTLS(cert.key_pem, cert.chain_pem, ca.roots)
