"""Fixtures of the manager's tests: a MemoryStore (``memstore``) for the manager's logic,
and the real Control API over gRPC on it. Tests about etcd itself use ``store`` (the
session's etcd, tests/conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from orch.manager.controlapi.server import ControlAPI
from orch.manager.state.api import Store
from orch.manager.state.memstore import MemoryStore
from orch.manager.state.view import ClusterView
from orch.manager.streams.logbroker import LogBroker
from orch.proto import control_pb2_grpc


@dataclass
class Api:
    stub: control_pb2_grpc.ControlStub
    store: Store
    view: ClusterView


@contextlib.asynccontextmanager
async def serve_control_api(store: Store, watched: Store | None = None) -> AsyncIterator[Api]:
    """A ControlAPI with its own ClusterView (fed by ``watched``, default ``store``), served
    on a loopback port: one manager's Control API."""
    view = ClusterView(watched or store)
    feed = asyncio.create_task(view.run())
    await view.ready()
    server = grpc.aio.server()
    control_pb2_grpc.add_ControlServicer_to_server(
        ControlAPI(store=store, view=view, logs=LogBroker()), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Api(control_pb2_grpc.ControlStub(channel), store, view)
    finally:
        await channel.close()
        await server.stop(0)
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
