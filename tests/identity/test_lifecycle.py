"""Renewal time and the deny list."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orch.errors import IdentityError
from orch.identity import ca as pki
from orch.identity.errors import CertificateDeniedError
from orch.identity.lifecycle import DenyList, renewal_delay, renewal_time
from orch.identity.peer import NodeIdentity, identity_from_certificate

from .pki import issue

T0 = datetime(2026, 12, 1, tzinfo=UTC)


class Fixed(random.Random):
    """An RNG whose uniform() returns one end of the interval: the bounds, exactly."""

    def __init__(self, end: str) -> None:
        super().__init__()
        self.end = end

    def uniform(self, a: float, b: float) -> float:
        return a if self.end == "low" else b


def test_renewal_is_between_half_and_four_fifths_of_the_life() -> None:
    end = T0 + timedelta(days=90)
    assert renewal_time(T0, end, rng=Fixed("low")) == T0 + timedelta(days=45)
    assert renewal_time(T0, end, rng=Fixed("high")) == T0 + timedelta(days=72)


@given(
    life=st.timedeltas(min_value=timedelta(minutes=1), max_value=timedelta(days=3650)),
    seed=st.integers(),
)
def test_renewal_is_always_inside_the_window(life: timedelta, seed: int) -> None:
    when = renewal_time(T0, T0 + life, rng=random.Random(seed))
    assert T0 + life * 0.5 <= when <= T0 + life * 0.8


def test_renewal_times_spread_so_nodes_do_not_renew_together() -> None:
    rng = random.Random(7)
    times = {renewal_time(T0, T0 + timedelta(days=90), rng=rng) for _ in range(100)}
    assert len(times) == 100
    assert max(times) - min(times) > timedelta(days=20)


def test_renewal_delay_counts_from_now_and_is_never_negative() -> None:
    root = pki.create_root_ca(now=T0)
    cert = issue(root, validity=timedelta(minutes=10), now=T0).cert
    # not_before is backdated by the clock skew allowance, but the life counts from the
    # issue: 10 minutes, renewed at 5-8 minutes (not at once, as 50% of 15 minutes from
    # not_before would have it for short certificates).
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(minutes=15)
    assert renewal_delay(cert, now=T0, rng=Fixed("low")) == timedelta(minutes=5)
    assert renewal_delay(cert, now=T0, rng=Fixed("high")) == timedelta(minutes=8)
    assert renewal_delay(cert, now=T0 + timedelta(minutes=9), rng=Fixed("high")) == timedelta(0)
    assert renewal_delay(cert, now=T0 + timedelta(days=1)) == timedelta(0)


def test_a_two_minute_certificate_is_not_renewed_at_once() -> None:
    root = pki.create_root_ca(now=T0)
    cert = issue(root, validity=timedelta(minutes=2), now=T0).cert
    delay = renewal_delay(cert, now=T0, rng=random.Random(7))
    assert timedelta(minutes=1) <= delay <= timedelta(seconds=96)


def _identity(node_id: str = "a" * 25, serial: int = 1) -> NodeIdentity:
    return NodeIdentity(node_id, pki.Role.WORKER, "c" * 25, serial, T0)


def test_an_empty_deny_list_denies_nobody() -> None:
    identity = _identity()
    assert DenyList().check(identity) is identity and not DenyList().is_denied(identity)


def test_a_removed_node_is_denied_whatever_its_certificate() -> None:
    root = pki.create_root_ca()
    node_id = pki.new_id()
    first = identity_from_certificate(issue(root, node_id=node_id).cert)
    renewed = identity_from_certificate(issue(root, node_id=node_id).cert)
    denied = DenyList().deny_nodes([node_id])
    for identity in (first, renewed):
        with pytest.raises(CertificateDeniedError, match=f"node {node_id} was removed"):
            denied.check(identity)
    other = identity_from_certificate(issue(root).cert)
    assert denied.check(other) is other


def test_a_revoked_serial_is_denied_and_the_nodes_next_certificate_is_not() -> None:
    denied = DenyList().deny_serials([0xABC])
    with pytest.raises(CertificateDeniedError, match=r"serial abc\) was revoked") as err:
        denied.check(_identity(serial=0xABC))
    assert isinstance(err.value, IdentityError)
    assert denied.check(_identity(serial=0xABD)).serial == 0xABD


def test_deny_lists_are_values() -> None:
    base = DenyList()
    grown = base.deny_nodes(["x" * 25]).deny_serials([5])
    assert base == DenyList() and grown.node_ids == {"x" * 25} and grown.serials == {5}
