"""etcd's own PKI: a CA apart from the cluster CA, member and client certificates.

etcd's ``--client-cert-auth`` admits *any* certificate its trusted CA signed. Were that
the cluster CA, every worker's node certificate would open the store, so etcd trusts a
CA of its own whose client certificates go to managers only. The operator (or the local
cluster) holds its key; orch never stores it in etcd.

Per member: a server certificate for the client URL and a peer certificate for the peer
URL, both carrying the member's addresses (etcd checks a peer's IP against its
certificate) and the name ``orch-etcd``, which clients verify (several endpoints on one
channel have no single host name to check). Per client: a certificate with clientAuth
only. Everything is ECDSA P-256, made with ca.py's primitives; pure functions apart from
``write_pki`` and ``EtcdClientTLS.load``, which touch files.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from orch.errors import IdentityError
from orch.identity.ca import (
    CLOCK_SKEW,
    ROOT_VALIDITY,
    CertificateAuthority,
    _key_usage,
    cert_pem,
    key_pem,
    load_certs,
    new_id,
    new_private_key,
    self_signed_ca,
    utcnow,
)
from orch.identity.material import ensure_private_dir, read_private_file, write_private_file

SERVER_NAME = "orch-etcd"
"""The DNS name every member's certificates carry and clients verify (grpc's
``ssl_target_name_override``), whatever address they dialled."""

LEAF_VALIDITY = timedelta(days=5 * 365)
"""etcd reads its certificates at start and has no renewal here: they live long, and
replacing them is a restart with new files (deploy/README.md)."""

MAX_MEMBER_ADDRESSES = 16
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_DNS_LABELS = re.compile(
    r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*"
)

# File names in a PKI directory (write_pki) and what a manager is given.
CA_CERT = "ca.crt"
CA_KEY = "ca.key"


def member_files(name: str) -> dict[str, str]:
    """The files of member ``name``: server and peer certificate and key."""
    return {
        "cert": f"member-{name}.crt",
        "key": f"member-{name}.key",
        "peer_cert": f"peer-{name}.crt",
        "peer_key": f"peer-{name}.key",
    }


def client_files(name: str) -> tuple[str, str]:
    """(certificate, key) file names of client ``name``."""
    return f"client-{name}.crt", f"client-{name}.key"


def check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise IdentityError(
            f"{what} {name!r}: want 1-63 characters of letters, digits, '.', '_', '-', "
            "starting with a letter or digit"
        )
    return name


def parse_addresses(addresses: list[str], what: str) -> list[ipaddress.IPv4Address]:
    """The IP addresses of a member, checked: at least one, at most 16, no duplicates."""
    if not 1 <= len(addresses) <= MAX_MEMBER_ADDRESSES:
        raise IdentityError(f"{what}: want 1-{MAX_MEMBER_ADDRESSES} IP addresses")
    parsed = []
    for text in addresses:
        try:
            parsed.append(ipaddress.ip_address(text.strip()))
        except ValueError:
            raise IdentityError(f"{what}: {text!r} is not an IP address") from None
    if len(set(parsed)) != len(parsed):
        raise IdentityError(f"{what}: an address is listed twice")
    return parsed


def create_etcd_ca(*, now: datetime | None = None) -> CertificateAuthority:
    """A new etcd CA: self-signed, ``CN=orch-etcd-ca-<tag>``, O a fresh id (so that
    ``CertificateAuthority.from_pem`` reads it back). Never the cluster CA's key."""
    now = now or utcnow()
    key = new_private_key()
    tag = x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest.hex()[:8]
    org = new_id()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"orch-etcd-ca-{tag}"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
        ]
    )
    # path_length 0: leaves only; etcd's CA is never rotated through a cross-signed one.
    cert = self_signed_ca(name, key, validity=ROOT_VALIDITY, path_length=0, now=now)
    return CertificateAuthority(org, cert, key)


def _leaf(
    ca: CertificateAuthority,
    key: ec.EllipticCurvePrivateKey,
    *,
    common_name: str,
    unit: str,
    usages: list[x509.ObjectIdentifier],
    names: list[x509.GeneralName],
    validity: timedelta,
    now: datetime | None,
) -> x509.Certificate:
    now = now or utcnow()
    public = key.public_key()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ca.cluster_id),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + validity, ca.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca.key, hashes.SHA256())


