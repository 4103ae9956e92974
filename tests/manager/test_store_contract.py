"""The Store contract, held by both implementations: the EtcdStore on the session's real
etcd and the MemoryStore. A test here states etcd's behaviour as orch relies on it; the
MemoryStore passes it too, so logic tested on the MemoryStore behaves the same on etcd.

Time: ``subject.pass_time(s)`` lets ``s`` seconds pass (real seconds on etcd, the fake
clock on the MemoryStore). Waits on state are on a watch with a deadline, never a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from orch.errors import ConflictError, StoreError
from orch.manager.state.api import (
    MAX_TXN_OPS,
    Create,
    Delete,
    Fence,
    KeyEvent,
    Kind,
    QuietSince,
    Store,
    Unmodified,
    Update,
)
from orch.manager.state.election import LEADER_KEY, Election, ElectionSettings
from orch.manager.state.memstore import MemoryStore
from orch.manager.state.store import EtcdStore
from orch.proto import objects_pb2, specs_pb2

# etcd rounds a shorter TTL up to its minimum (2 s with its default timings).
TTL = 2
# A lease is expired by etcd's lessor within 0.5 s of its deadline; a busy 2-core
# machine adds more.
EXPIRY_SLACK = 5.0


@dataclass
class Subject:
    store: Store
    pass_time: Callable[[float], Awaitable[None]]


@pytest.fixture(params=["memory", pytest.param("etcd", marks=pytest.mark.integration)])
def subject(request: pytest.FixtureRequest) -> Subject:
    if request.param == "etcd":
        return Subject(request.getfixturevalue("store"), asyncio.sleep)
    memory = MemoryStore()

    async def pass_time(seconds: float) -> None:
        memory.advance(seconds)

    return Subject(memory, pass_time)


def service(name: str, replicas: int = 1) -> objects_pb2.Service:
    return objects_pb2.Service(id=name, spec=specs_pb2.ServiceSpec(name=name, replicas=replicas))


def network(name: str) -> objects_pb2.Network:
    return objects_pb2.Network(spec=specs_pb2.NetworkSpec(name=name))


def liveness(node_id: str) -> objects_pb2.Node:
    return objects_pb2.Node(id=node_id)


async def take(stream: AsyncIterator[Any], until: Callable[[list], bool], timeout: float) -> list:
    """Items of ``stream`` until ``until(items)`` holds; fails after ``timeout`` seconds."""
    items: list = []
    try:
        async with asyncio.timeout(timeout):
            async for item in stream:
                items.append(item)
                if until(items):
                    return items
    except TimeoutError:
        pytest.fail(f"timed out after {timeout}s; got {items!r}")
    finally:
        with contextlib.suppress(Exception):
            await stream.aclose()  # type: ignore[attr-defined]
    pytest.fail(f"the stream ended; got {items!r}")


@pytest.mark.parametrize("implementation", [EtcdStore, MemoryStore])
def test_both_stores_have_every_method_of_the_protocol(implementation: type) -> None:
    """What a type checker would say, for a run without one: same names, same
    parameters, same kind of callable (a coroutine, or an async generator for watches)."""
    for name, member in vars(Store).items():
        if name.startswith("_") or not callable(member):
            continue
        theirs = getattr(implementation, name, None)
        assert theirs is not None, f"{implementation.__name__} has no {name}"
        assert [*inspect.signature(theirs).parameters] == [*inspect.signature(member).parameters]
        if name.startswith("watch"):
            assert inspect.isasyncgenfunction(theirs), name
        else:
            assert inspect.iscoroutinefunction(theirs), name


# --- guarded transactions -----------------------------------------------------------------


async def test_create_is_create_if_absent(subject: Subject) -> None:
    store = subject.store
    revision = await store.commit([Create(Kind.SERVICE, service("web"))])
    kv = await store.get_key(Kind.SERVICE.key("web"))
    assert kv is not None and kv.create_revision == kv.mod_revision == revision
    assert await store.revision() == revision
    with pytest.raises(ConflictError, match="create /orch/v1/services/web"):
        await store.commit([Create(Kind.SERVICE, service("web", 5))])
    assert (await store.get(Kind.SERVICE, "web")).obj.spec.replicas == 1
    assert await store.revision() == revision  # a lost race moves nothing


async def test_update_with_a_stale_revision_conflicts_and_writes_nothing(subject: Subject) -> None:
    store = subject.store
    created = await store.commit(
        [Create(Kind.SERVICE, service("a")), Create(Kind.SERVICE, service("b"))]
    )
    a, b = await store.get(Kind.SERVICE, "a"), await store.get(Kind.SERVICE, "b")
    assert a.mod_revision == b.mod_revision == created  # one transaction, one revision
    a.obj.spec.replicas = 5
    updated = await store.commit([Update(Kind.SERVICE, a.obj, a.mod_revision)])
    assert updated == created + 1
    kv = await store.get_key(a.key)
    assert (kv.create_revision, kv.mod_revision) == (created, updated)
    # b's write is fine, a's guard is stale: neither lands, the revision stays.
    b.obj.spec.replicas, a.obj.spec.replicas = 7, 9
    with pytest.raises(ConflictError):
        await store.commit(
            [
                Update(Kind.SERVICE, b.obj, b.mod_revision),
                Update(Kind.SERVICE, a.obj, a.mod_revision),
            ]
        )
    assert (await store.get(Kind.SERVICE, "a")).obj.spec.replicas == 5
    assert (await store.get(Kind.SERVICE, "b")).obj.spec.replicas == 1
    assert await store.revision() == updated


async def test_delete_is_guarded_by_mod_revision(subject: Subject) -> None:
    store = subject.store
    first = await store.commit([Create(Kind.SERVICE, service("web"))])
    web = await store.get(Kind.SERVICE, "web")
    web.obj.spec.replicas = 2
    await store.commit([Update(Kind.SERVICE, web.obj, web.mod_revision)])
    with pytest.raises(ConflictError, match="delete /orch/v1/services/web"):
        await store.commit([Delete(Kind.SERVICE, web.key, first)])
    current = await store.get(Kind.SERVICE, "web")
    await store.commit([Delete(Kind.SERVICE, web.key, current.mod_revision)])
    assert await store.get(Kind.SERVICE, "web") is None


async def test_a_fence_is_a_compare_on_the_leader_keys_value(subject: Subject) -> None:
    store = subject.store
    with pytest.raises(ConflictError):  # no leader key: no fence holds
        await store.commit([Create(Kind.SERVICE, service("x"))], fence=Fence(LEADER_KEY, b"m1"))
    await store.put_key(LEADER_KEY, b"m2")
    with pytest.raises(ConflictError):
        await store.commit([Create(Kind.SERVICE, service("x"))], fence=Fence(LEADER_KEY, b"m1"))
    assert await store.get(Kind.SERVICE, "x") is None
    await store.commit([Create(Kind.SERVICE, service("x"))], fence=Fence(LEADER_KEY, b"m2"))
    assert await store.get(Kind.SERVICE, "x") is not None


async def test_quiet_since_fails_when_a_key_of_the_kind_was_written_later(
    subject: Subject,
) -> None:
    store = subject.store
    first = await store.commit([Create(Kind.NETWORK, network("a"))])
    await store.commit([QuietSince(Kind.NETWORK, first), QuietSince(Kind.SERVICE, 0)])
    await store.commit([Create(Kind.NETWORK, network("b"))])
    with pytest.raises(ConflictError, match="nothing new under /orch/v1/networks/"):
        await store.commit([QuietSince(Kind.NETWORK, first), Create(Kind.SERVICE, service("s"))])
    assert await store.get(Kind.SERVICE, "s") is None
    now = await store.revision()
    b = await store.get(Kind.NETWORK, "b")
    await store.commit([Delete(Kind.NETWORK, b.key, b.mod_revision)])
    await store.commit([QuietSince(Kind.NETWORK, now)])  # deletions do not count


async def test_unmodified_guards_a_key_read_but_not_written(subject: Subject) -> None:
    store = subject.store
    absent = Kind.NETWORK.key("a")
    await store.commit([Unmodified(absent, 0), Create(Kind.SERVICE, service("s1"))])
    await store.commit([Create(Kind.NETWORK, network("a"))])
    with pytest.raises(ConflictError):  # no longer absent
        await store.commit([Unmodified(absent, 0), Create(Kind.SERVICE, service("s2"))])
    a = await store.get(Kind.NETWORK, "a")
    await store.commit([Unmodified(a.key, a.mod_revision), Create(Kind.SERVICE, service("s3"))])
    await store.commit([Delete(Kind.NETWORK, a.key, a.mod_revision)])
    with pytest.raises(ConflictError):
        await store.commit([Unmodified(a.key, a.mod_revision), Create(Kind.SERVICE, service("s4"))])
    names = [v.obj.spec.name for v in (await store.list(Kind.SERVICE))[0]]
    assert names == ["s1", "s3"]


async def test_what_etcd_refuses_outright(subject: Subject) -> None:
    store = subject.store
    assert await store.commit([]) == 0
    with pytest.raises(ValueError, match=f"exceeds {MAX_TXN_OPS}"):
        await store.commit([Create(Kind.SERVICE, service(f"s{i}")) for i in range(MAX_TXN_OPS + 1)])
    await store.commit([Create(Kind.SERVICE, service(f"s{i}")) for i in range(MAX_TXN_OPS)])
    with pytest.raises(StoreError, match="duplicate key"):
        await store.commit([Create(Kind.SERVICE, service("d")), Create(Kind.SERVICE, service("d"))])
    with pytest.raises(StoreError):  # a put on a lease that does not exist
        await store.put_leased(Kind.LIVENESS, liveness("n1"), 0x7FFF_0000_0001)
    assert await store.get(Kind.SERVICE, "d") is None
    assert await store.get(Kind.LIVENESS, "n1") is None


async def test_list_and_snapshot_are_sorted_and_read_at_the_current_revision(
    subject: Subject,
) -> None:
    store = subject.store
    await store.commit([Create(Kind.SERVICE, service(n)) for n in ("b", "c", "a")])
    await store.put_key(LEADER_KEY, b"m1")  # not an object: in no list
    revision = await store.commit([Create(Kind.NETWORK, network("n"))])
    services, at = await store.list(Kind.SERVICE)
    assert [v.obj.spec.name for v in services] == ["a", "b", "c"] and at == revision
    items, at = await store.snapshot()
    assert [(v.kind, v.key) for v in items] == [
        (Kind.NETWORK, "/orch/v1/networks/n"),
        (Kind.SERVICE, "/orch/v1/services/a"),
        (Kind.SERVICE, "/orch/v1/services/b"),
        (Kind.SERVICE, "/orch/v1/services/c"),
    ]
    assert at == revision


# --- raw keys -------------------------------------------------------------------------------


async def test_create_key_tells_who_holds_it(subject: Subject) -> None:
    store = subject.store
    won = await store.create_key(LEADER_KEY, b"m1")
    assert won.created and won.holder is None and won.revision == await store.revision()
    lost = await store.create_key(LEADER_KEY, b"m2")
    assert not lost.created and lost.revision == won.revision
    assert lost.holder is not None and lost.holder.value == b"m1"
    assert lost.holder.mod_revision == won.revision
    deleted = await store.delete_key(LEADER_KEY)
    assert deleted == won.revision + 1 and await store.get_key(LEADER_KEY) is None
    assert await store.delete_key(LEADER_KEY) == deleted  # nothing to delete: no revision


# --- the watch ------------------------------------------------------------------------------


async def test_a_watch_from_a_past_revision_sees_exactly_the_later_events_in_order(
    subject: Subject,
) -> None:
    store = subject.store
    await store.commit([Create(Kind.SERVICE, service("a"))])
    r2 = await store.commit(
        [Create(Kind.SERVICE, service("b")), Create(Kind.NETWORK, network("n"))]
    )
    a = await store.get(Kind.SERVICE, "a")
    a.obj.spec.replicas = 3
    r3 = await store.commit([Update(Kind.SERVICE, a.obj, a.mod_revision)])
    r4 = await store.commit([Delete(Kind.SERVICE, Kind.SERVICE.key("b"), r2)])
    r5 = await store.put_key(LEADER_KEY, b"m1")  # not an object: moves the revision only
    r6 = await store.commit([Create(Kind.SERVICE, service("c"))])

    batches = await take(store.watch(r2), lambda got: got[-1].revision >= r6, 10)
    seen = [(e.key, e.obj is None, e.mod_revision) for batch in batches for e in batch]
    assert seen == [
        ("/orch/v1/services/b", False, r2),
        ("/orch/v1/networks/n", False, r2),
        ("/orch/v1/services/a", False, r3),
        ("/orch/v1/services/b", True, r4),
        ("/orch/v1/services/c", False, r6),
    ]
    updated = next(e for b in batches for e in b if e.mod_revision == r3)
    assert updated.obj.spec.replicas == 3
    revisions = [b.revision for b in batches]  # the leader key's r5 moved them too
    assert revisions == sorted(set(revisions)) and revisions[-1] == r6 and r5 < r6


async def test_a_watch_sees_writes_made_after_it_started(subject: Subject) -> None:
    store = subject.store
    start = await store.revision() + 1
    stream = store.watch(start)
    reading = asyncio.create_task(take(stream, lambda got: got[-1].revision >= start + 1, 10))
    await asyncio.sleep(0)  # let the watch start before the writes
    first = await store.commit([Create(Kind.SERVICE, service("a"))])
    second = await store.put_key(LEADER_KEY, b"m1")
    assert (first, second) == (start, start + 1)
    # How revisions are split into batches is the store's choice; their order is not.
    batches = await reading
    assert [(e.key, e.mod_revision) for b in batches for e in b] == [("/orch/v1/services/a", first)]
    assert batches[-1].revision == second
    assert [b.revision for b in batches] == sorted({b.revision for b in batches})


async def test_watch_key_sees_one_key_only(subject: Subject) -> None:
    store = subject.store
    start = await store.revision() + 1
    await store.commit([Create(Kind.SERVICE, service("a"))])
    put = await store.put_key(LEADER_KEY, b"m1")
    deleted = await store.delete_key(LEADER_KEY)
    events = await take(store.watch_key(LEADER_KEY, start), lambda got: len(got) == 2, 10)
    assert events == [KeyEvent(LEADER_KEY, b"m1", put), KeyEvent(LEADER_KEY, None, deleted)]
    assert events[1].deleted and not events[0].deleted


async def test_compaction_makes_a_watch_from_before_it_fail(subject: Subject) -> None:
    store = subject.store
    old = await store.commit([Create(Kind.SERVICE, service("a"))])
    kept = await store.commit([Create(Kind.SERVICE, service("b"))])
    await store.compact(kept)
    with pytest.raises(StoreError, match="compacted"):
        await take(store.watch(old), lambda got: True, 10)
    with pytest.raises(StoreError, match="compacted"):
        await take(store.watch_key(Kind.SERVICE.key("a"), old), lambda got: True, 10)
    [batch] = await take(store.watch(kept), lambda got: True, 10)  # from the compaction on
    assert [(e.key, e.mod_revision) for e in batch] == [("/orch/v1/services/b", kept)]
    with pytest.raises(StoreError):
        await store.compact(kept + 100)  # a future revision


# --- leases -------------------------------------------------------------------------------


async def test_lease_expiry_deletes_its_keys_in_one_revision(subject: Subject) -> None:
    store = subject.store
    lease = await store.grant_lease(TTL)
    await store.put_leased(Kind.LIVENESS, liveness("n1"), lease)
    await store.put_leased(Kind.LIVENESS, liveness("n2"), lease)
    await store.commit([Create(Kind.SERVICE, service("kept"))])
    start = await store.revision() + 1
    await subject.pass_time(TTL)
    batches = await take(
        store.watch(start), lambda got: sum(map(len, got)) >= 2, TTL + EXPIRY_SLACK
    )
    events = [e for b in batches for e in b]
    assert sorted(e.key for e in events) == [Kind.LIVENESS.key("n1"), Kind.LIVENESS.key("n2")]
    assert all(e.obj is None for e in events)
    assert len({e.mod_revision for e in events}) == 1
    assert await store.get(Kind.LIVENESS, "n1") is None
    assert await store.get(Kind.SERVICE, "kept") is not None
    assert await store.keep_alive(lease) <= 0


async def test_keep_alive_keeps_a_lease_past_its_ttl(subject: Subject) -> None:
    store = subject.store
    lease = await store.grant_lease(TTL)
    await store.put_leased(Kind.LIVENESS, liveness("n1"), lease)
    for _ in range(3):  # 3 s in all, past the TTL of 2 s
        await subject.pass_time(TTL / 2)
        assert await store.keep_alive(lease) == TTL
    kv = await store.get_key(Kind.LIVENESS.key("n1"))
    assert kv is not None and kv.lease == lease
    await store.revoke_lease(lease)
    assert await store.get(Kind.LIVENESS, "n1") is None
    assert await store.keep_alive(lease) <= 0
    with pytest.raises(StoreError):
        await store.revoke_lease(lease)


async def test_an_update_moves_a_key_onto_another_lease(subject: Subject) -> None:
    store = subject.store
    short, grace = await store.grant_lease(TTL), await store.grant_lease(TTL * 10)
    await store.put_leased(Kind.LIVENESS, liveness("n1"), short)
    record = await store.get(Kind.LIVENESS, "n1")
    await store.commit([Update(Kind.LIVENESS, record.obj, record.mod_revision, lease=grace)])
    await store.revoke_lease(short)
    kv = await store.get_key(Kind.LIVENESS.key("n1"))
    assert kv is not None and kv.lease == grace
    await store.revoke_lease(grace)
    assert await store.get(Kind.LIVENESS, "n1") is None


async def test_an_update_from_revision_zero_creates_on_a_lease_only_if_absent(
    subject: Subject,
) -> None:
    # What `orch node rm` writes: the deny-list entry, created on a lease of its own
    # in the transaction that deletes the node.
    store = subject.store
    lease = await store.grant_lease(TTL)
    denied = objects_pb2.DeniedNode(id="n1", hostname="h1")
    await store.commit([Update(Kind.DENIED, denied, 0, lease=lease)])
    kv = await store.get_key(Kind.DENIED.key("n1"))
    assert kv is not None and kv.lease == lease
    with pytest.raises(ConflictError):
        await store.commit([Update(Kind.DENIED, denied, 0, lease=lease)])
    await subject.pass_time(TTL)
    await take(store.watch(kv.mod_revision + 1), lambda got: any(map(len, got)), TTL + EXPIRY_SLACK)
    assert await store.get(Kind.DENIED, "n1") is None


# --- the election on top --------------------------------------------------------------------

FAST = ElectionSettings(
    lease_ttl=TTL, keepalive_interval=0.3, retry_interval=0.1, keepalive_grace=1.0
)


class Terms:
    """Who led, in order, and per manager an event set while it leads and one set when a
    term of it ended."""

    def __init__(self, *names: str) -> None:
        self.order: list[str] = []
        self.leading = {n: asyncio.Event() for n in names}
        self.ended = {n: asyncio.Event() for n in names}

    def lead_as(self, name: str) -> Callable[[], Awaitable[None]]:
        async def lead() -> None:
            self.order.append(name)
            self.leading[name].set()
            try:
                await asyncio.Event().wait()
            finally:
                self.leading[name].clear()
                self.ended[name].set()

        return lead


class Proxy:
    """The real store, seen through one manager's eyes (subclasses change one call)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class Standby(Proxy):
    """Sets ``lost`` once a campaign of this manager found the leader key taken."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.lost = asyncio.Event()

    async def create_key(self, key: str, value: bytes, *, lease: int = 0) -> Any:
        result = await self._store.create_key(key, value, lease=lease)
        if not result.created:
            self.lost.set()
        return result


class CutOff(Proxy):
    """A manager that loses the store once ``cut`` is set (partitioned, or paused past
    its lease): every call fails from then on, as a call to an unreachable etcd does
    after the store's timeout. It can neither keep its lease alive nor campaign again."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.cut = False

    def __getattr__(self, name: str) -> Any:
        if not self.cut:
            return getattr(self._store, name)

        async def unreachable(*args: Any, **kwargs: Any) -> Any:
            raise StoreError(f"{name}: the store is unreachable")

        return unreachable


