"""Who is on the other end: taken only from the peer's verified certificate.

The TLS handshake (grpc, with require_client_auth) has already checked the chain against
the cluster's roots and the validity period; these functions read the name the CA wrote
and check it is well formed and of this cluster. Nothing a peer sends in a request
(a node id field, metadata) ever stands in for this.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID

from orch.errors import IdentityError
from orch.identity.ca import Role, is_id, load_certs, utcnow


@dataclass(frozen=True)
class NodeIdentity:
    node_id: str
    role: Role
    cluster_id: str
    serial: int
    not_after: datetime


def _one(cert: x509.Certificate, oid: x509.ObjectIdentifier, label: str) -> str:
    attrs = cert.subject.get_attributes_for_oid(oid)
    if len(attrs) != 1:
        raise IdentityError(
            f"the peer certificate {cert.subject.rfc4514_string()!r} has {len(attrs)} "
            f"{label} attributes; an orch node certificate has exactly one"
        )
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode()


def identity_from_certificate(
    cert: x509.Certificate, *, cluster_id: str | None = None
) -> NodeIdentity:
    """The identity a certificate names (CN node id, OU role, O cluster id). With
    ``cluster_id``, a certificate of another cluster is refused."""
    node_id = _one(cert, NameOID.COMMON_NAME, "CN")
    role_text = _one(cert, NameOID.ORGANIZATIONAL_UNIT_NAME, "OU")
    cert_cluster = _one(cert, NameOID.ORGANIZATION_NAME, "O")
    if not is_id(node_id):
        raise IdentityError(f"the peer certificate's CN {node_id!r} is not an orch node id")
    try:
        role = Role(role_text)
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise IdentityError(
            f"the peer certificate of node {node_id} has role {role_text!r}; expected one "
            f"of {roles}"
        ) from None
    if cluster_id is not None and cert_cluster != cluster_id:
        raise IdentityError(
            f"the peer certificate of node {node_id} is of cluster {cert_cluster}, not of "
            f"this cluster {cluster_id}"
        )
    return NodeIdentity(node_id, role, cert_cluster, cert.serial_number, cert.not_valid_after_utc)


def _first(auth: Mapping[str, Iterable[bytes]], key: str) -> bytes | None:
    values = list(auth.get(key) or ())
    return values[0] if values else None


def identity_from_auth_context(
    auth: Mapping[str, Iterable[bytes]], *, cluster_id: str | None = None
) -> NodeIdentity:
    """The identity of a grpc peer, from ``context.auth_context()``.

    grpc fills ``x509_pem_cert`` with the leaf the peer presented, after the handshake
    verified it (with require_client_auth=True no unverified peer gets this far). The CN
    grpc extracted itself must agree with the one we parse: a cheap guard against reading
    the wrong certificate."""
    security = _first(auth, "transport_security_type")
    if security != b"ssl":
        raise IdentityError(
            "the peer is not on a TLS channel "
            f"(transport security {security.decode() if security else 'none'}): no identity"
        )
    pem = _first(auth, "x509_pem_cert")
    if pem is None:
        raise IdentityError("the peer presented no client certificate: no identity")
    cert = load_certs(pem, what="the peer certificate")[0]
    identity = identity_from_certificate(cert, cluster_id=cluster_id)
    common_name = _first(auth, "x509_common_name")
    if common_name is not None and common_name.decode() != identity.node_id:
        raise IdentityError(
            f"grpc reports the peer's CN as {common_name.decode()!r} but its certificate "
            f"names {identity.node_id!r}"
        )
    return identity


def verify_chain(
    chain: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    *,
    now: datetime | None = None,
    cluster_id: str | None = None,
) -> NodeIdentity:
    """Verify ``chain`` (leaf first, then intermediates) up to one of ``roots`` at ``now``,
    as a TLS peer would, and return the leaf's identity. Used where no handshake does it:
    a joining node checking the certificate it was issued, a rotation's dry run."""
    if not chain:
        raise IdentityError("no certificate to verify")
    if not roots:
        raise IdentityError("no trusted root to verify against")
    leaf, *intermediates = chain
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store(list(roots)))
        .time(now or utcnow())
        .build_client_verifier()
    )
    try:
        verifier.verify(leaf, intermediates)
    except verification.VerificationError as exc:
        raise IdentityError(
            f"the certificate {leaf.subject.rfc4514_string()!r} does not verify against "
            f"the cluster's roots: {exc}"
        ) from exc
    return identity_from_certificate(leaf, cluster_id=cluster_id)
