"""The manager's own TLS identity: its key and certificate under ``<state dir>/tls``,
made at ``init`` (first manager) or by joining with a manager token (the others), served
on the mTLS port through a fetcher (channels.server_credentials) and renewed here.

A manager renews by itself: it holds the CA key (the store), so it signs its own new
CSR with the identity of its current certificate, as the Renew RPC would for an agent.
The new material is written to disk first, then swapped in: the next handshake serves
it, connections already open keep theirs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from cryptography import x509

from orch.errors import IdentityError, OrchError, StoreError
from orch.identity.ca import (
    NODE_VALIDITY,
    Role,
    create_csr,
    issue_certificate,
    new_id,
    new_private_key,
    utcnow,
)
from orch.identity.channels import ClientTLS, save_admin_tls
from orch.identity.join import join
from orch.identity.lifecycle import renew_certificate, renewal_delay
from orch.identity.material import KEY_FILE, NodeMaterial, load_node_material, save_node_material
from orch.identity.peer import NodeIdentity, identity_from_certificate
from orch.manager.ca.records import (
    ClusterCA,
    create_cluster,
    new_cluster,
    record_certificate,
    require_cluster,
)
from orch.manager.ca.service import ADMIN_VALIDITY
from orch.manager.state.api import Store

log = logging.getLogger(__name__)

RENEW_RETRY = 5.0
"""Seconds between renewal attempts after one failed (etcd unreachable)."""


def tls_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "tls"


def _issue(
    cluster: ClusterCA, role: Role, validity: timedelta
) -> tuple[NodeMaterial, x509.Certificate]:
    key = new_private_key()
    cert = issue_certificate(
        cluster.ca, create_csr(key), node_id=new_id(), role=role, validity=validity
    )
    return NodeMaterial(key, tuple(cluster.ca.chain_for(cert)), (cluster.ca.cert,)), cert


async def issue_admin(store: Store, cluster: ClusterCA) -> ClientTLS:
    """New admin credentials (key made here, certificate recorded)."""
    material, cert = _issue(cluster, Role.ADMIN, ADMIN_VALIDITY)
    await record_certificate(store, cert)
    return ClientTLS.from_material(material)


async def init_cluster(
    store: Store,
    *,
    state_dir: Path,
    admin_dir: Path,
    cert_lifetime: timedelta = NODE_VALIDITY,
) -> ClusterCA:
    """Create the cluster (refused if the store holds one), this manager's certificate in
    ``state_dir``/tls and admin credentials in ``admin_dir``. Checks the directories first,
    so a refusal writes nothing."""
    directory = tls_dir(state_dir)
    if (directory / KEY_FILE).exists():
        raise IdentityError(
            f"{directory} already holds a TLS identity (of another cluster?): remove it first"
        )
    cluster = new_cluster(cert_lifetime)
    await create_cluster(store, cluster)
    material, cert = _issue(cluster, Role.MANAGER, cluster.cert_lifetime)
    await record_certificate(store, cert)
    save_node_material(directory, material)
    save_admin_tls(admin_dir, await issue_admin(store, cluster))
    return cluster


class ManagerIdentity:
    """The manager's current material; ``current`` is what the server serves and what
    forwarding presents."""

    def __init__(self, directory: Path, material: NodeMaterial) -> None:
        self.directory = Path(directory)
        self._material = material
        self._client = ClientTLS.from_material(material)
        self.identity = identity_from_certificate(material.leaf)
        if self.identity.role is not Role.MANAGER:
            raise IdentityError(
                f"{directory} holds a {self.identity.role.value} certificate, not a "
                "manager's: this is an agent's state dir, or join with the manager token"
            )

    def current(self) -> NodeMaterial:
        return self._material

    def client_tls(self) -> ClientTLS:
        return self._client

    def _swap(self, material: NodeMaterial) -> None:
        save_node_material(self.directory, material)
        self._material = material
        self._client = ClientTLS.from_material(material)

    async def renew(self, store: Store) -> NodeIdentity:
        cluster = await require_cluster(store)
        key = new_private_key()
        peer = identity_from_certificate(self._material.leaf, cluster_id=cluster.cluster_id)
        cert = renew_certificate(cluster.ca, create_csr(key), peer, validity=cluster.cert_lifetime)
        await record_certificate(store, cert)
        self._swap(NodeMaterial(key, tuple(cluster.ca.chain_for(cert)), (cluster.ca.cert,)))
        log.info("renewed this manager's certificate (valid until %s)", cert.not_valid_after_utc)
        return identity_from_certificate(cert)

    async def renew_forever(self, store: Store) -> None:
        """Renew at a random point of 50-80% of each certificate's life, until cancelled."""
        while True:
            delay = renewal_delay(self._material.leaf, now=utcnow())
            await asyncio.sleep(delay.total_seconds())
            try:
                await self.renew(store)
            except OrchError as exc:
                log.warning("renewing this manager's certificate failed: %s", exc)
                await asyncio.sleep(RENEW_RETRY)


async def obtain_identity(
    store: Store, state_dir: Path, *, join_token: str = "", join_addresses: Sequence[str] = ()
) -> ManagerIdentity:
    """The manager's identity: from its state dir, or (first start of a further manager)
    by joining with a manager token through another manager's join port."""
    directory = tls_dir(state_dir)
    if (directory / KEY_FILE).exists():
        identity = ManagerIdentity(directory, load_node_material(directory))
        try:
            cluster = await require_cluster(store)
        except StoreError as exc:
            # A restart while etcd has no quorum: serve (and wait for etcd) as before;
            # the certificate itself is checked by every peer's handshake.
            log.warning("cannot check this manager's cluster against the store: %s", exc)
            return identity
        if identity.identity.cluster_id != cluster.cluster_id:
            raise IdentityError(
                f"{directory} holds a certificate of cluster {identity.identity.cluster_id}, "
                f"but the store holds cluster {cluster.cluster_id}: wrong --state-dir or "
                "--etcd (or remove the directory and join this cluster)"
            )
        return identity
    if not join_token:
        raise IdentityError(
            f"{directory} holds no TLS identity: run `orch-manager init` on the first "
            "manager, or start this one with --join-token (a manager token) and --join"
        )
    if not join_addresses:
        raise IdentityError("--join-token needs --join ADDR (another manager's join port)")
    material, who = await join(join_addresses, join_token)
    if who.role is not Role.MANAGER:
        raise IdentityError(
            "the join token is a worker token: a manager joins with the manager token "
            "(`orch join-token manager`)"
        )
    await require_cluster(store)  # the CA key this manager will sign with
    save_node_material(directory, material)
    log.info("joined cluster %s as manager node %s", who.cluster_id, who.node_id)
    return ManagerIdentity(directory, material)
