"""What only the MemoryStore has: its bounded history, its clocks, closing. Everything it
shares with etcd is in test_store_contract.py."""

from __future__ import annotations

import asyncio

import pytest

from orch.errors import StoreError
from orch.manager.state.api import Create, Kind
from orch.manager.state.memstore import MemoryStore
from orch.proto import objects_pb2, specs_pb2


def service(name: str) -> objects_pb2.Service:
    return objects_pb2.Service(id=name, spec=specs_pb2.ServiceSpec(name=name))


async def test_history_is_bounded_and_a_watch_from_before_it_fails() -> None:
    store = MemoryStore(history_limit=3)
    first = await store.commit([Create(Kind.SERVICE, service("s0"))])
    for i in range(1, 4):
        await store.commit([Create(Kind.SERVICE, service(f"s{i}"))])
    with pytest.raises(StoreError, match=f"watch from revision {first}: compacted"):
        await anext(store.watch(first))
    batch = await anext(store.watch(first + 1))  # the oldest revision kept
    assert [e.key for e in batch] == [Kind.SERVICE.key(f"s{i}") for i in range(1, 4)]


async def test_a_watcher_that_falls_behind_the_history_fails_like_a_compacted_one() -> None:
    store = MemoryStore(history_limit=2)
    start = await store.revision() + 1
    watch = store.watch(start)
    await store.commit([Create(Kind.SERVICE, service("a"))])
    assert [e.key for e in await anext(watch)] == [Kind.SERVICE.key("a")]
    for name in ("b", "c", "d"):  # written while the reader does not read
        await store.commit([Create(Kind.SERVICE, service(name))])
    with pytest.raises(StoreError, match="compacted"):
        await anext(watch)


async def test_a_watch_batch_is_bounded_but_never_splits_a_revision() -> None:
    store = MemoryStore()
    start = await store.revision() + 1
    for i in range(12):
        await store.commit([Create(Kind.SERVICE, service(f"s{i}.{j}")) for j in range(100)])
    watch = store.watch(start)
    sizes = [len(await anext(watch)), len(await anext(watch))]
    assert sizes == [1000, 200]


async def test_an_injected_clock_expires_leases_at_the_next_call() -> None:
    now = [100.0]
    store = MemoryStore(clock=lambda: now[0])
    lease = await store.grant_lease(5)
    await store.put_leased(Kind.LIVENESS, objects_pb2.Node(id="n1"), lease)
    now[0] = 104.9
    assert await store.get(Kind.LIVENESS, "n1") is not None
    now[0] = 105.0
    assert store.expire() == 1
    assert await store.get(Kind.LIVENESS, "n1") is None
    with pytest.raises(RuntimeError):
        store.advance(1)  # the fake clock is not this store's clock


async def test_advance_wakes_a_watcher_with_the_expiry() -> None:
    store = MemoryStore()
    lease = await store.grant_lease(2)
    await store.put_leased(Kind.LIVENESS, objects_pb2.Node(id="n1"), lease)
    watch = store.watch(await store.revision() + 1)
    reading = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0)
    assert store.advance(1.9) == 0 and not reading.done()
    assert store.advance(0.1) == 1
    batch = await asyncio.wait_for(reading, 1)
    assert [(e.key, e.obj) for e in batch] == [(Kind.LIVENESS.key("n1"), None)]


async def test_closing_ends_watches_and_refuses_calls() -> None:
    store = MemoryStore()
    reading = asyncio.ensure_future(anext(store.watch(0)))
    await asyncio.sleep(0)
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await asyncio.wait_for(reading, 1)
    with pytest.raises(StoreError, match="closed"):
        await store.revision()
