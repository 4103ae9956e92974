"""The cluster CA: a self-signed ECDSA P-256 root, and node certificates signed from CSRs.

A node certificate names its holder the way swarmkit does: CN = node id (chosen by the CA
side, never by the node), OU = role, O = cluster id. The CA reads nothing from a CSR but
its public key: a CSR is attacker-controlled input, so its subject and extensions are
ignored rather than filtered.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from orch.errors import IdentityError

ROOT_VALIDITY = timedelta(days=20 * 365)
"""A root lives long (swarmkit: 20 years); it is replaced by rotation, not by expiry."""

NODE_VALIDITY = timedelta(days=90)
MIN_NODE_VALIDITY = timedelta(minutes=1)
"""Tests and drills use certificates of minutes; below a minute renewal cannot keep up."""

CLOCK_SKEW = timedelta(minutes=5)
"""not_before is set this far back so a peer whose clock lags a little accepts a
certificate issued just now."""

_CURVE = ec.SECP256R1
_HASH = hashes.SHA256
_ID_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


class Role(enum.StrEnum):
    """What a certificate lets its holder do: the OU of its subject."""

    ADMIN = "admin"  # the CLI: the Control API
    MANAGER = "manager"  # a manager: serves both APIs, peers with the other managers
    WORKER = "worker"  # an agent: the Dispatcher only


def new_id() -> str:
    """A 25-character base-36 id of 128 random bits: node ids and cluster ids (the same
    form as orch.model.new_id, kept here so the PKI core needs no protobuf)."""
    n = secrets.randbits(128)
    return "".join(_ID_DIGITS[(n // 36**i) % 36] for i in range(25))


def is_id(text: str) -> bool:
    return len(text) == 25 and all(c in _ID_DIGITS for c in text)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(_CURVE())


@dataclass(frozen=True)
class CertificateAuthority:
    """The signing half of the cluster CA, held by the managers only.

    ``chain`` is what a leaf it issues is sent with: empty normally, the cross-signed
    certificate of the new root during a rotation (see rotation.py), so nodes that still
    trust only the old root accept the new leaves.
    """

    cluster_id: str
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey = field(repr=False)
    chain: tuple[x509.Certificate, ...] = ()

    def chain_for(self, leaf: x509.Certificate) -> list[x509.Certificate]:
        """The certificates a holder of ``leaf`` presents in a TLS handshake."""
        return [leaf, *self.chain]

    def to_pem(self) -> tuple[bytes, bytes, bytes]:
        """(certificate, private key, chain) as PEM: what the managers keep in the store."""
        return cert_pem(self.cert), key_pem(self.key), cert_pem(*self.chain)

    @classmethod
    def from_pem(cls, cert: bytes, key: bytes, chain: bytes = b"") -> CertificateAuthority:
        """The CA ``to_pem`` wrote, checked: a CA certificate of this key, whose O is a
        cluster id, and a chain of CA certificates for the same key (a rotation's)."""
        root = load_certs(cert, what="the CA certificate")[0]
        try:
            private = serialization.load_pem_private_key(key, password=None)
        except (ValueError, TypeError) as exc:
            raise IdentityError(f"the CA key is not an unencrypted PEM key: {exc}") from exc
        if not isinstance(private, ec.EllipticCurvePrivateKey) or root.public_key() != (
            private.public_key()
        ):
            raise IdentityError("the CA key is not the key of the CA certificate")
        constraints = root.extensions.get_extension_for_class(x509.BasicConstraints).value
        orgs = root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        if not constraints.ca or len(orgs) != 1 or not is_id(str(orgs[0].value)):
            raise IdentityError(
                f"{root.subject.rfc4514_string()} is not an orch CA certificate "
                "(a CA whose O is the cluster id)"
            )
        extra = tuple(load_certs(chain, what="the CA chain")) if chain.strip() else ()
        if any(c.public_key() != root.public_key() for c in extra):
            raise IdentityError("the CA chain holds a certificate of another key")
        return cls(str(orgs[0].value), root, private, extra)


def _root_name(cluster_id: str, key: ec.EllipticCurvePrivateKey) -> x509.Name:
    # Each root gets its own CN (a tag of its key id): during a rotation the old and the
    # new root must differ by name, or the cross-signed certificate would look self-issued.
    tag = x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest.hex()[:8]
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"orch-ca-{tag}"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster_id),
        ]
    )


def _key_usage(*, signs: bool) -> x509.KeyUsage:
    """Signatures only; a CA's key also signs certificates and CRLs."""
    unused = ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement")
    off = dict.fromkeys((*unused, "encipher_only", "decipher_only"), False)
    return x509.KeyUsage(digital_signature=True, key_cert_sign=signs, crl_sign=signs, **off)


def _ca_extensions(
    builder: x509.CertificateBuilder,
    subject_key: ec.EllipticCurvePublicKey,
    issuer_key: ec.EllipticCurvePublicKey,
    path_length: int,
) -> x509.CertificateBuilder:
    return (
        builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=path_length), critical=True
        )
        .add_extension(
            _key_usage(signs=True),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key), critical=False
        )
    )