@dataclass(frozen=True)
class Issued:
    """A key and the certificate the etcd CA issued for it."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey = field(repr=False)

    def pem(self) -> tuple[bytes, bytes]:
        """(certificate, key) as PEM."""
        return cert_pem(self.cert), key_pem(self.key)


def _member_names(name: str, addresses: list[str]) -> list[x509.GeneralName]:
    ips = parse_addresses(addresses, f"etcd member {name}")
    dns = [SERVER_NAME]
    if _DNS_LABELS.fullmatch(name.lower()) and name.lower() != SERVER_NAME:
        dns.append(name.lower())
    return [*(x509.DNSName(d) for d in dns), *(x509.IPAddress(ip) for ip in ips)]


def issue_member_cert(
    ca: CertificateAuthority,
    name: str,
    addresses: list[str],
    *,
    peer: bool = False,
    validity: timedelta = LEAF_VALIDITY,
    now: datetime | None = None,
) -> Issued:
    """Member ``name``'s server (or, with ``peer``, peer) certificate and a new key. SAN:
    ``orch-etcd``, the member's name when it is a DNS name, and its IP ``addresses``.
    Both usages, server and client: a member dials its peers with its peer certificate,
    and etcd's own gateway dials the client URL with the server one."""
    check_name(name, "etcd member name")
    key = new_private_key()
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = _leaf(
        ca,
        key,
        common_name=name,
        unit="etcd-peer" if peer else "etcd-member",
        usages=usages,
        names=_member_names(name, addresses),
        validity=validity,
        now=now,
    )
    return Issued(cert, key)


def issue_client_cert(
    ca: CertificateAuthority,
    name: str,
    *,
    validity: timedelta = LEAF_VALIDITY,
    now: datetime | None = None,
) -> Issued:
    """A client certificate (clientAuth only, no SAN) named ``CN=name``: what a manager
    (or the local cluster's harness) presents to etcd."""
    check_name(name, "etcd client name")
    key = new_private_key()
    cert = _leaf(
        ca,
        key,
        common_name=name,
        unit="etcd-client",
        usages=[ExtendedKeyUsageOID.CLIENT_AUTH],
        names=[],
        validity=validity,
        now=now,
    )
    return Issued(cert, key)


# --- on disk ---------------------------------------------------------------------------


def write_pki(
    directory: Path,
    members: dict[str, list[str]],
    clients: list[str],
    *,
    ca: CertificateAuthority | None = None,
) -> CertificateAuthority:
    """Write an etcd PKI into ``directory`` (made 0700; every file 0600): the CA
    (``ca.crt``, ``ca.key``), per member ``member-<name>.crt/.key`` and
    ``peer-<name>.crt/.key``, per client ``client-<name>.crt/.key``. A new CA unless
    ``ca`` is given (to add members or clients to an existing PKI). Every name and
    address is checked before the first file is written."""
    if not members and not clients:
        raise IdentityError("an etcd PKI needs at least one member or client")
    for name, addresses in members.items():
        check_name(name, "etcd member name")
        parse_addresses(addresses, f"etcd member {name}")
    for name in clients:
        check_name(name, "etcd client name")
    if len(set(clients)) != len(clients):
        raise IdentityError("an etcd client name is listed twice")
    directory = ensure_private_dir(directory)
    if ca is None:
        ca = create_etcd_ca()
        write_private_file(directory / CA_CERT, cert_pem(ca.cert))
        write_private_file(directory / CA_KEY, key_pem(ca.key))
    for name, addresses in members.items():
        files = member_files(name)
        for peer, cert_file, key_file in (
            (False, files["cert"], files["key"]),
            (True, files["peer_cert"], files["peer_key"]),
        ):
            cert, key = issue_member_cert(ca, name, addresses, peer=peer).pem()
            write_private_file(directory / cert_file, cert)
            write_private_file(directory / key_file, key)
    for name in clients:
        add_client(directory, ca, name)
    return ca


