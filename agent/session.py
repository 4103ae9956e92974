"""The agent's session with a manager: register, receive assignments, send status.

One bidirectional Dispatcher.Session stream at a time. On every new session the agent
registers, gets the node's full assignment set, and re-sends the latest status of every
task it holds (the manager may have missed reports while the agent was away). Status
reports are batched (everything reported within ``status_batch`` seconds goes in one
message). When the stream breaks the agent tries the next manager address, backing off
exponentially; its containers keep running all the while.

A graceful stop (SIGTERM) calls :meth:`Session.leave`: the last message on the stream is
Leaving, asking the manager to keep the node's liveness for a restart grace instead of the
short TTL, so an agent restart (an upgrade) does not count as a lost node. The manager
ends the stream once the grace is in place; the agent waits for that at most
``leave_timeout``, and not at all when it has no session (no manager to tell).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc
from google.protobuf.duration_pb2 import Duration

from orch.identity import channels
from orch.identity.channels import ClientTLS
from orch.proto import dispatcher_pb2, dispatcher_pb2_grpc, objects_pb2

log = logging.getLogger(__name__)


@dataclass
class SessionSettings:
    managers: list[str]
    """Manager addresses (host:port); tried in turn."""
    status_batch: float = 0.02
    """Seconds reports are gathered before they are sent as one batch."""
    backoff_initial: float = 0.1
    """First reconnect delay (seconds); doubles per failure."""
    backoff_max: float = 1.0
    """Longest reconnect delay (seconds). Below a newly elected leader's grace (one
    liveness TTL, 2 s by default): after an outage of every manager, an agent must be
    back within that grace, or its node is declared down although it only waited (3 s
    was a possible flake of test_manager_failover)."""
    heartbeat_default: float = 1.0
    """Heartbeat period until the manager says otherwise."""
    restart_grace: float = 0.0
    """Seconds a graceful stop asks the manager to keep the node for the agent's return
    (the manager caps it); 0: the manager's default."""
    leave_timeout: float = 1.0
    """Seconds a graceful stop waits for the manager to acknowledge Leaving; the agent
    must still exit promptly on SIGTERM."""
    start_timeout: float = 5.0
    """Seconds the manager has to answer Register with SessionStarted; a manager that
    accepted the connection but does not answer (its host hung) is left for the next."""


AssignmentHandler = Callable[[dispatcher_pb2.Assignments], Awaitable[None]]
LogHandler = Callable[[dispatcher_pb2.LogSubscription, dispatcher_pb2_grpc.DispatcherStub], None]
ExecHandler = Callable[[dispatcher_pb2.ExecCommand, dispatcher_pb2_grpc.DispatcherStub], None]


