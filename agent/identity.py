"""The agent's TLS identity: its key and certificate under ``<state dir>/tls`` (0600 files
in a 0700 dir), obtained once by joining with a token, then renewed over mTLS.

The node id is the certificate's CN, chosen by the manager at join: the agent never
names itself. Renewal sends a CSR for a new key to ``NodeCertificates.Renew`` on a
manager's mTLS port at a random point of 50-80% of the certificate's life; the new
material is written first, then used for every new connection (the session reconnects
only when its stream breaks: tasks are not disturbed).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Sequence
from pathlib import Path

import grpc

from orch import grpcerrors
from orch.errors import IdentityError, OrchError
from orch.identity import channels
from orch.identity.ca import Role, create_csr, csr_pem, load_certs, new_private_key, utcnow
from orch.identity.join import join
from orch.identity.lifecycle import renewal_delay
from orch.identity.material import KEY_FILE, NodeMaterial, load_node_material, save_node_material
from orch.identity.peer import NodeIdentity, identity_from_certificate, verify_chain
from orch.proto import ca_pb2, ca_pb2_grpc

log = logging.getLogger(__name__)

RENEW_RETRY = 5.0
"""Seconds between renewal attempts after one failed (no manager answered)."""
RENEW_TIMEOUT = 10.0


class AgentIdentity:
    """The agent's current material, and the client TLS every channel it opens uses."""

    def __init__(self, directory: Path, material: NodeMaterial) -> None:
        self.directory = Path(directory)
        self._set(material)
        if self.identity.role is not Role.WORKER:
            raise IdentityError(
                f"{directory} holds a {self.identity.role.value} certificate: an agent "
                "joins with a worker token (`orch join-token worker`)"
            )

    def _set(self, material: NodeMaterial) -> None:
        self._material = material
        self._client = channels.ClientTLS.from_material(material)
        self.identity: NodeIdentity = identity_from_certificate(material.leaf)

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    def current(self) -> NodeMaterial:
        return self._material

    def client_tls(self) -> channels.ClientTLS:
        return self._client

    async def renew(self, address: str) -> None:
        key = new_private_key()
        async with channels.aio_channel(address, self._client) as channel:
            answer = await ca_pb2_grpc.NodeCertificatesStub(channel).Renew(
                ca_pb2.RenewRequest(csr_pem=csr_pem(create_csr(key))), timeout=RENEW_TIMEOUT
            )
        chain = load_certs(answer.chain_pem, what=f"the certificate renewed by {address}")
        roots = load_certs(answer.roots_pem, what=f"the roots sent by {address}")
        # Over mTLS to a manager our roots verified: the roots it sends are trusted; the
        # chain must still be ours, for our node, up to them.
        renewed = verify_chain(chain, roots, cluster_id=self.identity.cluster_id)
        if chain[0].public_key() != key.public_key() or renewed.node_id != self.node_id:
            raise IdentityError(f"the manager at {address} renewed another node or key")
        material = NodeMaterial(key, tuple(chain), tuple(roots))
        save_node_material(self.directory, material)
        self._set(material)
        log.info("renewed node %s's certificate (valid until %s)", self.node_id, renewed.not_after)

    async def renew_forever(self, managers: Sequence[str]) -> None:
        """Renew at each certificate's renewal time, trying the managers in turn."""
        addresses = itertools.cycle(managers)
        while True:
            delay = renewal_delay(self._material.leaf, now=utcnow())
            await asyncio.sleep(delay.total_seconds())
            address = next(addresses)
            try:
                await self.renew(address)
            except grpc.aio.AioRpcError as exc:
                known = grpcerrors.error_of(exc)
                log.warning("renewal through %s: %s", address, known or exc.details())
                await asyncio.sleep(RENEW_RETRY)
            except OrchError as exc:
                log.warning("renewal through %s: %s", address, exc)
                await asyncio.sleep(RENEW_RETRY)


def tls_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "tls"


async def obtain_identity(
    state_dir: Path, *, join_token: str = "", join_addresses: Sequence[str] = ()
) -> AgentIdentity:
    """The identity kept in the state dir, or, on a first start, a new one from joining
    with ``join_token`` through the first of ``join_addresses`` that answers."""
    directory = tls_dir(state_dir)
    if (directory / KEY_FILE).exists():
        material = load_node_material(directory)
        if material.leaf.not_valid_after_utc > utcnow():
            return AgentIdentity(directory, material)
        # Expired (the node was off past its certificate's end): no manager accepts it,
        # so it cannot renew; only a new join brings the node back, as a new node.
        if not join_token:
            raise IdentityError(
                f"the certificate in {directory} expired at "
                f"{material.leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC: this node must join "
                "again; start the agent with --join-token (a worker token)"
            )
        log.warning("the certificate in %s expired: joining again as a new node", directory)
    if not join_token:
        raise IdentityError(
            f"{directory} holds no TLS identity: start the agent once with --join-token "
            "(a worker token: `orch join-token worker` on a manager's host)"
        )
    material, who = await join(join_addresses, join_token)
    if who.role is not Role.WORKER:
        raise IdentityError(
            "the join token is a manager token: an agent joins with the worker token "
            "(`orch join-token worker`)"
        )
    save_node_material(directory, material)
    log.info("joined cluster %s as node %s (%s)", who.cluster_id, who.node_id, who.role.value)
    return AgentIdentity(directory, material)
