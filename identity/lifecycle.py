"""A node certificate's life: when to renew it, and who is refused despite a valid one."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509

from orch.errors import IdentityError
from orch.identity.ca import CLOCK_SKEW, NODE_VALIDITY, CertificateAuthority, issue_certificate
from orch.identity.errors import CertificateDeniedError
from orch.identity.peer import NodeIdentity

RENEW_FROM = 0.5
RENEW_UNTIL = 0.8
"""A certificate is renewed at a random point between 50% and 80% of its life (as in
swarmkit): late enough not to churn, early enough to survive a manager outage of a fifth
of the life, and random so that nodes that joined together do not renew together."""

_SYSTEM_RANDOM = random.SystemRandom()


def renewal_time(
    not_before: datetime, not_after: datetime, *, rng: random.Random = _SYSTEM_RANDOM
) -> datetime:
    life = not_after - not_before
    return not_before + life * rng.uniform(RENEW_FROM, RENEW_UNTIL)


def renewal_delay(
    cert: x509.Certificate, *, now: datetime, rng: random.Random = _SYSTEM_RANDOM
) -> timedelta:
    """How long from ``now`` until ``cert`` should be renewed; zero if that is past (a
    node that was down through its renewal window renews at once).

    The life counts from the moment of issue, not from not_before, which is backdated by
    CLOCK_SKEW for peers whose clocks lag: counted from not_before, a 2-minute
    certificate would be past its renewal point when issued, and renew in a loop."""
    issued = min(cert.not_valid_before_utc + CLOCK_SKEW, cert.not_valid_after_utc)
    when = renewal_time(issued, cert.not_valid_after_utc, rng=rng)
    return max(when - now, timedelta(0))


def renew_certificate(
    ca: CertificateAuthority,
    csr: x509.CertificateSigningRequest,
    peer: NodeIdentity,
    *,
    validity: timedelta = NODE_VALIDITY,
    now: datetime | None = None,
) -> x509.Certificate:
    """A new certificate for the node on the other end of a verified mTLS channel: node id
    and role come from ``peer`` (its current certificate), never from the request, so a
    renewal cannot change who a node is; the key may be new."""
    if peer.cluster_id != ca.cluster_id:
        raise IdentityError(
            f"node {peer.node_id} is of cluster {peer.cluster_id}, this CA of {ca.cluster_id}"
        )
    return issue_certificate(
        ca, csr, node_id=peer.node_id, role=peer.role, validity=validity, now=now
    )


@dataclass(frozen=True)
class DenyList:
    """Certificates refused although they verify: those of removed nodes (by node id) and
    single revoked certificates (by serial). A removed node's id can be dropped from the
    list once its last certificate has expired; the store does that (next increment)."""

    node_ids: frozenset[str] = field(default_factory=frozenset)
    serials: frozenset[int] = field(default_factory=frozenset)

    def deny_nodes(self, node_ids: Iterable[str]) -> DenyList:
        return DenyList(self.node_ids | frozenset(node_ids), self.serials)

    def deny_serials(self, serials: Iterable[int]) -> DenyList:
        return DenyList(self.node_ids, self.serials | frozenset(serials))

    def is_denied(self, identity: NodeIdentity) -> bool:
        return identity.node_id in self.node_ids or identity.serial in self.serials

    def check(self, identity: NodeIdentity) -> NodeIdentity:
        """``identity`` if it is allowed, else CertificateDeniedError naming why."""
        if identity.node_id in self.node_ids:
            raise CertificateDeniedError(
                f"node {identity.node_id} was removed from the cluster: its certificate "
                "is refused; join again with a token to come back as a new node"
            )
        if identity.serial in self.serials:
            raise CertificateDeniedError(
                f"the certificate of node {identity.node_id} (serial {identity.serial:x}) "
                "was revoked"
            )
        return identity
