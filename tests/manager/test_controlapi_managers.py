"""Two managers' Control APIs on one store (a MemoryStore), each with its own ClusterView:
a write through one and, at once, a write through the other both succeed (the second
manager's view trails the first write; a lost race catches up and decides again instead
of failing)."""

from __future__ import annotations

import asyncio
import secrets
import time

from orch.manager.controlapi.server import ControlSettings
from orch.manager.state.api import Store
from orch.proto import control_pb2, specs_pb2

from .conftest import Api, serve_control_api


class TrailingStore:
    """The store as a manager whose watch runs behind (a busy or distant manager): every
    batch of events reaches its view 50 ms late. Everything else is the real store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    async def watch(self, start_revision: int):
        async for events in self._store.watch(start_revision):
            await asyncio.sleep(0.05)
            yield events


async def test_writes_alternating_between_managers_all_succeed(api: Api) -> None:
    trailing = TrailingStore(api.store)
    async with serve_control_api(api.store, trailing) as other:  # type: ignore[arg-type]
        spec = specs_pb2.ServiceSpec(
            name="alt", replicas=1, container=specs_pb2.ContainerSpec(image="oci:/x:latest")
        )
        await api.stub.Apply(control_pb2.ApplyRequest(services=[spec]))
        stubs = [api.stub, other.stub]
        for replicas in range(2, 12):
            stub = stubs[replicas % 2]
            await stub.Scale(control_pb2.ScaleRequest(replicas={"alt": replicas}))
        for stub in stubs:
            got = await stub.GetService(control_pb2.GetServiceRequest(name="alt"))
            assert got.service.spec.replicas == 11
        await other.stub.RemoveService(control_pb2.RemoveServiceRequest(name="alt"))


async def test_a_write_outside_orchs_keys_does_not_stall_writes(api: Api) -> None:
    """The view learns only revisions of orch's keys; a foreign write to the same store
    (etcd) moves its revision past anything the view will see. A write then waits at most
    the catch-up bound, and succeeds."""
    spec = specs_pb2.ServiceSpec(
        name="foreign", replicas=1, container=specs_pb2.ContainerSpec(image="oci:/x:latest")
    )
    await api.stub.Apply(control_pb2.ApplyRequest(services=[spec]))
    key = f"/orch-test-foreign/{secrets.token_hex(4)}"
    await api.store.put_key(key, b"x")
    try:
        began = time.monotonic()
        await api.stub.Scale(control_pb2.ScaleRequest(replicas={"foreign": 2}))
        assert time.monotonic() - began < ControlSettings().catch_up_timeout + 1.0
    finally:
        await api.store.delete_key(key)
        await api.stub.RemoveService(control_pb2.RemoveServiceRequest(name="foreign"))
