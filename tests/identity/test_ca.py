"""The cluster CA and the certificates it issues."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from orch.errors import IdentityError, OrchError
from orch.identity import ca as pki
from orch.identity.rotation import start_rotation

from .pki import issue

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def root() -> pki.CertificateAuthority:
    return pki.create_root_ca(now=NOW)


def _name(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> str:
    return cert.subject.get_attributes_for_oid(oid)[0].value


def test_root_is_a_self_signed_p256_ca(root: pki.CertificateAuthority) -> None:
    cert = root.cert
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert isinstance(cert.public_key().curve, ec.SECP256R1)
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert cert.subject == cert.issuer and pki.issued_by(cert, cert)
    assert pki.is_id(root.cluster_id) and _name(cert, NameOID.ORGANIZATION_NAME) == root.cluster_id
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 1
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(root.key.public_key())
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert cert.not_valid_after_utc - NOW == pki.ROOT_VALIDITY
    assert cert.not_valid_before_utc == NOW - pki.CLOCK_SKEW


def test_root_keeps_a_given_cluster_id_and_two_roots_differ_by_name() -> None:
    a = pki.create_root_ca("c" * 25)
    b = pki.create_root_ca("c" * 25)
    assert a.cluster_id == b.cluster_id == "c" * 25
    assert a.cert.subject != b.cert.subject  # rotation needs distinct names


def test_node_certificate_names_what_the_ca_chose(root: pki.CertificateAuthority) -> None:
    node_id = pki.new_id()
    issued = issue(root, pki.Role.MANAGER, node_id=node_id, now=NOW)
    cert = issued.cert
    assert _name(cert, NameOID.COMMON_NAME) == node_id
    assert _name(cert, NameOID.ORGANIZATIONAL_UNIT_NAME) == "manager"
    assert _name(cert, NameOID.ORGANIZATION_NAME) == root.cluster_id
    assert cert.issuer == root.cert.subject and pki.issued_by(cert, root.cert)
    assert cert.public_key() == issued.key.public_key()
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert cert.not_valid_after_utc - NOW == pki.NODE_VALIDITY == timedelta(days=90)
    ext = cert.extensions
    assert ext.get_extension_for_class(x509.BasicConstraints).value.ca is False
    ku = ext.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    eku = ext.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    san = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [node_id, "orch-manager"]
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    root_ski = root.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == root_ski.digest


def test_serials_are_random_and_validity_is_settable(root: pki.CertificateAuthority) -> None:
    a = issue(root, validity=timedelta(minutes=3), now=NOW).cert
    b = issue(root, validity=timedelta(minutes=3), now=NOW).cert
    assert a.serial_number != b.serial_number and a.serial_number.bit_length() > 64
    assert a.not_valid_after_utc == NOW + timedelta(minutes=3)


def test_a_node_certificate_never_outlives_its_ca() -> None:
    short = pki.create_root_ca(validity=timedelta(days=10), now=NOW)
    cert = issue(short, now=NOW).cert
    assert cert.not_valid_after_utc == short.cert.not_valid_after_utc


def test_the_csr_subject_and_extensions_are_ignored(root: pki.CertificateAuthority) -> None:
    key = pki.new_private_key()
    evil = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, "admin-of-everything"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "admin"),
                ]
            )
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    node_id = pki.new_id()
    cert = pki.issue_certificate(root, evil, node_id=node_id, role=pki.Role.WORKER)
    assert _name(cert, NameOID.COMMON_NAME) == node_id
    assert _name(cert, NameOID.ORGANIZATIONAL_UNIT_NAME) == "worker"
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_node_csr_carries_only_the_public_key() -> None:
    key = pki.new_private_key()
    csr = pki.load_csr(pki.csr_pem(pki.create_csr(key)))
    assert csr.is_signature_valid and len(csr.subject) == 0
    assert csr.public_key() == key.public_key()


def test_a_csr_whose_signature_does_not_verify_is_refused(root: pki.CertificateAuthority) -> None:
    der = bytearray(pki.create_csr(pki.new_private_key()).public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01  # inside the signature's last integer
    tampered = x509.load_der_x509_csr(bytes(der))
    with pytest.raises(IdentityError, match="signature does not verify"):
        pki.issue_certificate(root, tampered, node_id=pki.new_id(), role=pki.Role.WORKER)


@pytest.mark.parametrize(
    "key",
    [ec.generate_private_key(ec.SECP384R1()), rsa.generate_private_key(65537, 2048)],
    ids=["p384", "rsa"],
)
def test_only_p256_keys_are_certified(
    root: pki.CertificateAuthority, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
) -> None:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(IdentityError, match="ECDSA P-256 keys only"):
        pki.issue_certificate(root, csr, node_id=pki.new_id(), role=pki.Role.WORKER)


def test_bad_node_ids_roles_and_validities_are_refused(root: pki.CertificateAuthority) -> None:
    csr = pki.create_csr(pki.new_private_key())
    with pytest.raises(IdentityError, match="not a 25-character base-36 id"):
        pki.issue_certificate(root, csr, node_id="Node-1", role=pki.Role.WORKER)
    with pytest.raises(ValueError):
        pki.issue_certificate(root, csr, node_id=pki.new_id(), role="root")  # type: ignore[arg-type]
    with pytest.raises(IdentityError, match="below the minimum"):
        pki.issue_certificate(
            root, csr, node_id=pki.new_id(), role=pki.Role.WORKER, validity=timedelta(seconds=59)
        )


def test_garbage_pem_is_an_identity_error() -> None:
    with pytest.raises(IdentityError, match="not a PEM certificate bundle"):
        pki.load_certs(b"hello", what="the CA")
    with pytest.raises(IdentityError, match="not a PEM CSR"):
        pki.load_csr(b"hello")
    assert issubclass(IdentityError, OrchError)


def test_ids_are_25_base36_characters() -> None:
    ids = {pki.new_id() for _ in range(50)}
    assert len(ids) == 50 and all(pki.is_id(i) for i in ids)
    assert not pki.is_id("A" * 25) and not pki.is_id("a" * 24)


def test_a_cluster_id_must_be_an_id() -> None:
    with pytest.raises(IdentityError, match="cluster id 'prod' is not"):
        pki.create_root_ca("prod")


def test_the_ca_round_trips_through_pem(root: pki.CertificateAuthority) -> None:
    back = pki.CertificateAuthority.from_pem(*root.to_pem())
    assert back.cluster_id == root.cluster_id and back.cert == root.cert and back.chain == ()
    assert back.key.private_numbers() == root.key.private_numbers()


def test_a_rotation_ca_round_trips_with_its_chain(root: pki.CertificateAuthority) -> None:
    signing = start_rotation(root).signing_ca
    back = pki.CertificateAuthority.from_pem(*signing.to_pem())
    assert back.chain == signing.chain and back.cert == signing.cert


def test_a_ca_from_pem_is_checked(root: pki.CertificateAuthority) -> None:
    cert, key, _ = root.to_pem()
    other_cert, other_key, _ = pki.create_root_ca().to_pem()
    with pytest.raises(IdentityError, match="not the key of the CA certificate"):
        pki.CertificateAuthority.from_pem(cert, other_key)
    with pytest.raises(IdentityError, match="not an unencrypted PEM key"):
        pki.CertificateAuthority.from_pem(cert, b"nope")
    with pytest.raises(IdentityError, match="another key"):
        pki.CertificateAuthority.from_pem(cert, key, other_cert)
    leaf = issue(root)
    with pytest.raises(IdentityError, match="is not an orch CA certificate"):
        pki.CertificateAuthority.from_pem(pki.cert_pem(leaf.cert), leaf.key_pem)
