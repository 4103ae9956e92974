"""Logs and exec for any task, from any manager.

A node's logs and its containers are reached only through its agent's session, and that
session lives on one manager. The CLI may talk to any manager, so the Control API hands
logs and exec requests to the SessionRouter, which splits them by the manager holding each
node's session (sessionroutes.py reads that from the liveness and presence records):
nodes connected here are served by the local brokers, the rest by calling the same Control
API on the holding manager, with the task ids spelled out (LogsRequest.task_ids,
ExecRequest.task_id). A call carrying task ids is served from local sessions only and is
never forwarded again, so two managers with stale records cannot bounce a call between
them. Logs of a service whose nodes sit on different managers are merged as entries
arrive, like the broker merges nodes.

Errors keep their kind across the hop: a peer's status comes back as the same orch error
(grpcerrors.py), so it leaves here with the same status code; a peer that does not answer
becomes a TargetError naming it, never an UNAVAILABLE, which the CLI would take for this
manager being down.

One channel per forwarded call: logs and exec are rare, user-driven calls, and a fresh
channel has no lifecycle to manage when managers come and go.

The hop is mTLS like every other call: this manager authenticates with its own manager
certificate (``open_channel``, given by whoever builds the router). The call carries its
original caller (metadata ``orch-on-behalf-of``, manager/authz.py), which the holding
manager honours because the peer is a manager, and authorizes in its place: a forwarded
call is allowed exactly when the caller's own call would have been. A router without
``open_channel`` forwards nothing (there is no plaintext fallback).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from orch import grpcerrors
from orch.errors import NotFoundError, OrchError
from orch.identity.peer import NodeIdentity
from orch.manager import authz
from orch.manager.state.api import Kind
from orch.manager.state.view import ClusterView
from orch.manager.streams.execbroker import ExecBroker
from orch.manager.streams.logbroker import LogBroker
from orch.manager.streams.sessionroutes import (
    SHORT_ID,
    Routes,
    TargetError,
    is_running,
    not_running,
    plan_routes,
)
from orch.proto import control_pb2, control_pb2_grpc, objects_pb2

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class ForwardSettings:
    """Tunables of calls forwarded to the manager holding a node's session."""

    connect_timeout: float = 3.0
    """Seconds to wait for a connection to the holding manager before reporting that it
    does not answer."""
    merge_queue: int = 64
    """Log entries held between the parts of a merged stream and the reader."""


def _cannot_forward(address: str) -> grpc.aio.Channel:
    raise TargetError(f"cannot forward to the manager at {address}: no credentials to do it with")


