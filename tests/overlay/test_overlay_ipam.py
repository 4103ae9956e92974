"""Host-local IPAM: the pure pool (examples and hypothesis properties) and its JSON file."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from orch.errors import NetworkError
from orch.overlay.ipam import IpamStore, Pool, boot_time, written_before_boot

IP = ipaddress.IPv4Address


def test_allocation_skips_network_gateway_and_broadcast() -> None:
    pool = Pool.for_subnet("10.0.0.0/29")
    got = [pool.allocate(f"o{i}") for i in range(pool.capacity)]
    assert got == [IP(f"10.0.0.{i}") for i in range(2, 7)]
    assert pool.gateway == IP("10.0.0.1")


def test_allocate_is_idempotent_per_owner() -> None:
    pool = Pool.for_subnet("10.0.0.0/24")
    assert pool.allocate("a") == pool.allocate("a")
    assert len(pool.allocations) == 1


def test_exhaustion_names_the_subnet() -> None:
    pool = Pool.for_subnet("10.9.8.0/30")
    pool.allocate("a")
    with pytest.raises(NetworkError, match=r"10\.9\.8\.0/30 exhausted"):
        pool.allocate("b")


def test_next_fit_does_not_reuse_a_released_address_at_once() -> None:
    pool = Pool.for_subnet("10.0.0.0/24")
    first = pool.allocate("a")
    pool.release("a")
    assert pool.allocate("b") != first


def test_custom_gateway_is_skipped() -> None:
    pool = Pool.for_subnet("10.0.0.0/29", gateway="10.0.0.6")
    got = {pool.allocate(f"o{i}") for i in range(pool.capacity)}
    assert IP("10.0.0.6") not in got and IP("10.0.0.1") in got


def test_reserve_conflicts_are_errors() -> None:
    pool = Pool.for_subnet("10.0.0.0/24")
    pool.reserve("a", "10.0.0.9/24")
    assert pool.reserve("a", "10.0.0.9") == IP("10.0.0.9")
    with pytest.raises(NetworkError, match="held by a"):
        pool.reserve("b", "10.0.0.9")
    with pytest.raises(NetworkError, match="already holds"):
        pool.reserve("a", "10.0.0.10")
    for bad in ("10.0.0.0", "10.0.0.1", "10.0.0.255", "10.0.1.5"):
        with pytest.raises(NetworkError, match="not usable"):
            pool.reserve("c", bad)


def test_bad_subnets_are_rejected() -> None:
    with pytest.raises(NetworkError, match="bad subnet"):
        Pool.for_subnet("10.0.0.1/24")
    with pytest.raises(NetworkError, match="too small"):
        Pool.for_subnet("10.0.0.0/31")
    with pytest.raises(NetworkError, match="gateway"):
        Pool.for_subnet("10.0.0.0/24", gateway="10.0.0.255")


ops = st.lists(
    st.tuples(st.sampled_from(["alloc", "release"]), st.integers(min_value=0, max_value=20)),
    max_size=200,
)


@given(ops)
def test_pool_never_hands_out_an_address_twice(steps: list[tuple[str, int]]) -> None:
    pool = Pool.for_subnet("10.1.2.0/28")  # 13 usable addresses, 21 possible owners
    held: dict[str, IP] = {}
    for op, n in steps:
        owner = f"o{n}"
        if op == "release":
            assert pool.release(owner) == held.pop(owner, None)
            continue
        if owner not in held and len(held) == pool.capacity:
            with pytest.raises(NetworkError, match=r"10\.1\.2\.0/28"):
                pool.allocate(owner)
            continue
        address = pool.allocate(owner)
        assert held.setdefault(owner, address) == address
        assert pool.usable(address)
        assert len(set(held.values())) == len(held)
    assert {o: a for a, o in pool.allocations.items()} == held


@given(st.integers(min_value=0, max_value=12), st.integers(min_value=0, max_value=40))
def test_released_addresses_are_reusable(victim: int, churn: int) -> None:
    pool = Pool.for_subnet("10.1.2.0/28")
    for i in range(pool.capacity):
        pool.allocate(f"o{i}")
    for i in range(churn):  # move the cursor around
        owner = f"o{i % pool.capacity}"
        freed = pool.release(owner)
        assert pool.allocate(owner) == freed
    freed = pool.release(f"o{victim}")
    assert freed is not None
    assert pool.allocate("newcomer") == freed


def test_json_round_trip() -> None:
    pool = Pool.for_subnet("10.0.0.0/24")
    for i in range(5):
        pool.allocate(f"o{i}")
    pool.release("o2")
    again = Pool.from_json(json.loads(json.dumps(pool.to_json())))
    assert again == pool


def test_store_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ipam" / "bridge.json"
    store = IpamStore(path, "10.0.0.0/24")
    a = store.allocate("a")
    b = store.allocate("b")
    store.release("a")
    reopened = IpamStore(path, "10.0.0.0/24")
    assert reopened.address_of("b") == b
    assert reopened.address_of("a") is None
    assert reopened.allocate("c") not in (a, b)  # the cursor survived too
    assert [p.name for p in path.parent.iterdir()] == ["bridge.json"]  # no temp files


def test_store_refuses_another_subnet_with_live_allocations(tmp_path: Path) -> None:
    path = tmp_path / "bridge.json"
    store = IpamStore(path, "10.0.0.0/24")
    store.allocate("a")
    with pytest.raises(NetworkError, match=r"10\.0\.0\.0/24 .* not 10\.5\.0\.0/24"):
        IpamStore(path, "10.5.0.0/24")
    store.release("a")
    assert IpamStore(path, "10.5.0.0/24").allocate("a") == IP("10.5.0.2")


def test_store_reports_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "bridge.json"
    path.write_text("{not json")
    with pytest.raises(NetworkError, match="corrupt"):
        IpamStore(path, "10.0.0.0/24")


def test_store_starts_over_on_a_file_torn_before_this_boot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Writes are not fsync'ed: a machine crash may tear the file, and it also ended every
    container that held an address, so the pool starts empty (and says so)."""
    path = tmp_path / "bridge.json"
    path.write_text('{"subnet": "10.0.0.0/24", "alloc')
    before_boot = boot_time() - 60
    os.utime(path, (before_boot, before_boot))
    assert written_before_boot(path)
    store = IpamStore(path, "10.0.0.0/24")
    assert store.owners() == set() and "predates this boot" in caplog.text
    assert store.allocate("a") == IP("10.0.0.2")
    assert json.loads(path.read_text())["allocations"] == {"10.0.0.2": "a"}
    assert not written_before_boot(path)


