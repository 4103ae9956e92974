"""A Dispatcher served as a manager serves it (mTLS, the authorization interceptor, the
store's deny list) on a MemoryStore, and agents played by gRPC clients, each with the
certificate of its node."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc

from orch.identity.ca import Role
from orch.manager.authz import StoreDenyList
from orch.manager.dispatcher.server import Dispatcher
from orch.manager.dispatcher.settings import DispatcherSettings
from orch.manager.state.api import Store
from orch.manager.state.view import ClusterView
from orch.manager.streams.execbroker import ExecBroker
from orch.manager.streams.logbroker import LogBroker
from orch.proto import dispatcher_pb2, dispatcher_pb2_grpc

from .mtls import Cert, ClusterCA, serve


@dataclass
class Env:
    store: Store
    view: ClusterView
    ca: ClusterCA
    address: str
    dispatcher: Dispatcher
    logs: LogBroker
    execs: ExecBroker

    def channel(self, cert: Cert | None) -> grpc.aio.Channel:
        return self.ca.channel(self.address, cert)


@contextlib.asynccontextmanager
async def dispatcher_env(
    store: Store, settings: DispatcherSettings | None = None
) -> AsyncIterator[Env]:
    ca = ClusterCA()
    view = ClusterView(store)
    feed = asyncio.create_task(view.run())
    await view.ready()
    logs, execs = LogBroker(), ExecBroker()
    dispatcher = Dispatcher(
        store=store, view=view, logs=logs, execs=execs, manager_id="m1", settings=settings
    )
    status = asyncio.create_task(dispatcher.status.run())
    try:
        async with serve(
            ca,
            lambda server: dispatcher_pb2_grpc.add_DispatcherServicer_to_server(dispatcher, server),
            deny=StoreDenyList(view),
        ) as (_, address):
            yield Env(store, view, ca, address, dispatcher, logs, execs)
    finally:
        for job in (feed, status):
            job.cancel()
        await asyncio.gather(feed, status, return_exceptions=True)


class Agent:
    """One session, as an agent holds it, with the certificate of node ``node_id`` (the
    Register may claim another id: ``claim``)."""

    def __init__(
        self, env: Env, node_id: str, addr: str, *, claim: str | None = None, role=Role.WORKER
    ) -> None:
        self.cert = env.ca.issue(role, node_id)
        self.channel = env.channel(self.cert)
        self.stub = dispatcher_pb2_grpc.DispatcherStub(self.channel)
        self.call = self.stub.Session()
        self.node_id, self.addr = node_id, addr
        self.claim = node_id if claim is None else claim

    async def start(self) -> dispatcher_pb2.Assignments:
        await self.register()
        started = await self.call.read()
        assert started.WhichOneof("msg") == "started"
        return await self.next()

    async def register(self) -> None:
        reg = dispatcher_pb2.Register(node_id=self.claim)
        reg.description.addr = self.addr
        reg.description.hostname = self.node_id
        await self.call.write(dispatcher_pb2.AgentMessage(register=reg))

    async def send(self, msg: dispatcher_pb2.AgentMessage) -> None:
        await self.call.write(msg)

    async def next(self, timeout: float = 5) -> dispatcher_pb2.Assignments:
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.call.read()
                if msg == grpc.aio.EOF:
                    raise AssertionError("the session ended")
                if msg.WhichOneof("msg") == "assignments":
                    return msg.assignments

    async def read(self, timeout: float = 5) -> dispatcher_pb2.ManagerMessage:
        async with asyncio.timeout(timeout):
            return await self.call.read()

    async def until(
        self, pred: Callable[[dispatcher_pb2.Assignments], object], timeout: float = 5
    ) -> dispatcher_pb2.Assignments:
        """The first assignments message ``pred`` accepts."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.next(timeout)
                if pred(msg):
                    return msg

    async def close(self) -> None:
        self.call.cancel()
        await self.channel.close()