def create_root_ca(
    cluster_id: str | None = None,
    *,
    validity: timedelta = ROOT_VALIDITY,
    now: datetime | None = None,
) -> CertificateAuthority:
    """A new cluster: a new cluster id (unless given) and its self-signed root."""
    cluster_id = cluster_id or new_id()
    if not is_id(cluster_id):
        raise IdentityError(f"cluster id {cluster_id!r} is not a 25-character base-36 id")
    key = new_private_key()
    # path_length=1: one CA certificate may stand between a root and the leaves, which is
    # exactly the cross-signed one of a rotation; no deeper hierarchy is ever made.
    cert = self_signed_ca(
        _root_name(cluster_id, key), key, validity=validity, path_length=1, now=now or utcnow()
    )
    return CertificateAuthority(cluster_id, cert, key)


def self_signed_ca(
    name: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    *,
    validity: timedelta,
    path_length: int,
    now: datetime,
) -> x509.Certificate:
    """A self-signed CA certificate for ``key`` named ``name`` (the cluster's root, and
    etcd's own CA in etcdpki.py): backdated by CLOCK_SKEW, CA extensions of _ca_extensions."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + validity)
    )
    builder = _ca_extensions(builder, key.public_key(), key.public_key(), path_length=path_length)
    return builder.sign(key, _HASH())


def cross_sign(root: x509.Certificate, issuer: CertificateAuthority) -> x509.Certificate:
    """``root``'s name and key, certified by ``issuer``: a chain leaf -> this -> issuer's
    root verifies for a peer that trusts only ``issuer``. Never outlives ``issuer``."""
    public = root.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise IdentityError(f"cannot cross-sign {root.subject.rfc4514_string()}: not an EC key")
    not_after = min(root.not_valid_after_utc, issuer.cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(root.subject)
        .issuer_name(issuer.cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(root.not_valid_before_utc)
        .not_valid_after(not_after)
    )
    # path_length=0: below the cross-signed certificate come leaves only.
    builder = _ca_extensions(builder, public, issuer.key.public_key(), path_length=0)
    return builder.sign(issuer.key, _HASH())


def check_csr(csr: x509.CertificateSigningRequest) -> ec.EllipticCurvePublicKey:
    """The CSR's public key, once its signature proves the sender holds the private key
    and the key is the one kind orch issues for (ECDSA P-256)."""
    try:
        valid = csr.is_signature_valid
    except (InvalidSignature, ValueError) as exc:
        raise IdentityError(f"the certificate request cannot be checked: {exc}") from exc
    if not valid:
        raise IdentityError(
            "the certificate request's signature does not verify: it was not made with "
            "the key it carries"
        )
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, _CURVE):
        raise IdentityError(
            f"the certificate request carries a {type(key).__name__} key; orch issues "
            "certificates for ECDSA P-256 keys only"
        )
    return key


def issue_certificate(
    ca: CertificateAuthority,
    csr: x509.CertificateSigningRequest,
    *,
    node_id: str,
    role: Role,
    validity: timedelta = NODE_VALIDITY,
    now: datetime | None = None,
) -> x509.Certificate:
    """A node certificate for the CSR's key: CN = ``node_id`` (the CA side's choice),
    OU = ``role``, O = the cluster id. It never outlives the CA's own certificate."""
    if not is_id(node_id):
        raise IdentityError(f"node id {node_id!r} is not a 25-character base-36 id")
    role = Role(role)
    if validity < MIN_NODE_VALIDITY:
        raise IdentityError(
            f"certificate validity {validity} is below the minimum of {MIN_NODE_VALIDITY}"
        )
    public = check_csr(csr)
    now = now or utcnow()
    not_after = min(now + validity, ca.cert.not_valid_after_utc)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, node_id),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role.value),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ca.cluster_id),
        ]
    )
    # The SAN holds the node id and "orch-<role>": peers dial a manager by address but
    # check its certificate against the name "orch-manager" (grpc's
    # ssl_target_name_override), so no certificate needs to list IP addresses.
    names = [x509.DNSName(node_id), x509.DNSName(f"orch-{role.value}")]
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(signs=False),
            critical=True,
        )
        # Every node is a TLS client (agents, the CLI) and managers are servers too; one
        # certificate per node serves both, as in swarmkit.
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    return builder.sign(ca.key, _HASH())


# --- node side -------------------------------------------------------------------------


def create_csr(key: ec.EllipticCurvePrivateKey) -> x509.CertificateSigningRequest:
    """The node's request: only its public key and the proof it holds the private one.
    The subject is left empty because the CA chooses the name; the key never leaves."""
    return x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, _HASH())


# --- encodings -------------------------------------------------------------------------


def cert_pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    # Unencrypted PKCS#8: the file's 0600 mode in a 0700 directory protects it (see
    # material.py); encrypting it at rest needs a key-encryption key, a later feature.
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def csr_pem(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.PEM)


def load_certs(pem: bytes, *, what: str = "certificate data") -> list[x509.Certificate]:
    """Every certificate of a PEM bundle, in order; at least one."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise IdentityError(f"{what} is not a PEM certificate bundle: {exc}") from exc
    return certs


def load_csr(pem: bytes) -> x509.CertificateSigningRequest:
    try:
        return x509.load_pem_x509_csr(pem)
    except ValueError as exc:
        raise IdentityError(f"the certificate request is not a PEM CSR: {exc}") from exc


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer``'s key signed ``cert`` (a signature check, not a name match)."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