class SessionRouter:
    def __init__(
        self,
        *,
        view: ClusterView,
        logs: LogBroker,
        execs: ExecBroker,
        manager_id: str,
        settings: ForwardSettings | None = None,
        open_channel: Callable[[str], grpc.aio.Channel] | None = None,
    ) -> None:
        """``open_channel``: an mTLS channel to another manager, as this manager (None:
        this router cannot forward, e.g. a Control API in a test)."""
        self._open_channel = open_channel or _cannot_forward
        self._view = view
        self._logs = logs
        self._execs = execs
        self._manager_id = manager_id
        self._settings = settings or ForwardSettings()

    def routes(self, tasks: Sequence[objects_pb2.Task], connected: Callable[[str], bool]) -> Routes:
        """``tasks`` split by the manager holding their nodes' sessions, as the view has it."""
        return plan_routes(
            tasks,
            self_id=self._manager_id,
            local_nodes={t.node_id for t in tasks if connected(t.node_id)},
            holders={n.id: n.status.manager for n in self._view.objects(Kind.LIVENESS)},
            managers={m.id: m.addr for m in self._view.objects(Kind.MANAGER)},
            hostnames=self._hostnames(),
        )

    # Logs.

    async def logs(
        self,
        tasks: Sequence[objects_pb2.Task],
        *,
        follow: bool,
        tail: int,
        caller: NodeIdentity | None = None,
    ) -> AsyncIterator[control_pb2.LogEntry]:
        """The entries of ``tasks`` from wherever their nodes are connected. Nodes that no
        manager reaches are left out; when that is all of them, TargetError says why."""
        routes = self.routes(tasks, self._logs.connected)
        if routes.unreachable:
            reasons = [f"{why}; its logs stay on the node" for why in routes.unreachable.values()]
            if not routes.local and not routes.remote:
                raise TargetError("\n".join(reasons))
            log.info("logs: serving without %s", ", ".join(reasons))
        parts: list[AsyncIterator[control_pb2.LogEntry]] = []
        if routes.local:
            local = [t for ts in routes.local.values() for t in ts]
            parts.append(self._logs.stream(local, follow=follow, tail=tail))
        for address, remote in routes.remote.items():
            request = control_pb2.LogsRequest(
                task_ids=[t.id for t in remote], follow=follow, tail=tail
            )
            parts.append(self._forward(address, "Logs", request, self._nodes_of(remote), caller))
        async for entry in merge(parts, self._settings.merge_queue):
            yield entry

    async def forwarded_logs(
        self, request: control_pb2.LogsRequest
    ) -> AsyncIterator[control_pb2.LogEntry]:
        """A Logs call another manager forwarded: these task ids, local sessions only."""
        tasks = [v.obj for i in request.task_ids if (v := self._view.get(Kind.TASK, i))]
        if not tasks:
            raise NotFoundError(f"no such task: {', '.join(request.task_ids)}")
        # Like logs(): nodes whose session ended meanwhile are left out, unless that is all.
        here = [t for t in tasks if self._logs.connected(t.node_id)] or tasks
        self._check_connected(here, self._logs.connected)
        async for entry in self._logs.stream(here, follow=request.follow, tail=request.tail):
            yield entry

    # Exec.

    async def exec(
        self,
        task: objects_pb2.Task,
        argv: Sequence[str],
        env: Sequence[str],
        caller: NodeIdentity | None = None,
    ) -> AsyncIterator[control_pb2.ExecOutput]:
        """Run ``argv`` in ``task``'s container, here or through the manager holding its
        node's session."""
        if self._execs.connected(task.node_id):
            async for out in self._execs.run(task, argv, env):
                yield out
            return
        routes = self.routes([task], self._execs.connected)
        if routes.unreachable:
            raise TargetError(next(iter(routes.unreachable.values())))
        address = next(iter(routes.remote))
        request = control_pb2.ExecRequest(task_id=task.id, argv=argv, env=env)
        forwarded = self._forward(address, "Exec", request, self._nodes_of([task]), caller)
        async for out in forwarded:
            yield out

    async def forwarded_exec(
        self, request: control_pb2.ExecRequest
    ) -> AsyncIterator[control_pb2.ExecOutput]:
        """An Exec call another manager forwarded: this task id, local sessions only."""
        current = self._view.get(Kind.TASK, request.task_id)
        if current is None:
            raise NotFoundError(f"no such task: {request.task_id}")
        if not is_running(current.obj):
            raise not_running(current.obj)
        self._check_connected([current.obj], self._execs.connected)
        async for out in self._execs.run(current.obj, request.argv, request.env):
            yield out

    def _check_connected(
        self, tasks: Sequence[objects_pb2.Task], connected: Callable[[str], bool]
    ) -> None:
        """For a forwarded call: the sessions must be here (the caller's records may
        trail a session that just ended or moved)."""
        gone = [t for t in tasks if not connected(t.node_id)]
        if gone:
            raise TargetError(
                f"{self._nodes_of(gone)} just lost its session with manager "
                f"{self._manager_id or 'here'}; retry shortly"
            )

    # The hop to another manager.

    async def _forward(
        self,
        address: str,
        method: str,
        request: Any,
        nodes: str,
        caller: NodeIdentity | None,
    ) -> AsyncIterator:
        """Stream ``method`` from the manager at ``address`` (which holds the sessions of
        ``nodes``) for ``caller`` (None: this manager itself); its errors come back as
        orch errors of the same kind."""
        metadata = authz.on_behalf_of(caller) if caller is not None else ()
        async with self._open_channel(address) as channel:
            try:
                await asyncio.wait_for(channel.channel_ready(), self._settings.connect_timeout)
            except TimeoutError as exc:
                raise TargetError(
                    f"the manager at {address}, which holds the session of {nodes}, did not "
                    f"answer within {self._settings.connect_timeout:g}s"
                ) from exc
            call = getattr(control_pb2_grpc.ControlStub(channel), method)(
                request, metadata=metadata
            )
            try:
                async for item in call:
                    yield item
            except grpc.aio.AioRpcError as exc:
                raise peer_error(exc, address=address, nodes=nodes) from exc
            finally:
                call.cancel()

    def _hostnames(self) -> dict[str, str]:
        return {n.id: n.description.hostname for n in self._view.objects(Kind.NODE)}

    def _nodes_of(self, tasks: Sequence[objects_pb2.Task]) -> str:
        names = self._hostnames()
        found = sorted({names.get(t.node_id) or t.node_id[:SHORT_ID] for t in tasks})
        return ("node " if len(found) == 1 else "nodes ") + ", ".join(found)


def peer_error(exc: grpc.aio.AioRpcError, *, address: str, nodes: str) -> OrchError:
    """The orch error for a forwarded call's failure: the peer's own errors keep their
    kind (and so their status code here); a peer that does not answer is a TargetError."""
    known = grpcerrors.error_of(exc)
    if known is not None:
        return known
    code, details = exc.code(), exc.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE:
        return TargetError(
            f"the manager at {address}, which holds the session of {nodes}, is unavailable "
            f"({details.strip() or 'no answer'})"
        )
    return OrchError(f"the manager at {address} ({nodes}): {details or code.name.lower()}")


async def merge(parts: Sequence[AsyncIterator[T]], size: int = 64) -> AsyncIterator[T]:
    """The items of all ``parts`` as they arrive. The first part to fail ends the merge
    with its error; ending the merge early closes every part."""
    if len(parts) == 1:
        async for item in parts[0]:
            yield item
        return
    queue: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue(size)

    async def pump(part: AsyncIterator[T]) -> None:
        try:
            async for item in part:
                await queue.put((False, item))
        except Exception as exc:
            await queue.put((True, exc))
        else:
            await queue.put((True, None))

    pumps = [asyncio.create_task(pump(p), name="merge-part") for p in parts]
    open_parts = len(pumps)
    try:
        while open_parts:
            ended, value = await queue.get()
            if not ended:
                yield value
            elif value is not None:
                raise value
            else:
                open_parts -= 1
    finally:
        for p in pumps:
            p.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
