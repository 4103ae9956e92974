"""Test helpers: real keys and certificates made with orch.identity itself."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from orch.identity import ca as pki


@dataclass(frozen=True)
class Issued:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    chain: list[x509.Certificate]

    @property
    def key_pem(self) -> bytes:
        return pki.key_pem(self.key)

    @property
    def chain_pem(self) -> bytes:
        return pki.cert_pem(*self.chain)


def issue(
    ca: pki.CertificateAuthority,
    role: pki.Role = pki.Role.WORKER,
    *,
    node_id: str | None = None,
    validity: timedelta = pki.NODE_VALIDITY,
    now: datetime | None = None,
) -> Issued:
    """What a join does: the node makes a key and CSR, the CA side picks the id and signs."""
    key = pki.new_private_key()
    cert = pki.issue_certificate(
        ca,
        pki.create_csr(key),
        node_id=node_id or pki.new_id(),
        role=role,
        validity=validity,
        now=now,
    )
    return Issued(key, cert, ca.chain_for(cert))