def test_boot_time_is_in_the_past() -> None:
    assert 0 < boot_time() < time.time()


class IpamAcrossRestarts(RuleBasedStateMachine):
    """Random allocate/release/restart sequences: the store always equals a model."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="orcht-ipam-"))
        self.path = self.dir / "pool.json"
        self.store = IpamStore(self.path, "10.3.0.0/28")
        self.model: dict[str, IP] = {}

    @rule(n=st.integers(min_value=0, max_value=15))
    def allocate(self, n: int) -> None:
        owner = f"o{n}"
        if owner not in self.model and len(self.model) == self.store.pool.capacity:
            with pytest.raises(NetworkError, match=r"10\.3\.0\.0/28"):
                self.store.allocate(owner)
            return
        address = self.store.allocate(owner)
        assert address not in {a for o, a in self.model.items() if o != owner}
        self.model[owner] = address

    @rule(n=st.integers(min_value=0, max_value=15))
    def release(self, n: int) -> None:
        assert self.store.release(f"o{n}") == self.model.pop(f"o{n}", None)

    @rule()
    def restart(self) -> None:
        self.store = IpamStore(self.path, "10.3.0.0/28")

    @invariant()
    def matches_model(self) -> None:
        assert {o: self.store.address_of(o) for o in self.model} == self.model
        assert self.store.owners() == set(self.model)

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


TestIpamAcrossRestarts = IpamAcrossRestarts.TestCase
TestIpamAcrossRestarts.settings = settings(max_examples=50, stateful_step_count=30, deadline=None)