@contextlib.asynccontextmanager
async def running(*jobs: Awaitable[None]) -> AsyncIterator[list[asyncio.Task]]:
    tasks = [asyncio.ensure_future(j) for j in jobs]
    try:
        yield tasks
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_one_leader_and_the_other_takes_over_when_it_resigns(subject: Subject) -> None:
    store = subject.store
    terms, standby = Terms("m1", "m2"), Standby(store)
    e1, e2 = Election(store, "m1", FAST), Election(standby, "m2", FAST)  # type: ignore[arg-type]
    async with running(e1.run(terms.lead_as("m1"))) as [t1]:
        await asyncio.wait_for(terms.leading["m1"].wait(), 10)
        async with running(e2.run(terms.lead_as("m2"))):
            await asyncio.wait_for(standby.lost.wait(), 10)  # m2 campaigned and lost
            assert e1.is_leader and not e2.is_leader
            assert await e2.leader() == "m1"
            with pytest.raises(ConflictError):
                await store.commit([Create(Kind.SERVICE, service("x"))], fence=e2.fence)
            await store.commit([Create(Kind.SERVICE, service("x"))], fence=e1.fence)
            t1.cancel()  # m1 stops: its lease is revoked on the way out
            await asyncio.wait_for(terms.leading["m2"].wait(), 10)
            assert terms.order == ["m1", "m2"]
            assert await e1.leader() == "m2"


