"""CA rotation as swarmkit does it, in pure steps.

1. ``start_rotation``: a new root (new key, new self-signed certificate) and a
   *cross-signed* certificate: the new root's name and key, signed by the old root's key.
   From now on the managers sign with the new key and send every leaf with the
   cross-signed certificate after it, so a node that still trusts only the old root
   verifies leaf -> cross-signed -> old root, and one that trusts the new root verifies
   leaf -> new root. The managers trust both roots (``trust_bundle``) so they accept
   nodes holding old and new leaves alike.
2. Every node renews (the managers ask it to at once, not at its random renewal time)
   and receives the bundle as its new trust. ``pending_nodes`` tells which node
   certificates still come from the old key.
3. ``finish_rotation`` once none is pending: the new root alone is the CA, the
   cross-signed certificate is no longer sent, the trust is the new root only, and the
   join tokens are made anew for it (tokens.new_join_tokens). New secrets, not only the
   new digest: the digest is public, so keeping the secrets would let anyone holding an
   old token rebuild a valid new one, and every holder needs the new string anyway.

Aborting is dropping the plan before step 3: the old CA never stopped being trusted.
Starting again during a rotation starts from the plan's *old* CA, the one every node still
trusts, never from the half-deployed new one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509

from orch.errors import IdentityError
from orch.identity.ca import (
    ROOT_VALIDITY,
    CertificateAuthority,
    create_root_ca,
    cross_sign,
    issued_by,
)


@dataclass(frozen=True)
class RotationPlan:
    old: CertificateAuthority
    new_root: CertificateAuthority  # the new key and self-signed root, chain empty
    cross_signed: x509.Certificate  # the new root's name and key, signed by the old key

    @property
    def signing_ca(self) -> CertificateAuthority:
        """What the managers issue with during the rotation: the new key, each leaf sent
        with the cross-signed certificate."""
        return CertificateAuthority(
            self.new_root.cluster_id, self.new_root.cert, self.new_root.key, (self.cross_signed,)
        )

    @property
    def trust_bundle(self) -> tuple[x509.Certificate, ...]:
        """The roots the managers verify peers against (and hand to renewing nodes) during
        the rotation: old first, then new."""
        return (self.old.cert, self.new_root.cert)


def start_rotation(
    current: CertificateAuthority,
    *,
    validity: timedelta = ROOT_VALIDITY,
    now: datetime | None = None,
) -> RotationPlan:
    """Step 1: a new root for ``current``'s cluster and its cross-signed certificate.
    ``current`` is the CA every node trusts now (during a rotation: the plan's ``old``)."""
    new_root = create_root_ca(current.cluster_id, validity=validity, now=now)
    return RotationPlan(current, new_root, cross_sign(new_root.cert, current))


def pending_nodes(plan: RotationPlan, node_certs: Mapping[str, x509.Certificate]) -> list[str]:
    """Step 2's progress: the ids of nodes whose current certificate (``node_certs``: node
    id -> the leaf the node last presented or was issued) the new key did not sign."""
    return sorted(
        node_id for node_id, cert in node_certs.items() if not issued_by(cert, plan.new_root.cert)
    )


def finish_rotation(
    plan: RotationPlan, node_certs: Mapping[str, x509.Certificate]
) -> CertificateAuthority:
    """Step 3: the new CA, refused while a node still holds an old-key certificate (it
    would be locked out the moment the old root stops being trusted)."""
    pending = pending_nodes(plan, node_certs)
    if pending:
        shown = ", ".join(pending[:5]) + (" ..." if len(pending) > 5 else "")
        raise IdentityError(
            f"cannot finish the CA rotation: {len(pending)} node(s) still hold a certificate "
            f"of the old root ({shown})"
        )
    return plan.new_root
