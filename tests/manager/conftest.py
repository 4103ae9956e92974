"""Fixtures of the manager's tests: a MemoryStore (``memstore``) for the manager's logic,
and the real Control API over gRPC on it, served as a manager serves it (mTLS and the
authorization interceptor, mtls.py) and called with an admin certificate. Tests about etcd itself use ``store`` (the
session's etcd, tests/conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from orch.identity.ca import Role
from orch.manager.authz import StoreDenyList
from orch.manager.controlapi.server import ControlAPI
from orch.manager.state.api import Store
from orch.manager.state.memstore import MemoryStore
from orch.manager.state.view import ClusterView
from orch.manager.streams.logbroker import LogBroker
from orch.proto import control_pb2_grpc

from .mtls import ClusterCA, serve


@dataclass
class Api:
    stub: control_pb2_grpc.ControlStub
    store: Store
    view: ClusterView
    ca: ClusterCA
    address: str


@contextlib.asynccontextmanager
async def serve_control_api(
    store: Store, watched: Store | None = None, ca: ClusterCA | None = None
) -> AsyncIterator[Api]:
    """A ControlAPI with its own ClusterView (fed by ``watched``, default ``store``), served
    on a loopback port with mTLS and the store's deny list: one manager's Control API."""
    ca = ca or ClusterCA()
    view = ClusterView(watched or store)
    feed = asyncio.create_task(view.run())
    await view.ready()
    control = ControlAPI(store=store, view=view, logs=LogBroker())
    try:
        async with serve(
            ca,
            lambda server: control_pb2_grpc.add_ControlServicer_to_server(control, server),
            deny=StoreDenyList(view),
        ) as (_, address):
            async with ca.channel(address, ca.issue(Role.ADMIN)) as channel:
                yield Api(control_pb2_grpc.ControlStub(channel), store, view, ca, address)
    finally:
        feed.cancel()
        await asyncio.gather(feed, return_exceptions=True)


@pytest.fixture
async def memstore() -> AsyncIterator[MemoryStore]:
    """An empty MemoryStore; its leases expire only when the test calls ``advance``. Each
    call takes a millisecond, about what a local etcd takes, so that concurrent writers
    interleave their decisions and commits as they would on etcd."""
    store = MemoryStore(round_trip=0.001)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def api(memstore: MemoryStore) -> AsyncIterator[Api]:
    async with serve_control_api(memstore) as served:
        yield served