async def test_the_other_takes_over_when_the_leaders_lease_expires(subject: Subject) -> None:
    store = subject.store
    terms, standby, m1 = Terms("m1", "m2"), Standby(store), CutOff(store)
    e1 = Election(m1, "m1", FAST)  # type: ignore[arg-type]
    e2 = Election(standby, "m2", FAST)  # type: ignore[arg-type]
    async with running(e1.run(terms.lead_as("m1"))):
        await asyncio.wait_for(terms.leading["m1"].wait(), 10)
        async with running(e2.run(terms.lead_as("m2"))):
            await asyncio.wait_for(standby.lost.wait(), 10)
            m1.cut = True
            await subject.pass_time(TTL)  # m1's keep-alives never reach the store
            await asyncio.wait_for(terms.leading["m2"].wait(), TTL + EXPIRY_SLACK)
            assert await e2.leader() == "m2"
            with pytest.raises(ConflictError):  # m1 may not know yet; its writes are fenced
                await store.commit([Create(Kind.SERVICE, service("x"))], fence=e1.fence)
            # m1 steps down once no keep-alive answered for its grace.
            await asyncio.wait_for(terms.ended["m1"].wait(), TTL + FAST.keepalive_grace + 5)
            assert terms.order == ["m1", "m2"] and e2.is_leader and not e1.is_leader
