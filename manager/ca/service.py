"""The CA's two doors: NodeCA on the join port (plaintext: the roots, and joins proved
with a token's secret) and NodeCertificates on the mTLS port (renewal, the caller named
by its verified certificate only). Every input is bounded and checked before the store
is touched; a refusal is one line (UNAUTHENTICATED for a bad token or request,
grpcerrors.py)."""

from __future__ import annotations

import logging
import re

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from orch import grpcerrors
from orch.errors import IdentityError, OrchError, ValidationError
from orch.identity.ca import (
    NODE_VALIDITY,
    Role,
    cert_pem,
    check_csr,
    issue_certificate,
    load_csr,
    new_id,
)
from orch.identity.lifecycle import renew_certificate
from orch.identity.tokens import PROOF_BYTES, role_for_proof
from orch.manager import authz
from orch.manager.ca.records import ClusterCA, record_certificate, require_cluster, rotate_token
from orch.manager.state.api import Store
from orch.proto import ca_pb2, ca_pb2_grpc

log = logging.getLogger(__name__)

ADMIN_VALIDITY = NODE_VALIDITY
"""Admin (CLI) certificates are not renewed automatically: they get the default node
lifetime whatever the cluster's --cert-lifetime (a test cluster of 2-minute node
certificates keeps a working CLI)."""

MAX_CSR_BYTES = 4096
"""A P-256 CSR in PEM is about 400 bytes; anything much larger is not one of ours."""


def parse_csr(pem: bytes) -> x509.CertificateSigningRequest:
    """The request's CSR, bounded and checked (signature, key type) before anything else."""
    if not pem:
        raise IdentityError("the request carries no certificate request (csr_pem is empty)")
    if len(pem) > MAX_CSR_BYTES:
        raise IdentityError(
            f"the certificate request is {len(pem)} bytes; at most {MAX_CSR_BYTES} accepted"
        )
    csr = load_csr(pem)
    check_csr(csr)
    return csr


def roots_of(cluster: ClusterCA) -> bytes:
    return cert_pem(cluster.ca.cert)


class NodeCAService(ca_pb2_grpc.NodeCAServicer):
    """The join port's service: public roots, and joins."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def GetRootCA(
        self, request: ca_pb2.GetRootCARequest, context: grpc.aio.ServicerContext
    ) -> ca_pb2.GetRootCAResponse:
        try:
            cluster = await require_cluster(self._store)
        except OrchError as exc:
            await grpcerrors.abort(context, exc)
        return ca_pb2.GetRootCAResponse(roots_pem=roots_of(cluster))

    async def Join(
        self, request: ca_pb2.JoinRequest, context: grpc.aio.ServicerContext
    ) -> ca_pb2.JoinResponse:
        try:
            if len(request.proof) != PROOF_BYTES or len(request.token_digest) > 64:
                raise IdentityError(
                    f"malformed join request: the proof must be {PROOF_BYTES} bytes of "
                    "HMAC-SHA256 and the digest a join token's"
                )
            csr = parse_csr(request.csr_pem)
            cluster = await require_cluster(self._store)
            der = csr.public_bytes(serialization.Encoding.DER)
            role = role_for_proof(request.token_digest, der, request.proof, cluster.tokens)
            node_id = new_id()
            cert = issue_certificate(
                cluster.ca, csr, node_id=node_id, role=role, validity=cluster.cert_lifetime
            )
            await record_certificate(self._store, cert)
        except OrchError as exc:
            log.warning("join refused (peer %s): %s", context.peer(), exc)
            await grpcerrors.abort(context, exc)
        log.info("node %s joined as %s (peer %s)", node_id, role.value, context.peer())
        return ca_pb2.JoinResponse(chain_pem=cert_pem(*cluster.ca.chain_for(cert)))


ADMIN_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


def _join_role(text: str) -> Role:
    if text not in (Role.WORKER.value, Role.MANAGER.value):
        raise ValidationError(f"role: {text[:20]!r} has no join token (accepted: worker, manager)")
    return Role(text)


class ClusterCAService(ca_pb2_grpc.ClusterCAServicer):
    """Join tokens and admin certificates, for admins (the CLI) only."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def JoinToken(
        self, request: ca_pb2.JoinTokenRequest, context: grpc.aio.ServicerContext
    ) -> ca_pb2.JoinTokenResponse:
        try:
            role = _join_role(request.role)
            cluster = await require_cluster(self._store)
            peer = authz.caller(context)  # an admin: authz.POLICY lets no one else in
            if request.rotate:
                cluster = await rotate_token(self._store, role)
                log.info("join token of %s rotated by admin %s", role.value, peer.node_id)
        except OrchError as exc:
            await grpcerrors.abort(context, exc)
        return ca_pb2.JoinTokenResponse(token=str(cluster.tokens.for_role(role)))

    async def IssueAdmin(
        self, request: ca_pb2.IssueAdminRequest, context: grpc.aio.ServicerContext
    ) -> ca_pb2.IssueAdminResponse:
        try:
            if not ADMIN_NAME.fullmatch(request.name):
                raise ValidationError(
                    f"name: {request.name[:70]!r} is not an admin name (accepted: 1-63 of "
                    "a-z 0-9 . _ -, starting with a letter or digit)"
                )
            csr = parse_csr(request.csr_pem)
            cluster = await require_cluster(self._store)
            peer = authz.caller(context)  # an admin: authz.POLICY lets no one else in
            node_id = new_id()
            cert = issue_certificate(
                cluster.ca, csr, node_id=node_id, role=Role.ADMIN, validity=ADMIN_VALIDITY
            )
            await record_certificate(self._store, cert, name=request.name)
        except OrchError as exc:
            await grpcerrors.abort(context, exc)
        log.info("admin %s (%s) issued by admin %s", request.name, node_id, peer.node_id)
        return ca_pb2.IssueAdminResponse(
            chain_pem=cert_pem(*cluster.ca.chain_for(cert)),
            roots_pem=roots_of(cluster),
            node_id=node_id,
        )


class NodeCertificatesService(ca_pb2_grpc.NodeCertificatesServicer):
    """Renewal on the mTLS port: who renews is read from the verified peer certificate."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def Renew(
        self, request: ca_pb2.RenewRequest, context: grpc.aio.ServicerContext
    ) -> ca_pb2.RenewResponse:
        try:
            csr = parse_csr(request.csr_pem)
            cluster = await require_cluster(self._store)
            peer = authz.caller(context)  # from the verified certificate, never the request
            cert = renew_certificate(cluster.ca, csr, peer, validity=cluster.cert_lifetime)
            await record_certificate(self._store, cert)
        except OrchError as exc:
            log.warning("renewal refused (peer %s): %s", context.peer(), exc)
            await grpcerrors.abort(context, exc)
        log.info("renewed the certificate of node %s (%s)", peer.node_id, peer.role.value)
        return ca_pb2.RenewResponse(
            chain_pem=cert_pem(*cluster.ca.chain_for(cert)), roots_pem=roots_of(cluster)
        )
