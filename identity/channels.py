"""gRPC over mutual TLS, for every client and server of orch: the one place that turns TLS
material into channel or server credentials, with the options both ends agree on.

- Clients (agents, the CLI, manager-to-manager forwarding, the local cluster, tests and
  benches) dial a manager by address and check its certificate against the name
  ``orch-manager`` (every manager certificate's SAN), so no certificate lists addresses.
- Servers (a manager's mTLS port) require a client certificate of the cluster's CA and
  take their own certificate from a callable at every new connection's handshake, so a
  renewed certificate is served without a restart.
- Keepalive on both ends: a client pings a quiet connection and drops it when no answer
  comes (KEEPALIVE_TIME_MS, KEEPALIVE_TIMEOUT_MS), so an agent whose manager's host died
  without a FIN moves on within the node liveness TTL instead of TCP's ~15 minutes;
  servers accept pings that often (grpc's default would answer them with GOAWAY
  "too_many_pings").

Two layouts of material on disk: a node's (``material.py``: node.key, node.crt, ca.crt
under ``<state dir>/tls``) and an admin's (the CLI's: ca.pem, admin.pem, admin-key.pem),
both 0600 files in a 0700 directory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from orch.errors import IdentityError
from orch.identity.ca import load_certs
from orch.identity.material import (
    NodeMaterial,
    check_private_dir,
    ensure_private_dir,
    read_private_file,
    write_private_file,
)

MANAGER_NAME = "orch-manager"
"""The name a client checks a manager's certificate against (grpc.ssl_target_name_override)."""

ADMIN_ROOTS = "ca.pem"
ADMIN_CERT = "admin.pem"
ADMIN_KEY = "admin-key.pem"

KEEPALIVE_TIME_MS = 300
KEEPALIVE_TIMEOUT_MS = 600
"""A client pings a connection that was quiet for 300 ms and drops it when no answer
comes within 600 ms: measured on loopback with a SIGSTOPped server, a stream fails
0.6-1.6 s after the server stopped, inside the default 2 s node liveness TTL (1000/2000
took 2 s: too late). Pings are answered by grpc's own threads, not the event loop, so a
busy manager still answers in time."""
SERVER_KEEPALIVE_MS = 2000
"""A manager pings its clients less eagerly: an agent's liveness is its heartbeats (the
lease), this only frees the connections of clients that vanished."""

CLIENT_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.ssl_target_name_override", MANAGER_NAME),
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.ping_timeout_ms", KEEPALIVE_TIMEOUT_MS),
)
"""Options of every client channel to a manager."""

SERVER_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_time_ms", SERVER_KEEPALIVE_MS),
    ("grpc.keepalive_timeout_ms", SERVER_KEEPALIVE_MS),
    ("grpc.http2.ping_timeout_ms", SERVER_KEEPALIVE_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", KEEPALIVE_TIME_MS // 2),
    ("grpc.http2.max_ping_strikes", 0),
)
"""Options of every manager server: pings as often as clients send them are welcome (half
the client's interval, no strikes), and the server pings its own clients now and then."""


@dataclass(frozen=True)
class ClientTLS:
    """What a client presents and trusts: its key and chain, and the roots it checks the
    manager against (PEM)."""

    key_pem: bytes = field(repr=False)
    chain_pem: bytes
    roots_pem: bytes

    @classmethod
    def from_material(cls, material: NodeMaterial) -> ClientTLS:
        key, chain = material.grpc_pair()
        return cls(key, chain, material.roots_pem())

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.roots_pem, self.key_pem, self.chain_pem)


def _options(extra: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    merged = dict(CLIENT_OPTIONS)
    merged.update(extra)
    return list(merged.items())


def channel(
    address: str, tls: ClientTLS, *, options: Sequence[tuple[str, Any]] = ()
) -> grpc.Channel:
    """A blocking (sync) mTLS channel to the manager at ``address``."""
    return grpc.secure_channel(address, tls.credentials(), options=_options(options))


def aio_channel(
    address: str, tls: ClientTLS, *, options: Sequence[tuple[str, Any]] = ()
) -> grpc.aio.Channel:
    """An asyncio mTLS channel to the manager at ``address``."""
    return grpc.aio.secure_channel(address, tls.credentials(), options=_options(options))


def server_options(extra: Sequence[tuple[str, Any]] = ()) -> list[tuple[str, Any]]:
    merged = dict(SERVER_OPTIONS)
    merged.update(extra)
    return list(merged.items())


def _configuration(material: NodeMaterial) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [material.grpc_pair()], root_certificates=material.roots_pem()
    )


def server_credentials(current: Callable[[], NodeMaterial]) -> grpc.ServerCredentials:
    """mTLS server credentials serving whatever ``current()`` returns at each new
    connection: a client must present a certificate of those roots. grpc asks the fetcher
    before every handshake; it answers None (keep) unless the material changed."""
    served = [current()]

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        now = current()
        if now is served[0]:
            return None
        served[0] = now
        return _configuration(now)

    return grpc.dynamic_ssl_server_credentials(
        _configuration(served[0]), fetch, require_client_authentication=True
    )


# --- an admin's credentials (the CLI's tls dir) ----------------------------------------


def save_admin_tls(directory: Path, tls: ClientTLS) -> None:
    """Write ca.pem, admin.pem and admin-key.pem, each 0600, into ``directory`` (0700)."""
    directory = ensure_private_dir(directory)
    write_private_file(directory / ADMIN_ROOTS, tls.roots_pem)
    write_private_file(directory / ADMIN_CERT, tls.chain_pem)
    write_private_file(directory / ADMIN_KEY, tls.key_pem)


def load_admin_tls(directory: Path) -> ClientTLS:
    """The credentials ``save_admin_tls`` wrote, checked: modes, owner, and a certificate
    that is the key's."""
    from cryptography.hazmat.primitives import serialization

    directory = check_private_dir(Path(directory))
    key_bytes = read_private_file(directory / ADMIN_KEY)
    chain_bytes = read_private_file(directory / ADMIN_CERT)
    roots_bytes = read_private_file(directory / ADMIN_ROOTS)
    try:
        key = serialization.load_pem_private_key(key_bytes, password=None)
    except (ValueError, TypeError) as exc:
        raise IdentityError(f"{directory / ADMIN_KEY} is not a PEM private key: {exc}") from exc
    leaf = load_certs(chain_bytes, what=str(directory / ADMIN_CERT))[0]
    load_certs(roots_bytes, what=str(directory / ADMIN_ROOTS))
    if leaf.public_key() != key.public_key():
        raise IdentityError(
            f"{directory / ADMIN_CERT} is not the certificate of the key in {directory / ADMIN_KEY}"
        )
    return ClientTLS(key_bytes, chain_bytes, roots_bytes)
