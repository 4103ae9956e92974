"""The guard-only operations of the store, the new kinds' keys, and commit_groups, on a
real etcd."""

from __future__ import annotations

import pytest

from orch.errors import ConflictError
from orch.manager.state.api import Create, Delete, Kind, QuietSince, Unmodified, parse_key
from orch.proto import objects_pb2, specs_pb2

pytestmark = pytest.mark.integration


def network(name: str) -> objects_pb2.Network:
    return objects_pb2.Network(spec=specs_pb2.NetworkSpec(name=name))


def claim(value: str) -> objects_pb2.Claim:
    return objects_pb2.Claim(kind="subnet", value=value, owner="x")


async def test_lease_and_claim_keys_hold_slashes_and_parse_back(store) -> None:
    lease = objects_pb2.AddressLease(network="front", address="10.10.0.5", task_id="t")
    await store.commit([Create(Kind.LEASE, lease), Create(Kind.CLAIM, claim("10.10.0.0/24"))])
    assert Kind.LEASE.key_of(lease) == "/orch/v1/ipam/front/10.10.0.5"
    assert parse_key("/orch/v1/claims/subnet/10.10.0.0/24") == (Kind.CLAIM, "subnet/10.10.0.0/24")
    got = await store.get(Kind.CLAIM, "subnet/10.10.0.0/24")
    assert got is not None and got.obj.value == "10.10.0.0/24"
    with pytest.raises(ConflictError):  # claims are create-if-absent
        await store.commit([Create(Kind.CLAIM, claim("10.10.0.0/24"))])


async def test_quiet_since_fails_when_a_key_of_the_kind_was_written_later(store) -> None:
    first = await store.commit([Create(Kind.NETWORK, network("a"))])
    # Nothing new since `first`: the guard holds (also over an empty folder of another kind).
    await store.commit([QuietSince(Kind.NETWORK, first), QuietSince(Kind.SERVICE, 0)])
    await store.commit([Create(Kind.NETWORK, network("b"))])
    with pytest.raises(ConflictError):
        await store.commit([QuietSince(Kind.NETWORK, first), Create(Kind.CLAIM, claim("x"))])
    assert await store.get(Kind.CLAIM, "subnet/x") is None  # nothing of the txn landed
    # Deletions do not count.
    now = await store.revision()
    b = await store.get(Kind.NETWORK, "b")
    await store.commit([Delete(Kind.NETWORK, b.key, b.mod_revision)])
    await store.commit([QuietSince(Kind.NETWORK, now)])


async def test_unmodified_guards_an_object_that_is_read_but_not_written(store) -> None:
    await store.commit([Create(Kind.NETWORK, network("a"))])
    a = await store.get(Kind.NETWORK, "a")
    await store.commit([Unmodified(a.key, a.mod_revision), Create(Kind.CLAIM, claim("1"))])
    await store.commit([Delete(Kind.NETWORK, a.key, a.mod_revision)])
    with pytest.raises(ConflictError):
        await store.commit([Unmodified(a.key, a.mod_revision), Create(Kind.CLAIM, claim("2"))])


async def test_commit_groups_never_splits_a_group(store) -> None:
    groups = [[Create(Kind.CLAIM, claim(f"{g}.{i}")) for i in range(3)] for g in range(5)]
    # A taken key in the fourth group fails its batch only: batches are [g0 g1] [g2 g3] [g4].
    await store.commit([Create(Kind.CLAIM, claim("3.2"))])
    with pytest.raises(ConflictError):
        await store.commit_groups(groups, size=7)
    present = {c.value for c in [v.obj for v in (await store.list(Kind.CLAIM))[0]]}
    assert present == {"0.0", "0.1", "0.2", "1.0", "1.1", "1.2", "3.2"}
