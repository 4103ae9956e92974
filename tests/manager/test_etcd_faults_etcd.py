"""The manager's etcd door under etcd faults, on a real 3-member etcd cluster (loopback).

One member lost (the leader member, the harder case): the Store fails over to the other
members, and a write sent while etcd elects a new leader still lands, within the Store's
timeout; the manager keeps its leadership. Quorum lost (two members): every call fails
with StoreError within the timeout (10 s), nothing hangs, leases are not expired by the
outage, the Control API answers UNAVAILABLE with a clear message and the store-unavailable
marker, and the leading manager steps down and leads again once quorum is back.

Every test restarts the members it stopped, also when it fails.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from tests_support import EtcdMembers, eventually

from orch.errors import StoreError
from orch.grpcerrors import STORE_UNAVAILABLE
from orch.manager.controlapi.server import ControlAPI
from orch.manager.state.api import PREFIX, Create, Kind, Store
from orch.manager.state.election import LEADER_KEY, Election, ElectionSettings
from orch.manager.state.store import DEFAULT_TIMEOUT, EtcdStore
from orch.manager.state.view import ClusterView
from orch.manager.streams.logbroker import LogBroker
from orch.proto import control_pb2, control_pb2_grpc, objects_pb2, specs_pb2

TIMEOUT = DEFAULT_TIMEOUT  # the Store's default: the bound a call may take
SLACK = 1.5  # scheduling on a busy 2-core machine


Trio = EtcdMembers  # three of them


@pytest.fixture(scope="module")
def trio() -> Iterator[Trio]:
    if not shutil.which("etcd"):
        pytest.skip("etcd is not installed")
    t = EtcdMembers(Path(tempfile.mkdtemp(prefix="orch-test-trio-")), 3, "orch-test-trio")
    try:
        asyncio.run(t.start())
        yield t
    finally:
        t.close()


@pytest.fixture
async def store3(trio: Trio) -> Any:
    """A Store on all three members, the orch keyspace empty; every member up again after
    the test."""
    await trio.restore()
    s = await EtcdStore.connect(trio.endpoints, tls=trio.tls)
    await s.delete_prefix(PREFIX)
    try:
        yield s
    finally:
        await trio.restore()
        await s.delete_prefix(PREFIX)
        await s.close()


def service(name: str) -> objects_pb2.Service:
    return objects_pb2.Service(id=name, spec=specs_pb2.ServiceSpec(name=name, replicas=1))


async def timed(coro: Awaitable[Any]) -> tuple[float, Any]:
    """(seconds taken, result or the exception raised)."""
    start = time.monotonic()
    try:
        result: Any = await coro
    except Exception as exc:
        result = exc
    return time.monotonic() - start, result


# --- one member lost ----------------------------------------------------------------------


async def test_connect_skips_a_dead_member(trio: Trio, store3: Store) -> None:
    trio.kill(0)
    other = await EtcdStore.connect(trio.endpoints, tls=trio.tls)  # the dead one is named first
    try:
        await other.commit([Create(Kind.SERVICE, service("first-dead"))])
        assert (await store3.get(Kind.SERVICE, "first-dead")) is not None
    finally:
        await other.close()


async def test_a_write_sent_as_the_leader_member_dies_still_lands(
    trio: Trio, store3: Store
) -> None:
    await store3.commit([Create(Kind.SERVICE, service("before"))])
    trio.kill(await trio.leader())
    took, result = await timed(store3.commit([Create(Kind.SERVICE, service("during"))]))
    assert isinstance(result, int), f"the write failed after {took:.1f}s: {result}"
    assert took < TIMEOUT
    assert (await store3.get(Kind.SERVICE, "during")) is not None
    items, _ = await store3.list(Kind.SERVICE)
    assert sorted(v.obj.spec.name for v in items) == ["before", "during"]


async def test_the_leader_keeps_leading_through_an_etcd_leader_change(
    trio: Trio, store3: Store
) -> None:
    settings = ElectionSettings()  # the defaults the managers run with
    lost = asyncio.Event()
    started = asyncio.Event()

    async def lead() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            lost.set()
            raise

    election = Election(store3, "m1", settings)
    runner = asyncio.create_task(election.run(lead))
    try:
        await asyncio.wait_for(started.wait(), 10)
        trio.kill(await trio.leader())
        # Past the lease's TTL after the kill, etcd renewed it and the manager still leads.
        deadline = time.monotonic() + settings.lease_ttl + 2
        while time.monotonic() < deadline:
            assert not lost.is_set(), "the manager lost its leadership to a member loss"
            await asyncio.sleep(0.1)
        assert await election.leader() == "m1"
        assert election.is_leader and not runner.done()
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


# --- quorum lost --------------------------------------------------------------------------


async def test_without_quorum_every_call_fails_within_the_timeout(
    trio: Trio, store3: Store
) -> None:
    # 4 s: shorter than the outage below (> the Store's timeout), long enough that the members' restart
    # on a busy machine does not outlast the TTL etcd gives every lease when it elects.
    lease = await store3.grant_lease(4)
    liveness = objects_pb2.Node(id="n1")
    await store3.put_leased(Kind.LIVENESS, liveness, lease)
    trio.kill(0)
    trio.kill(1)
    killed_at = time.monotonic()
    calls = {
        "commit": store3.commit([Create(Kind.SERVICE, service("lost"))]),
        "get": store3.get(Kind.SERVICE, "lost"),
        "snapshot": store3.snapshot(),
        "grant": store3.grant_lease(2),
    }
    outcomes = await asyncio.gather(*(timed(c) for c in calls.values()))
    results = dict(zip(calls, outcomes, strict=True))
    # A keep-alive may still succeed in the first second, while the surviving member
    # believes it leads (it renews leases itself); by now it knows better.
    results["keep-alive"] = await timed(store3.keep_alive(lease))
    for what, (took, result) in results.items():
        assert isinstance(result, StoreError), f"{what}: {result!r}"
        assert took < TIMEOUT + SLACK, f"{what} took {took:.1f}s"
    assert f"no answer within {TIMEOUT:g}s" in str(results["commit"][1])

    outage = time.monotonic() - killed_at
    assert outage > 4, f"the outage ({outage:.1f}s) must outlast the lease's TTL"
    # The outage lasted longer than the lease's TTL, yet etcd expired nothing: a new etcd
    # leader renews every lease. The key is there and a refresh keeps it.
    await trio.restart(0, 1)
    assert await store3.keep_alive(lease) > 0
    assert (await store3.get(Kind.LIVENESS, "n1")) is not None
    await store3.commit([Create(Kind.SERVICE, service("after"))])


async def test_without_quorum_a_write_is_unavailable_with_a_clear_message(
    trio: Trio, store3: Store
) -> None:
    view = ClusterView(store3)
    feed = asyncio.create_task(view.run())
    server = grpc.aio.server()
    control_pb2_grpc.add_ControlServicer_to_server(
        ControlAPI(store=store3, view=view, logs=LogBroker()), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = control_pb2_grpc.ControlStub(channel)
    try:
        await view.ready()
        spec = specs_pb2.ServiceSpec(
            name="web", replicas=1, container=specs_pb2.ContainerSpec(image="r/busybox:1")
        )
        await stub.Apply(control_pb2.ApplyRequest(services=[spec]))
        trio.kill(1)
        trio.kill(2)
        took, result = await timed(stub.Scale(control_pb2.ScaleRequest(replicas={"web": 3})))
        assert isinstance(result, grpc.aio.AioRpcError), result
        assert result.code() == grpc.StatusCode.UNAVAILABLE
        assert STORE_UNAVAILABLE in tuple(result.trailing_metadata() or ())
        assert result.details().startswith("the cluster store (etcd) is unavailable (")
        assert "\n" not in result.details()
        assert took < TIMEOUT + SLACK
        # Reads answer from the view at once: the state as of the outage.
        took, services = await timed(stub.ListServices(control_pb2.ListServicesRequest()))
        assert [s.service.spec.replicas for s in services.services] == [1]
        assert took < 1.0
        await trio.restart(1, 2)
        await stub.Scale(control_pb2.ScaleRequest(replicas={"web": 3}))
        replicas = (await stub.GetService(control_pb2.GetServiceRequest(name="web"))).service
        assert replicas.spec.replicas == 3
    finally:
        await channel.close()
        await server.stop(0)
        feed.cancel()
        await asyncio.gather(feed, return_exceptions=True)


async def test_the_leader_steps_down_without_quorum_and_a_leader_returns_after(
    trio: Trio, store3: Store
) -> None:
    settings = ElectionSettings(keepalive_grace=2.0)
    terms: list[str] = []
    leading = {name: asyncio.Event() for name in ("m1", "m2")}

    def lead_as(name: str) -> Callable[[], Awaitable[None]]:
        async def lead() -> None:
            terms.append(name)
            leading[name].set()
            try:
                await asyncio.Event().wait()
            finally:
                leading[name].clear()

        return lead

    e1, e2 = Election(store3, "m1", settings), Election(store3, "m2", settings)
    t1 = asyncio.create_task(e1.run(lead_as("m1")))
    t2: asyncio.Task | None = None
    try:
        await asyncio.wait_for(leading["m1"].wait(), 10)
        t2 = asyncio.create_task(e2.run(lead_as("m2")))
        trio.kill(0)
        trio.kill(1)
        # m1 gives up within the grace plus one keep-alive attempt; no one else can lead.
        await eventually(lambda: not e1.is_leader, settings.keepalive_grace + 5, "a step-down")
        assert not e2.is_leader
        await trio.restart(0, 1)
        # A leader again, soon: m1 revokes the key its failed resignation left behind.
        await eventually(lambda: e1.is_leader or e2.is_leader, 10, "a new term")
        kv = await store3.get_key(LEADER_KEY)
        assert kv is not None and kv.value.decode() in ("m1", "m2")
        assert len(terms) == 2
        assert not t1.done() and not t2.done(), "an election loop ended"
    finally:
        for t in (t1, t2):
            if t is not None:
                t.cancel()
                await asyncio.gather(t, return_exceptions=True)


# --- what recovery relies on --------------------------------------------------------------


async def test_the_view_counts_writes_of_keys_that_are_not_objects(store: Store) -> None:
    """A new leader's first write after an outage is the leader key, not an object; a
    write that first waits for the view to reach etcd's revision must not wait for the
    next object write."""
    view = ClusterView(store)
    feed = asyncio.create_task(view.run())
    try:
        await view.ready()
        await store.commit([Create(Kind.SERVICE, service("web"))])
        await store.put_key(LEADER_KEY, b"m1")
        revision = await store.revision()
        await view.wait_for(revision, timeout=5)
        assert view.revision == revision
    finally:
        feed.cancel()
        await asyncio.gather(feed, return_exceptions=True)