class Session:
    def __init__(
        self,
        *,
        node_id: str,
        description: objects_pb2.NodeDescription,
        settings: SessionSettings,
        on_assignments: AssignmentHandler,
        on_log_subscription: LogHandler,
        tls: Callable[[], ClientTLS],
        on_exec: ExecHandler | None = None,
    ) -> None:
        """``tls``: the client TLS of the node's current certificate, asked at every
        connection (a renewed certificate is used from the next one on)."""
        self._node_id = node_id
        self._tls = tls
        self._description = description
        self._settings = settings
        self._on_assignments = on_assignments
        self._on_logs = on_log_subscription
        self._on_exec = on_exec
        self._latest: dict[str, dispatcher_pb2.TaskStatusUpdate] = {}
        self._unsent: dict[str, dispatcher_pb2.TaskStatusUpdate] = {}
        self._wake = asyncio.Event()
        self.connected = asyncio.Event()
        self.manager: str | None = None
        self._leaving = asyncio.Event()
        self._leave_sent = False
        self._acknowledged = False
        self._stopped = asyncio.Event()

    def report(self, update: dispatcher_pb2.TaskStatusUpdate) -> None:
        self._latest[update.task_id] = update
        self._unsent[update.task_id] = update
        self._wake.set()

    def forget(self, task_id: str) -> None:
        self._latest.pop(task_id, None)
        self._unsent.pop(task_id, None)

    async def leave(self) -> bool:
        """Send Leaving on the live session and wait (at most ``leave_timeout``) for the
        manager to end it. Returns whether the manager acknowledged, i.e. keeps the node
        for the restart grace; False at once without a live session. Afterwards run()
        starts no new session; the caller cancels it. Safe to call twice."""
        self._leaving.set()
        self._wake.set()
        if not self.connected.is_set():
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._settings.leave_timeout):
                await self._stopped.wait()
        return self._acknowledged

    async def run(self) -> None:
        """Hold a session with some manager until cancelled. After leave() no new session
        is started: run() waits to be cancelled (the agent's ordered shutdown)."""
        delay = self._settings.backoff_initial
        for address in itertools.cycle(self._settings.managers):
            try:
                await self._session(address)
                delay = self._settings.backoff_initial
            except grpc.aio.AioRpcError as exc:
                log.warning("session with %s: %s", address, exc.details() or exc.code().name)
            except TimeoutError:
                log.warning(
                    "session with %s: no SessionStarted within %gs",
                    address,
                    self._settings.start_timeout,
                )
            finally:
                self.connected.clear()
                self.manager = None
            if self._leaving.is_set():
                self._stopped.set()
                await asyncio.Future()  # parked until the agent cancels it
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._settings.backoff_max)

    async def _session(self, address: str) -> None:
        async with channels.aio_channel(address, self._tls()) as channel:
            stub = dispatcher_pb2_grpc.DispatcherStub(channel)
            heartbeat = [self._settings.heartbeat_default]
            call = stub.Session(self._outgoing(heartbeat))
            async for msg in self._messages(call):
                kind = msg.WhichOneof("msg")
                if kind == "started":
                    hb = msg.started.heartbeat_period
                    heartbeat[0] = hb.seconds + hb.nanos / 1e9 or heartbeat[0]
                    self.manager = address
                    log.info("session with %s (manager %s)", address, msg.started.manager_id)
                elif kind == "assignments":
                    await self._on_assignments(msg.assignments)
                    if msg.assignments.full:
                        # The manager knows the set now; tell it how each task is doing.
                        self._unsent.update(self._latest)
                        self._wake.set()
                        self.connected.set()
                elif kind == "log_subscription":
                    self._on_logs(msg.log_subscription, stub)
                elif kind == "exec" and self._on_exec is not None:
                    self._on_exec(msg.exec, stub)
            # The manager ended the stream cleanly: after our Leaving, that means it
            # has put the restart grace in place.
            self._acknowledged = self._leave_sent

    async def _messages(
        self, call: grpc.aio.StreamStreamCall
    ) -> AsyncIterator[dispatcher_pb2.ManagerMessage]:
        """The call's messages; the first within ``start_timeout`` (else TimeoutError and
        the call is cancelled), the rest as they come (keepalive bounds a silent peer)."""
        messages = aiter(call)
        try:
            async with asyncio.timeout(self._settings.start_timeout):
                first = await anext(messages)
        except TimeoutError:
            call.cancel()
            raise
        except StopAsyncIteration:
            return
        yield first
        async for msg in messages:
            yield msg

    async def _outgoing(self, heartbeat: list[float]) -> AsyncIterator[dispatcher_pb2.AgentMessage]:
        yield dispatcher_pb2.AgentMessage(
            register=dispatcher_pb2.Register(node_id=self._node_id, description=self._description)
        )
        while not self._leaving.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), heartbeat[0])
            if not self._wake.is_set():
                yield dispatcher_pb2.AgentMessage(heartbeat=dispatcher_pb2.Heartbeat())
                continue
            await asyncio.sleep(self._settings.status_batch)
            self._wake.clear()
            batch, self._unsent = list(self._unsent.values()), {}
            if batch:
                yield dispatcher_pb2.AgentMessage(status=dispatcher_pb2.StatusBatch(updates=batch))
        # Last news first (sent by the loop above), then Leaving; ending the iterator
        # closes our side of the stream.
        grace = Duration()
        grace.FromNanoseconds(int(self._settings.restart_grace * 1e9))
        self._leave_sent = True
        yield dispatcher_pb2.AgentMessage(leaving=dispatcher_pb2.Leaving(restart_grace=grace))
