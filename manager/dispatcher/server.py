"""The Dispatcher API: one long-lived session per agent, on every manager.

A session starts with the agent's Register: the node object is created or refreshed
(READY). The manager then sends the node's full assignment set, then only changes, driven
by the ClusterView (no polling): what to send is assignments.py's business. The agent
streams status back; the StatusWriter (status.py) batches those into etcd. This module is
the session itself: register, liveness, the streams' plumbing.

Who the node is comes only from its verified certificate (``authz.caller``, set by the
interceptor of manager/authz.py): a Register naming another node id is refused, the
session, its assignments, its status reports, its logs and exec output are all that
node's. Removing the node (`orch node rm` puts it on the deny list) closes its open
session at once with PERMISSION_DENIED; the interceptor refuses every later call.

Liveness: on Register the dispatcher grants an etcd lease of ``liveness_ttl`` seconds and
puts ``/orch/v1/liveness/<node>`` with it; every message of the agent (a heartbeat, or a
status batch, which proves as much) refreshes the lease. Nothing refreshes it otherwise,
and nothing revokes it: when the agent dies, its link is cut or its manager dies, the key
simply expires, the same way in all three cases, and every manager (a new leader too)
sees the same truth in etcd. If a refresh finds the lease already gone while the stream
still lives (a long stall), the session is ended so the agent registers afresh.

When the stream ends the node is marked DISCONNECTED; deciding it is DOWN (and orphaning
its tasks) is the node monitor's job (manager/nodes/), once the liveness key is gone.

A graceful agent restart (SIGTERM during an upgrade) is not a lost node: the agent's last
message is Leaving, and the dispatcher moves the liveness key onto a lease of
``restart_grace`` seconds (a guarded write: only while the key is still this session's),
then ends the session; the node is DISCONNECTED with the message "agent restarting". The
node monitor sees the key and waits. The agent's next Register puts the key back on a
short lease; if it does not come, the grace lease expires and the node goes DOWN as after
any other loss. A crash sends nothing, so it is still seen within ``liveness_ttl``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import empty_pb2
from google.protobuf.duration_pb2 import Duration

from orch import grpcerrors, model
from orch.errors import ConflictError, OrchError, StoreError
from orch.manager import authz
from orch.manager.dispatcher.assignments import AssignmentFeed
from orch.manager.dispatcher.settings import DispatcherSettings, restart_grace
from orch.manager.dispatcher.status import StatusWriter
from orch.manager.state.api import Create, Kind, Store, Update
from orch.manager.state.view import ClusterView
from orch.manager.streams.execbroker import ExecBroker
from orch.manager.streams.logbroker import LogBroker
from orch.proto import dispatcher_pb2, dispatcher_pb2_grpc, objects_pb2, types_pb2

log = logging.getLogger(__name__)


@dataclass
class _Liveness:
    """One session's liveness record: its lease, the revision the session wrote it at
    (what a guarded move compares), and the node's status message for the session's end."""

    lease: int
    revision: int
    ending: str = ""


class Dispatcher(dispatcher_pb2_grpc.DispatcherServicer):
    def __init__(
        self,
        *,
        store: Store,
        view: ClusterView,
        logs: LogBroker,
        manager_id: str,
        settings: DispatcherSettings | None = None,
        execs: ExecBroker | None = None,
    ) -> None:
        self._store = store
        self._view = view
        self._logs = logs
        self._execs = execs or ExecBroker()
        self._manager_id = manager_id
        self._settings = settings or DispatcherSettings()
        self._sessions: dict[str, str] = {}  # node id -> live session id
        self.status = StatusWriter(store, view, self._settings)

    async def Session(
        self, request_iterator: AsyncIterator[dispatcher_pb2.AgentMessage], context: Any
    ) -> AsyncIterator[dispatcher_pb2.ManagerMessage]:
        try:
            node_id = authz.caller(context).node_id  # the certificate's; nothing else
        except OrchError as exc:
            await grpcerrors.abort(context, exc)
        requests = request_iterator.__aiter__()
        first = await anext(requests, None)
        if first is None or first.WhichOneof("msg") != "register":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a session starts with Register")
            return
        claimed = first.register.node_id
        if claimed and claimed != node_id:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"the certificate of node {node_id} may not open a session as node {claimed}",
            )
            return
        # Subscribed before the first look, so a removal in between is not missed.
        denials = self._view.subscribe(Kind.DENIED)
        try:
            if self._view.get(Kind.DENIED, node_id) is not None:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, _removed(node_id))
            session = self._session(node_id, first.register, requests, denials, context)
            async with contextlib.aclosing(session) as messages:  # its cleanup runs now
                async for msg in messages:
                    yield msg
        finally:
            self._view.unsubscribe(denials)

    async def _session(
        self,
        node_id: str,
        register: dispatcher_pb2.Register,
        requests: AsyncIterator[dispatcher_pb2.AgentMessage],
        denials: asyncio.Queue,
        context: Any,
    ) -> AsyncIterator[dispatcher_pb2.ManagerMessage]:
        session_id = model.new_id()
        live = await self._register(node_id, register, session_id)
        self._sessions[node_id] = session_id
        outbox: asyncio.Queue[dispatcher_pb2.ManagerMessage] = asyncio.Queue()
        self._logs.attach(node_id, outbox.put_nowait)
        self._execs.attach(node_id, outbox.put_nowait)
        changes = self._view.subscribe(Kind.TASK, Kind.NODE, Kind.NETWORK)
        beat = asyncio.Event()
        reader = asyncio.create_task(
            self._read(requests, node_id, beat, live), name=f"session-read-{node_id}"
        )
        feeder = asyncio.create_task(
            self._feed(node_id, changes, outbox), name=f"session-feed-{node_id}"
        )
        keeper = asyncio.create_task(
            self._keep_alive(node_id, live.lease, beat), name=f"session-lease-{node_id}"
        )
        denied = asyncio.create_task(
            self._until_denied(node_id, denials), name=f"session-deny-{node_id}"
        )
        log.info("node %s: session %s started", node_id, session_id)
        try:
            yield dispatcher_pb2.ManagerMessage(
                started=dispatcher_pb2.SessionStarted(
                    node_id=node_id,
                    session_id=session_id,
                    manager_id=self._manager_id,
                    heartbeat_period=_duration(self._settings.heartbeat_period),
                )
            )
            while True:
                get = asyncio.create_task(outbox.get())
                done, _ = await asyncio.wait(
                    {get, reader, feeder, keeper, denied}, return_when="FIRST_COMPLETED"
                )
                if get not in done:
                    get.cancel()
                    if denied in done:  # removed: closed at once, and told why
                        log.warning("node %s: removed; closing its session", node_id)
                        await context.abort(grpc.StatusCode.PERMISSION_DENIED, _removed(node_id))
                    for task in done:
                        task.result()  # surface a failure; a clean end just ends
                    return
                yield get.result()
        finally:
            for task in (reader, feeder, keeper, denied):
                task.cancel()
            self._view.unsubscribe(changes)
            self._logs.detach(node_id, outbox.put_nowait)
            self._execs.detach(node_id, outbox.put_nowait)
            if self._sessions.get(node_id) == session_id:
                del self._sessions[node_id]
                with contextlib.suppress(Exception):
                    await asyncio.shield(
                        self._set_node_state(node_id, types_pb2.NODE_DISCONNECTED, live.ending)
                    )
            log.info("node %s: session %s ended", node_id, session_id)

    async def PublishLogs(self, request_iterator: AsyncIterator, context: Any) -> Any:
        # Only the entries the subscription asked of this very node (logbroker.py).
        try:
            node_id = authz.caller(context).node_id
            async for msg in request_iterator:
                if not self._logs.publish(msg, node_id):
                    break
        except OrchError as exc:
            await grpcerrors.abort(context, exc)
        return empty_pb2.Empty()

    async def PublishExec(self, request_iterator: AsyncIterator, context: Any) -> Any:
        # Returns (ending the agent's call, which kills the command) once the exec's
        # caller is gone or the command's end was delivered (execbroker.py). Only output
        # of an exec sent to this very node is taken.
        try:
            await self._execs.receive(request_iterator, authz.caller(context).node_id)
        except OrchError as exc:
            await grpcerrors.abort(context, exc)
        return empty_pb2.Empty()

    async def _until_denied(self, node_id: str, denials: asyncio.Queue) -> None:
        """Returns once ``node_id`` is on the deny list (`orch node rm`)."""
        while self._view.get(Kind.DENIED, node_id) is None:
            await denials.get()

    async def _read(
        self, requests: AsyncIterator, node_id: str, beat: asyncio.Event, live: _Liveness
    ) -> None:
        async for msg in requests:
            beat.set()  # any message shows the agent is alive, not only a heartbeat
            kind = msg.WhichOneof("msg")
            if kind == "status":
                self.status.add(node_id, msg.status.updates)
            elif kind == "leaving":
                # Shielded: the agent may hang up right after sending it. Returning ends
                # the session, which is the agent's acknowledgement.
                requested = msg.leaving.restart_grace.ToTimedelta().total_seconds()
                live.ending = await asyncio.shield(self._leave(node_id, live, requested))
                return

    async def _leave(self, node_id: str, live: _Liveness, requested: float) -> str:
        """Move the node's liveness record onto a lease of the restart grace, guarded on
        the record still being this session's (a newer session, or an expiry, wins).
        Returns the node's status message for the session's end ("" if nothing moved)."""
        grace = restart_grace(self._settings, requested)
        if not grace:
            return ""
        message = f"agent restarting (grace {grace}s)"
        record = objects_pb2.Node(
            id=node_id,
            # No manager holds a session: logs and exec say the node is not connected.
            status=objects_pb2.NodeState(
                state=types_pb2.NODE_DISCONNECTED, message=message, timestamp=model.timestamp()
            ),
        )
        try:
            lease = await self._store.grant_lease(grace)
            await self._store.commit([Update(Kind.LIVENESS, record, live.revision, lease=lease)])
        except (ConflictError, StoreError) as exc:
            log.warning("node %s: restart grace not given: %s", node_id, exc)
            return ""
        log.info("node %s: agent restarting; liveness kept for %ds", node_id, grace)
        return message

    async def _keep_alive(self, node_id: str, lease: int, beat: asyncio.Event) -> None:
        """Refresh the liveness lease once per agent message (at most one refresh in
        flight). Returns, ending the session, when the lease turns out to have expired."""
        while True:
            await beat.wait()
            beat.clear()
            try:
                ttl = await self._store.keep_alive(lease)
            except StoreError as exc:
                log.warning("node %s: liveness refresh failed: %s", node_id, exc)
                continue
            if ttl <= 0:
                log.warning("node %s: liveness lease expired; ending its session", node_id)
                return

    async def _feed(
        self,
        node_id: str,
        changes: asyncio.Queue,
        outbox: asyncio.Queue[dispatcher_pb2.ManagerMessage],
    ) -> None:
        """Full set first, then changes; a None batch (the view resynced) sends the full
        set again."""
        feed = AssignmentFeed(node_id)
        outbox.put_nowait(feed.full(self._view))
        while True:
            batch = await changes.get()
            msg = feed.full(self._view) if batch is None else feed.changes(batch, self._view)
            if msg is not None:
                outbox.put_nowait(msg)

    async def _register(
        self, node_id: str, reg: dispatcher_pb2.Register, session_id: str
    ) -> _Liveness:
        """Grant the session's liveness lease and put the liveness key (replacing a record
        on a restart grace lease), then mark the node READY (in that order: the node
        monitor never sees READY without the key of the new session). Returns the
        session's liveness record."""
        lease = await self._store.grant_lease(self._settings.liveness_ttl)
        liveness = objects_pb2.Node(id=node_id, status=self._node_state(types_pb2.NODE_READY))
        liveness.status.message = f"session {session_id}"
        revision = await self._store.put_leased(Kind.LIVENESS, liveness, lease)
        for _ in range(self._settings.write_retries):
            current = await self._store.get(Kind.NODE, node_id)
            node = objects_pb2.Node(id=node_id)
            if current:
                node.CopyFrom(current.obj)
            else:
                now = model.timestamp()
                node.meta.CopyFrom(objects_pb2.Meta(version=1, created_at=now, updated_at=now))
                node.spec.availability = types_pb2.ACTIVE
            node.description.CopyFrom(reg.description)
            node.status.CopyFrom(self._node_state(types_pb2.NODE_READY))
            op = (
                Update(Kind.NODE, node, current.mod_revision)
                if current
                else Create(Kind.NODE, node)
            )
            try:
                await self._view.wait_for(await self._store.commit([op]))
                return _Liveness(lease, revision)
            except ConflictError:
                continue
        raise StoreError(f"could not register node {node_id}: too many conflicting writes")

    async def _set_node_state(self, node_id: str, state: int, message: str = "") -> None:
        for _ in range(self._settings.write_retries):
            current = await self._store.get(Kind.NODE, node_id)
            status = current.obj.status if current else None
            if status is None or (
                state == types_pb2.NODE_DISCONNECTED
                and (status.state != types_pb2.NODE_READY or status.manager != self._manager_id)
            ):
                # A session that ends late must not hide that the node is DOWN, nor the
                # newer session another manager holds.
                return
            node = objects_pb2.Node()
            node.CopyFrom(current.obj)
            node.status.CopyFrom(self._node_state(state))
            node.status.message = message
            try:
                await self._store.commit([Update(Kind.NODE, node, current.mod_revision)])
                return
            except ConflictError:
                continue

    def _node_state(self, state: int) -> objects_pb2.NodeState:
        return objects_pb2.NodeState(
            state=state, timestamp=model.timestamp(), manager=self._manager_id
        )


def _removed(node_id: str) -> str:
    return (
        f"node {node_id} was removed from the cluster: its session is closed and its "
        "certificate refused; join again with a token to come back as a new node"
    )


def _duration(seconds: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d
