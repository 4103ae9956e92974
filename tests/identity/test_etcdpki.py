"""etcd's PKI (identity/etcdpki.py): a CA apart from the cluster CA, member certificates
that name the member's addresses and ``orch-etcd``, client certificates for clients only,
files 0600 in a 0700 directory, and the client material a manager loads, checked."""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from orch.errors import IdentityError
from orch.identity import ca as cluster_pki
from orch.identity import etcdpki
from orch.identity.ca import issued_by


@pytest.fixture(scope="module")
def etcd_ca() -> cluster_pki.CertificateAuthority:
    return etcdpki.create_etcd_ca()


def _usages(cert: x509.Certificate) -> set:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def _san(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def test_the_etcd_ca_is_a_ca_of_its_own(etcd_ca) -> None:
    cert = etcd_ca.cert
    assert cert.subject == cert.issuer and issued_by(cert, cert)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert str(cn).startswith("orch-etcd-ca-")
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    # A cluster CA's leaf is not one of the etcd CA's, nor the other way round.
    cluster = cluster_pki.create_root_ca()
    client = etcdpki.issue_client_cert(etcd_ca, "m1").cert
    assert issued_by(client, etcd_ca.cert) and not issued_by(client, cluster.cert)
    assert etcdpki.create_etcd_ca().cert.public_key() != etcd_ca.cert.public_key()


@pytest.mark.parametrize("peer", [False, True])
def test_a_member_certificate_names_its_addresses_and_orch_etcd(etcd_ca, peer) -> None:
    issued = etcdpki.issue_member_cert(etcd_ca, "etcd-1", ["10.0.0.5", "::1"], peer=peer)
    cert = issued.cert
    assert issued_by(cert, etcd_ca.cert)
    assert cert.public_key() == issued.key.public_key()
    san = _san(cert)
    assert san.get_values_for_type(x509.DNSName) == ["orch-etcd", "etcd-1"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.5"),
        ipaddress.ip_address("::1"),
    ]
    # Server for its clients (or peers), client when it dials its peers or its gateway.
    assert _usages(cert) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    unit = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value
    assert unit == ("etcd-peer" if peer else "etcd-member")
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_a_client_certificate_is_for_clients_only(etcd_ca) -> None:
    cert = etcdpki.issue_client_cert(etcd_ca, "orch-m0").cert
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "orch-m0"
    assert _usages(cert) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    with pytest.raises(x509.ExtensionNotFound):
        _san(cert)


@pytest.mark.parametrize(
    ("name", "addresses", "message"),
    [
        ("bad name", ["10.0.0.1"], "etcd member name 'bad name'"),
        ("-x", ["10.0.0.1"], "etcd member name '-x'"),
        ("x" * 64, ["10.0.0.1"], "etcd member name"),
        ("e1", [], "want 1-16 IP addresses"),
        ("e1", ["10.0.0.1"] * 17, "want 1-16 IP addresses"),
        ("e1", ["example.com"], "'example.com' is not an IP address"),
        ("e1", ["10.0.0.1", "10.0.0.1"], "listed twice"),
    ],
)
def test_bad_members_are_refused_before_anything_is_written(
    tmp_path, name, addresses, message
) -> None:
    out = tmp_path / "pki"
    with pytest.raises(IdentityError, match=message):
        etcdpki.write_pki(out, {"good": ["10.0.0.2"], name: addresses}, ["m1"])
    assert not out.exists()


@pytest.mark.parametrize("clients", [["m1", "m1"], ["m/1"], [""], ["../x"]])
def test_bad_clients_are_refused_before_anything_is_written(tmp_path, clients) -> None:
    out = tmp_path / "pki"
    with pytest.raises(IdentityError, match="etcd client name"):
        etcdpki.write_pki(out, {"e1": ["10.0.0.2"]}, clients)
    assert not out.exists()


def test_write_pki_keeps_everything_private_and_loads_back(tmp_path) -> None:
    out = tmp_path / "pki"
    ca = etcdpki.write_pki(out, {"e0": ["127.0.0.1"], "e1": ["127.0.0.2"]}, ["m0", "m1"])
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [
            "ca.crt",
            "ca.key",
            *(f"{kind}-{m}.{ext}" for kind in ("member", "peer") for m in ("e0", "e1")
              for ext in ("crt", "key")),
            *(f"client-{c}.{ext}" for c in ("m0", "m1") for ext in ("crt", "key")),
        ]
    )  # fmt: skip
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {0o600}
    assert etcdpki.load_ca(out).cert == ca.cert
    tls = etcdpki.EtcdClientTLS.from_dir(out, "m1")
    assert tls.ca == (out / "ca.crt").read_bytes()
    assert "BEGIN PRIVATE KEY" not in repr(tls)
    assert set(tls.channel_args()) == {"ca_cert", "cert_chain", "cert_key"}
    # A client added later to the same PKI is the same CA's.
    cert_file, _ = etcdpki.add_client(out, etcdpki.load_ca(out), "m2")
    assert issued_by(x509.load_pem_x509_certificate(cert_file.read_bytes()), ca.cert)


def test_client_material_is_checked_when_loaded(tmp_path) -> None:
    out = tmp_path / "pki"
    etcdpki.write_pki(out, {"e0": ["127.0.0.1"]}, ["m0", "m1"])
    ca, cert, key = out / "ca.crt", out / "client-m0.crt", out / "client-m0.key"
    load = etcdpki.EtcdClientTLS.load
    with pytest.raises(IdentityError, match="is not the certificate of the key"):
        load(ca, cert, out / "client-m1.key")
    with pytest.raises(IdentityError, match=r"etcd key file .* is missing"):
        load(ca, cert, out / "nope.key")
    with pytest.raises(IdentityError, match=r"etcd CA file .*: No such file"):
        load(out / "nope.crt", cert, key)
    with pytest.raises(IdentityError, match="holds a certificate that is not a CA"):
        load(cert, cert, key)  # a leaf where the CA should be
    with pytest.raises(IdentityError, match="is not a PEM certificate bundle"):
        load(ca, key, key)
    os.chmod(key, 0o644)
    with pytest.raises(IdentityError, match="has mode 0644"):
        load(ca, cert, key)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (["127.0.0.1:2379"], ["127.0.0.1:2379"]),
        (["https://10.0.0.1:2379/", " h:1"], ["10.0.0.1:2379", "h:1"]),
    ],
)
def test_endpoints_are_host_port_or_https(given, expected) -> None:
    assert etcdpki.check_endpoints(given) == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (["http://127.0.0.1:2379"], "only TLS is spoken to etcd"),
        (["unix://x:1"], "only TLS is spoken to etcd"),
        (["127.0.0.1"], "want host:port"),
        (["127.0.0.1:0"], "want host:port"),
        ([":2379"], "want host:port"),
        ([], "want 1-16"),
    ],
)
def test_plaintext_or_malformed_endpoints_are_refused(given, message) -> None:
    with pytest.raises(IdentityError, match=message):
        etcdpki.check_endpoints(given)


def test_the_pki_dir_refuses_a_directory_open_to_others(tmp_path: Path) -> None:
    out = tmp_path / "pki"
    out.mkdir(mode=0o755)
    os.chmod(out, 0o755)
    with pytest.raises(IdentityError, match="run chmod 700"):
        etcdpki.write_pki(out, {"e0": ["127.0.0.1"]}, [])
    assert list(out.iterdir()) == []
