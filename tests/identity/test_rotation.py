"""CA rotation: the cross-signed certificate lets old-root nodes accept new leaves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from orch.errors import IdentityError
from orch.identity import ca as pki
from orch.identity import tokens
from orch.identity.errors import CAPinMismatchError, TokenError
from orch.identity.peer import verify_chain
from orch.identity.rotation import finish_rotation, pending_nodes, start_rotation

from .pki import issue

NOW = datetime(2026, 12, 1, tzinfo=UTC)
LATER = NOW + timedelta(days=1)


@pytest.fixture
def old() -> pki.CertificateAuthority:
    return pki.create_root_ca(now=NOW)


def test_the_cross_signed_certificate_is_the_new_root_certified_by_the_old(
    old: pki.CertificateAuthority,
) -> None:
    plan = start_rotation(old, now=LATER)
    cross, new = plan.cross_signed, plan.new_root.cert
    assert plan.new_root.cluster_id == old.cluster_id
    assert cross.subject == new.subject and cross.issuer == old.cert.subject
    assert cross.public_key() == new.public_key()
    assert pki.issued_by(cross, old.cert) and not pki.issued_by(cross, new)
    constraints = cross.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    assert cross.not_valid_after_utc <= old.cert.not_valid_after_utc
    assert plan.trust_bundle == (old.cert, new)
    assert plan.signing_ca.chain == (cross,) and plan.signing_ca.key is plan.new_root.key


def test_new_leaves_verify_for_nodes_on_either_root(old: pki.CertificateAuthority) -> None:
    plan = start_rotation(old, now=LATER)
    leaf = issue(plan.signing_ca, now=LATER)
    assert leaf.chain == [leaf.cert, plan.cross_signed]
    # A node that still trusts only the old root: leaf -> cross-signed -> old root.
    verify_chain(leaf.chain, [old.cert], now=LATER)
    # A node that already has the new root: leaf -> new root (the extra cert is harmless).
    verify_chain(leaf.chain, [plan.new_root.cert], now=LATER)
    verify_chain([leaf.cert], [plan.new_root.cert], now=LATER)
    # Without the cross-signed certificate an old-root node would refuse the new leaf.
    with pytest.raises(IdentityError):
        verify_chain([leaf.cert], [old.cert], now=LATER)


def test_the_managers_trust_bundle_accepts_old_and_new_leaves(
    old: pki.CertificateAuthority,
) -> None:
    before = issue(old, now=NOW)
    plan = start_rotation(old, now=LATER)
    after = issue(plan.signing_ca, now=LATER)
    for holder in (before, after):
        verify_chain(holder.chain, list(plan.trust_bundle), now=LATER)


def test_the_rotation_finishes_only_when_every_node_renewed(old: pki.CertificateAuthority) -> None:
    nodes = {pki.new_id(): issue(old, now=NOW).cert for _ in range(3)}
    plan = start_rotation(old, now=LATER)
    assert pending_nodes(plan, nodes) == sorted(nodes)
    first, *rest = sorted(nodes)
    nodes[first] = issue(plan.signing_ca, node_id=first, now=LATER).cert
    assert pending_nodes(plan, nodes) == rest
    with pytest.raises(IdentityError, match=r"2 node\(s\) still hold a certificate of the old"):
        finish_rotation(plan, nodes)
    for node_id in rest:
        nodes[node_id] = issue(plan.signing_ca, node_id=node_id, now=LATER).cert
    new = finish_rotation(plan, nodes)
    assert new.chain == () and new.cert == plan.new_root.cert
    # After the rotation: leaves come alone, the old root and its leaves are not trusted.
    leaf = issue(new, now=LATER)
    assert leaf.chain == [leaf.cert]
    verify_chain(leaf.chain, [new.cert], now=LATER)
    with pytest.raises(IdentityError):
        verify_chain(issue(old, now=NOW).chain, [new.cert], now=LATER)


def test_tokens_are_made_anew_when_the_rotation_finishes(old: pki.CertificateAuthority) -> None:
    printed = tokens.new_join_tokens(old.cert)
    plan = start_rotation(old, now=LATER)
    # During the rotation the tokens still pin the old root, which is still served.
    assert tokens.role_for_token(str(printed.worker), printed) is pki.Role.WORKER
    bundle = pki.cert_pem(*plan.trust_bundle)
    assert tokens.pin_root_ca(bundle, printed.worker) == old.cert
    new = finish_rotation(plan, {})
    current = tokens.new_join_tokens(new.cert)
    with pytest.raises(TokenError, match="before a CA rotation"):
        tokens.role_for_token(str(printed.worker), current)
    # An old secret under the new (public) digest is no token either.
    rebuilt = tokens.JoinToken(current.worker.ca_digest, printed.worker.secret)
    with pytest.raises(TokenError, match="not valid"):
        tokens.role_for_token(str(rebuilt), current)
    assert tokens.role_for_token(str(current.manager), current) is pki.Role.MANAGER
    assert tokens.pin_root_ca(pki.cert_pem(new.cert), current.manager) == new.cert
    with pytest.raises(CAPinMismatchError):
        tokens.pin_root_ca(pki.cert_pem(new.cert), printed.manager)


def test_restarting_a_rotation_starts_again_from_the_old_ca(old: pki.CertificateAuthority) -> None:
    first = start_rotation(old, now=LATER)
    second = start_rotation(first.old, now=LATER)
    assert second.new_root.cert != first.new_root.cert
    leaf = issue(second.signing_ca, now=LATER)
    verify_chain(leaf.chain, [old.cert], now=LATER)
    with pytest.raises(IdentityError):
        verify_chain(leaf.chain, [first.new_root.cert], now=LATER)
