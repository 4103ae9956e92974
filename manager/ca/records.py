"""The cluster CA's records in the store: one key for the cluster (CA, join tokens,
settings) and one per certificate issued.

- ``/orch/v1/identity/cluster``: cluster id, root CA certificate and **private key**, the
  chain sent with leaves (a rotation's), both join token secrets, the node certificate
  lifetime. Created once (``orch-manager init``, create-if-absent: a second init is
  refused). It holds the CA key, so etcd itself must be open to managers only (etcd
  client-certificate auth with an etcd CA of its own, see docs/identity.md).
- ``/orch/v1/identity/certs/<sha256 of the public key>``: node id, role, serial and
  not_after of every certificate issued, created-if-absent before the certificate leaves
  the manager. A second request for the same key is refused: a CSR (and the proof that
  came with it) seen on the wire cannot be replayed for another certificate.

The folder is not an object kind (``api.parse_key`` ignores it): the view never decodes it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, replace
from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from orch.errors import IdentityError
from orch.identity.ca import (
    CLOCK_SKEW,
    MIN_NODE_VALIDITY,
    NODE_VALIDITY,
    CertificateAuthority,
    Role,
    create_root_ca,
    utcnow,
)
from orch.identity.peer import identity_from_certificate
from orch.identity.tokens import JoinToken, JoinTokens, new_join_tokens, rotate_join_token
from orch.manager.state.api import PREFIX, Store

CLUSTER_KEY = f"{PREFIX}identity/cluster"
CERTS_PREFIX = f"{PREFIX}identity/certs/"
MAX_CERT_LIFETIME = timedelta(days=365)


def check_cert_lifetime(lifetime: timedelta) -> timedelta:
    if not MIN_NODE_VALIDITY <= lifetime <= MAX_CERT_LIFETIME:
        raise IdentityError(
            f"certificate lifetime {lifetime} is out of range "
            f"(accepted: {MIN_NODE_VALIDITY} to {MAX_CERT_LIFETIME.days} days)"
        )
    return lifetime


@dataclass(frozen=True)
class ClusterCA:
    """The cluster's signing CA, its live join tokens and the node certificate lifetime."""

    ca: CertificateAuthority
    tokens: JoinTokens
    cert_lifetime: timedelta = NODE_VALIDITY

    @property
    def cluster_id(self) -> str:
        return self.ca.cluster_id

    def rotated(self, role: Role) -> ClusterCA:
        return replace(self, tokens=rotate_join_token(self.tokens, role))

    def to_json(self) -> bytes:
        cert, key, chain = self.ca.to_pem()
        return json.dumps(
            {
                "cluster_id": self.ca.cluster_id,
                "ca_cert": cert.decode(),
                "ca_key": key.decode(),
                "ca_chain": chain.decode(),
                "worker_secret": self.tokens.worker.secret,
                "manager_secret": self.tokens.manager.secret,
                "cert_lifetime_seconds": int(self.cert_lifetime.total_seconds()),
            }
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ClusterCA:
        try:
            doc = json.loads(raw)
            ca = CertificateAuthority.from_pem(
                doc["ca_cert"].encode(), doc["ca_key"].encode(), doc["ca_chain"].encode()
            )
            digest = new_join_tokens(ca.cert).worker.ca_digest
            tokens = JoinTokens(
                worker=JoinToken(digest, doc["worker_secret"]),
                manager=JoinToken(digest, doc["manager_secret"]),
            )
            lifetime = timedelta(seconds=int(doc["cert_lifetime_seconds"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IdentityError(f"the cluster record {CLUSTER_KEY} is damaged: {exc}") from exc
        return cls(ca, tokens, lifetime)


def new_cluster(cert_lifetime: timedelta = NODE_VALIDITY) -> ClusterCA:
    ca = create_root_ca()
    return ClusterCA(ca, new_join_tokens(ca.cert), check_cert_lifetime(cert_lifetime))


async def load_cluster(store: Store) -> ClusterCA | None:
    kv = await store.get_key(CLUSTER_KEY)
    return None if kv is None else ClusterCA.from_json(kv.value)


async def require_cluster(store: Store) -> ClusterCA:
    cluster = await load_cluster(store)
    if cluster is None:
        raise IdentityError(
            "the store holds no cluster: run `orch-manager init` on the first manager"
        )
    return cluster


async def create_cluster(store: Store, cluster: ClusterCA) -> None:
    """Store a new cluster; refused if the store already holds one."""
    created = await store.create_key(CLUSTER_KEY, cluster.to_json())
    if not created.created:
        existing = ClusterCA.from_json(created.holder.value) if created.holder else None
        which = f" {existing.cluster_id}" if existing else ""
        raise IdentityError(
            f"the store already holds cluster{which}: refusing to initialise another; "
            "join it with a manager token instead"
        )


async def rotate_token(store: Store, role: Role) -> ClusterCA:
    """A new secret for ``role``'s join token; the old one admits no one from now on."""
    cluster = (await require_cluster(store)).rotated(role)
    await save_cluster(store, cluster)
    return cluster


async def save_cluster(store: Store, cluster: ClusterCA) -> None:
    """Write a changed cluster record (a rotated token, a new lifetime)."""
    await store.put_key(CLUSTER_KEY, cluster.to_json())


async def set_cert_lifetime(store: Store, lifetime: timedelta) -> None:
    """Change the lifetime of node certificates issued from now on."""
    cluster = await require_cluster(store)
    if cluster.cert_lifetime != check_cert_lifetime(lifetime):
        await save_cluster(store, replace(cluster, cert_lifetime=lifetime))


def key_digest(cert_or_key: x509.Certificate | x509.CertificateSigningRequest) -> str:
    der = cert_or_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


async def record_certificate(store: Store, cert: x509.Certificate, *, name: str = "") -> None:
    """Record an issued certificate under its key, before it is handed out; IdentityError
    if that key already has one (a replayed or reused CSR)."""
    who = identity_from_certificate(cert)
    record = {
        "node_id": who.node_id,
        "role": who.role.value,
        "serial": f"{who.serial:x}",
        "not_after": who.not_after.isoformat(),
    }
    if name:
        record["name"] = name
    # On a lease that ends with the certificate (plus the clock skew a peer allows): the
    # records stay bounded by the certificates that can still be valid, renewals included.
    remaining = who.not_after - utcnow() + CLOCK_SKEW
    lease = await store.grant_lease(max(1, math.ceil(remaining.total_seconds())))
    created = await store.create_key(
        CERTS_PREFIX + key_digest(cert), json.dumps(record).encode(), lease=lease
    )
    if not created.created:
        await store.revoke_lease(lease)
        raise IdentityError(
            "a certificate was already issued for this request's key: a certificate "
            "request is used once (make a new key to join or renew)"
        )
