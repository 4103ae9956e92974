"""Peer identity: from a verified certificate, from grpc's auth_context, by verification."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from orch.errors import IdentityError
from orch.identity import ca as pki
from orch.identity.peer import (
    NodeIdentity,
    identity_from_auth_context,
    identity_from_certificate,
    verify_chain,
)

from .pki import issue

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ROOT = pki.create_root_ca(now=NOW - timedelta(days=1))


def _signed_with_subject(attrs: list[x509.NameAttribute]) -> x509.Certificate:
    """A certificate of our CA with a subject orch would never write."""
    key = pki.new_private_key()
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ROOT.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
        .sign(ROOT.key, hashes.SHA256())
    )


def _auth_context(cert: x509.Certificate, **override: list[bytes]) -> dict[str, list[bytes]]:
    """The dict grpc's ``context.auth_context()`` gives for a TLS peer."""
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    return {
        "transport_security_type": [b"ssl"],
        "security_level": [b"TSI_PRIVACY_AND_INTEGRITY"],
        "x509_common_name": [cn.encode()],
        "x509_pem_cert": [pki.cert_pem(cert)],
        **override,
    }


def test_identity_is_the_name_the_ca_wrote() -> None:
    node_id = pki.new_id()
    cert = issue(ROOT, pki.Role.MANAGER, node_id=node_id, now=NOW).cert
    assert identity_from_certificate(cert, cluster_id=ROOT.cluster_id) == NodeIdentity(
        node_id, pki.Role.MANAGER, ROOT.cluster_id, cert.serial_number, cert.not_valid_after_utc
    )


def test_a_certificate_of_another_cluster_is_refused_when_asked() -> None:
    cert = issue(pki.create_root_ca(), now=NOW).cert
    assert identity_from_certificate(cert).cluster_id != ROOT.cluster_id
    with pytest.raises(IdentityError, match="not of this cluster"):
        identity_from_certificate(cert, cluster_id=ROOT.cluster_id)


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ([(NameOID.COMMON_NAME, "a" * 25), (NameOID.ORGANIZATION_NAME, "c")], "0 OU"),
        (
            [
                (NameOID.COMMON_NAME, "a" * 25),
                (NameOID.ORGANIZATIONAL_UNIT_NAME, "worker"),
                (NameOID.ORGANIZATIONAL_UNIT_NAME, "manager"),
                (NameOID.ORGANIZATION_NAME, "c"),
            ],
            "2 OU",
        ),
        (
            [
                (NameOID.COMMON_NAME, "a" * 25),
                (NameOID.ORGANIZATIONAL_UNIT_NAME, "root"),
                (NameOID.ORGANIZATION_NAME, "c"),
            ],
            "role 'root'; expected one of admin, manager, worker",
        ),
        (
            [
                (NameOID.COMMON_NAME, "localhost"),
                (NameOID.ORGANIZATIONAL_UNIT_NAME, "worker"),
                (NameOID.ORGANIZATION_NAME, "c"),
            ],
            "not an orch node id",
        ),
    ],
    ids=["no-ou", "two-ou", "unknown-role", "bad-cn"],
)
def test_certificates_orch_would_not_write_are_refused(
    attrs: list[tuple[x509.ObjectIdentifier, str]], expected: str
) -> None:
    cert = _signed_with_subject([x509.NameAttribute(oid, v) for oid, v in attrs])
    with pytest.raises(IdentityError, match=expected):
        identity_from_certificate(cert)


def test_identity_from_grpc_auth_context() -> None:
    cert = issue(ROOT, pki.Role.WORKER, now=NOW).cert
    identity = identity_from_auth_context(_auth_context(cert), cluster_id=ROOT.cluster_id)
    assert identity == identity_from_certificate(cert)
    # grpc's values are lists (a key may repeat); a tuple works too.
    as_tuples = {k: tuple(v) for k, v in _auth_context(cert).items()}
    assert identity_from_auth_context(as_tuples) == identity


def test_a_peer_without_tls_has_no_identity() -> None:
    cert = issue(ROOT, now=NOW).cert
    with pytest.raises(IdentityError, match=r"not on a TLS channel \(transport security insecure"):
        identity_from_auth_context(_auth_context(cert, transport_security_type=[b"insecure"]))
    with pytest.raises(IdentityError, match="transport security none"):
        identity_from_auth_context({})


def test_a_tls_peer_without_a_client_certificate_has_no_identity() -> None:
    with pytest.raises(IdentityError, match="no client certificate"):
        identity_from_auth_context({"transport_security_type": [b"ssl"]})


def test_grpc_cn_and_certificate_must_agree() -> None:
    cert = issue(ROOT, now=NOW).cert
    with pytest.raises(IdentityError, match="grpc reports the peer's CN"):
        identity_from_auth_context(_auth_context(cert, x509_common_name=[b"b" * 25]))


def test_verify_chain_accepts_our_leaves_and_refuses_others() -> None:
    issued = issue(ROOT, now=NOW, validity=timedelta(hours=1))
    identity = verify_chain(issued.chain, [ROOT.cert], now=NOW, cluster_id=ROOT.cluster_id)
    assert identity.node_id == identity_from_certificate(issued.cert).node_id
    stranger = issue(pki.create_root_ca(now=NOW - timedelta(days=1)), now=NOW)
    with pytest.raises(IdentityError, match="does not verify against the cluster's roots"):
        verify_chain(stranger.chain, [ROOT.cert], now=NOW)


def test_verify_chain_refuses_an_expired_or_not_yet_valid_leaf() -> None:
    issued = issue(ROOT, now=NOW, validity=timedelta(minutes=10))
    with pytest.raises(IdentityError, match="does not verify"):
        verify_chain(issued.chain, [ROOT.cert], now=NOW + timedelta(minutes=11))
    with pytest.raises(IdentityError, match="does not verify"):
        verify_chain(issued.chain, [ROOT.cert], now=NOW - timedelta(hours=1))


def test_verify_chain_needs_a_chain_and_roots() -> None:
    with pytest.raises(IdentityError, match="no certificate"):
        verify_chain([], [ROOT.cert])
    with pytest.raises(IdentityError, match="no trusted root"):
        verify_chain(issue(ROOT).chain, [])