def add_client(directory: Path, ca: CertificateAuthority, name: str) -> tuple[Path, Path]:
    """Issue client ``name`` a certificate into ``directory``; returns (cert, key) paths."""
    cert, key = issue_client_cert(ca, name).pem()
    cert_file, key_file = (Path(directory) / f for f in client_files(name))
    write_private_file(cert_file, cert)
    write_private_file(key_file, key)
    return cert_file, key_file


def load_ca(directory: Path) -> CertificateAuthority:
    """The etcd CA ``write_pki`` wrote into ``directory``, checked."""
    return CertificateAuthority.from_pem(
        read_private_file(Path(directory) / CA_CERT), read_private_file(Path(directory) / CA_KEY)
    )


# --- the client side -------------------------------------------------------------------


@dataclass(frozen=True)
class EtcdClientTLS:
    """What an etcd client presents and trusts: the etcd CA (PEM), its certificate chain
    and key (PEM). There is no plaintext mode: every EtcdStore is built with one."""

    ca: bytes
    cert: bytes
    key: bytes = field(repr=False)

    @classmethod
    def load(cls, ca_file: Path, cert_file: Path, key_file: Path) -> EtcdClientTLS:
        """Read and check the three files: PEM certificates, a private key file (0600,
        ours) holding an unencrypted key that is the certificate's."""
        ca = _read_public(ca_file, "etcd CA file")
        cert = _read_public(cert_file, "etcd certificate file")
        certs = load_certs(ca, what=f"etcd CA file {ca_file}")
        leaf = load_certs(cert, what=f"etcd certificate file {cert_file}")[0]
        if not Path(key_file).exists():
            raise IdentityError(f"etcd key file {key_file} is missing")
        key_bytes = read_private_file(Path(key_file))
        try:
            key = serialization.load_pem_private_key(key_bytes, password=None)
        except (ValueError, TypeError) as exc:
            raise IdentityError(
                f"etcd key file {key_file} is not an unencrypted PEM key: {exc}"
            ) from exc
        if key.public_key() != leaf.public_key():
            raise IdentityError(
                f"etcd certificate file {cert_file} is not the certificate of the key in {key_file}"
            )
        if not all(_is_ca(c) for c in certs):
            raise IdentityError(f"etcd CA file {ca_file} holds a certificate that is not a CA")
        return cls(ca, cert, key_bytes)

    @classmethod
    def from_dir(cls, directory: Path, client: str) -> EtcdClientTLS:
        """Client ``client``'s material in a PKI directory ``write_pki`` wrote."""
        cert_file, key_file = (Path(directory) / f for f in client_files(client))
        return cls.load(Path(directory) / CA_CERT, cert_file, key_file)

    def channel_args(self) -> dict[str, bytes]:
        """Keyword arguments of etcd3aio's ``Etcd3Client`` for this material."""
        return {"ca_cert": self.ca, "cert_chain": self.cert, "cert_key": self.key}


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _read_public(path: Path, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise IdentityError(f"{what} {path}: {exc.strerror}") from None
    if len(data) > 1 << 20:
        raise IdentityError(f"{what} {path} is over 1 MiB: not a certificate file")
    return data


def check_endpoints(endpoints: list[str]) -> list[str]:
    """etcd endpoints as ``host:port``: ``https://`` is dropped; ``http://`` (or any other
    scheme) is refused, there is no plaintext etcd."""
    if not endpoints or len(endpoints) > 16:
        raise IdentityError("etcd endpoints: want 1-16 host:port")
    out = []
    for text in endpoints:
        text = text.strip()
        scheme, sep, rest = text.partition("://")
        if sep:
            if scheme.lower() != "https":
                raise IdentityError(
                    f"etcd endpoint {text!r}: only TLS is spoken to etcd; give host:port "
                    "or https://host:port"
                )
            text = rest.rstrip("/")
        host, _, port = text.rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise IdentityError(f"etcd endpoint {text!r}: want host:port")
        out.append(text)
    return out


__all__ = [
    "SERVER_NAME",
    "EtcdClientTLS",
    "Issued",
    "add_client",
    "check_endpoints",
    "client_files",
    "create_etcd_ca",
    "issue_client_cert",
    "issue_member_cert",
    "load_ca",
    "member_files",
    "write_pki",
]
