"""The Dispatcher API: one long-lived session per agent, on every manager.

A session starts with the agent's Register: the node object is created or refreshed
(READY). The manager then sends the node's full assignment set, then only changes, driven
by the ClusterView (no polling): a task is (re)sent when it is new to the node or its
desired state changed, and dropped when it is deleted or moved; an overlay network's
complete peer set is (re)sent when it changes, recomputed only for the networks a batch
of events touched (netpeers.py); the DNS records of every network a task of the node
is on follow the same way (dnsrecords.py). The agent streams status
back; the StatusWriter batches those into etcd at most every ``status_flush`` seconds, each
task a guarded update of the status fields only (the agent is their single writer).

Liveness: on Register the dispatcher grants an etcd lease of ``liveness_ttl`` seconds and
puts ``/orch/v1/liveness/<node>`` with it; every message of the agent (a heartbeat, or a
status batch, which proves as much) refreshes the lease. Nothing refreshes it otherwise,
and nothing revokes it: when the agent dies, its link is cut or its manager dies, the key
simply expires, the same way in all three cases, and every manager (a new leader too)
sees the same truth in etcd. If a refresh finds the lease already gone while the stream
still lives (a long stall), the session is ended so the agent registers afresh.

When the stream ends the node is marked DISCONNECTED; deciding it is DOWN (and orphaning
its tasks) is the node monitor's job (nodemonitor.py), once the liveness key is gone.

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
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import empty_pb2
from google.protobuf.duration_pb2 import Duration

from orch import model
from orch.errors import ConflictError, StoreError
from orch.manager.dispatcher import dnsrecords, netpeers
from orch.manager.state.store import Create, Event, Kind, Store, Update
from orch.manager.state.view import ClusterView
from orch.manager.streams.execbroker import ExecBroker
from orch.manager.streams.logbroker import LogBroker
from orch.proto import dispatcher_pb2, dispatcher_pb2_grpc, objects_pb2, types_pb2

log = logging.getLogger(__name__)


@dataclass
class DispatcherSettings:
    heartbeat_period: float = 0.5
    """Seconds between agent heartbeats (sent to the agent in SessionStarted)."""
    liveness_ttl: int = 2
    """Seconds a node's liveness lease lives after the agent's last message: the bulk of
    the time to detect a dead node. Whole seconds (etcd leases), at least 2 (etcd's
    minimum TTL is 1.5 s with its default timings, rounded up); four heartbeats fit in."""
    restart_grace: int = 30
    """Seconds a node keeps its liveness after its agent said it is restarting (Leaving):
    how long a graceful agent restart may take before the node counts as lost. Also the
    most an agent may ask for. 0: no grace (a graceful stop counts like a crash)."""
    status_flush: float = 0.1
    """Seconds status updates are gathered before one write to etcd (swarmkit: 100 ms)."""
    write_retries: int = 5
    """Attempts at a guarded node or status write that keeps losing races."""


RESTART_GRACE_MAX = 600
"""Upper bound of ``restart_grace`` (seconds): a node stopped for good stays hidden that long."""


def restart_grace(settings: DispatcherSettings, requested: float) -> int:
    """The grace (whole seconds) a Leaving agent gets: what it asked for (0: the manager's
    ``restart_grace``), at most ``restart_grace``, at least one liveness TTL; 0 when the
    manager gives none."""
    if settings.restart_grace <= 0:
        return 0
    wanted = min(settings.restart_grace, math.ceil(requested)) if requested > 0 else 0
    return max(settings.liveness_ttl, wanted or settings.restart_grace)


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
        requests = request_iterator.__aiter__()
        first = await anext(requests, None)
        if first is None or first.WhichOneof("msg") != "register" or not first.register.node_id:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "a session starts with Register(node_id)"
            )
            return
        node_id = first.register.node_id
        session_id = model.new_id()
        live = await self._register(first.register, session_id)
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
                    {get, reader, feeder, keeper}, return_when="FIRST_COMPLETED"
                )
                if get not in done:
                    get.cancel()
                    for task in done:
                        task.result()  # surface a failure; a clean end just ends
                    return
                yield get.result()
        finally:
            for task in (reader, feeder, keeper):
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
        async for msg in request_iterator:
            if not self._logs.publish(msg):
                break
        return empty_pb2.Empty()

    async def PublishExec(self, request_iterator: AsyncIterator, context: Any) -> Any:
        # Returns (ending the agent's call, which kills the command) once the exec's
        # caller is gone or the command's end was delivered (execbroker.py).
        await self._execs.receive(request_iterator)
        return empty_pb2.Empty()

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
        """Full set first, then changes. ``sent`` remembers what the agent was told, so
        status echoes of the agent's own reports are not sent back; ``sent_networks``
        the peer set of each overlay network it was told about; ``dns`` the DNS records."""
        sent: dict[str, int] = {}
        sent_networks: dict[str, dispatcher_pb2.NetworkPeers] = {}
        dns = dnsrecords.DnsFeed(node_id)

        def full_set() -> dispatcher_pb2.ManagerMessage:
            tasks = list(self._view.objects(Kind.TASK))
            mine = [t for t in tasks if t.node_id == node_id]
            sent.clear()
            sent.update({t.id: t.desired_state for t in mine})
            fresh = netpeers.peers_for_node(node_id, tasks, self._nodes(), self._networks())
            sent_networks.clear()
            sent_networks.update(fresh)
            return _assignments(
                full=True,
                tasks=mine,
                networks=fresh.values(),
                dns=dns.full(tasks, self._networks()),
            )

        outbox.put_nowait(full_set())
        while True:
            batch = await changes.get()
            if batch is None:
                outbox.put_nowait(full_set())
                continue
            upserts, removed = _task_changes(node_id, batch, sent)
            networks = self._networks()
            affected = netpeers.affected_networks(batch, sent_networks, networks)
            net_changes = netpeers.NetworkChanges([], [])
            if affected:
                fresh = netpeers.peers_for_node(
                    node_id, self._view.objects(Kind.TASK), self._nodes(), networks, affected
                )
                net_changes = netpeers.diff_networks(sent_networks, fresh, affected)
            dns_changes = dns.changes(batch, self._view.objects(Kind.TASK), networks)
            if upserts or removed or net_changes.networks or net_changes.removed or dns_changes:
                outbox.put_nowait(
                    _assignments(
                        tasks=upserts.values(),
                        removed=removed,
                        networks=net_changes.networks,
                        removed_networks=net_changes.removed,
                        dns=dns_changes,
                    )
                )

    def _nodes(self) -> dict[str, objects_pb2.Node]:
        return {n.id: n for n in self._view.objects(Kind.NODE)}

    def _networks(self) -> dict[str, objects_pb2.Network]:
        return {n.spec.name: n for n in self._view.objects(Kind.NETWORK)}

    async def _register(self, reg: dispatcher_pb2.Register, session_id: str) -> _Liveness:
        """Grant the session's liveness lease and put the liveness key (replacing a record
        on a restart grace lease), then mark the node READY (in that order: the node
        monitor never sees READY without the key of the new session). Returns the
        session's liveness record."""
        lease = await self._store.grant_lease(self._settings.liveness_ttl)
        liveness = objects_pb2.Node(id=reg.node_id, status=self._node_state(types_pb2.NODE_READY))
        liveness.status.message = f"session {session_id}"
        revision = await self._store.put_leased(Kind.LIVENESS, liveness, lease)
        for _ in range(self._settings.write_retries):
            current = await self._store.get(Kind.NODE, reg.node_id)
            node = objects_pb2.Node(id=reg.node_id)
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
        raise StoreError(f"could not register node {reg.node_id}: too many conflicting writes")

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


class StatusWriter:
    """Gathers agents' status reports and writes them in batches. The latest report of a
    task wins; a report that would move a task's state backwards is dropped (an agent
    replaying old news after a reconnect)."""

    def __init__(self, store: Store, view: ClusterView, settings: DispatcherSettings) -> None:
        self._store = store
        self._view = view
        self._settings = settings
        self._pending: dict[str, tuple[str, dispatcher_pb2.TaskStatusUpdate]] = {}
        self._wakeup = asyncio.Event()

    def add(self, node_id: str, updates: Any) -> None:
        for update in updates:
            self._pending[update.task_id] = (node_id, update)
        self._wakeup.set()

    async def run(self) -> None:
        while True:
            await self._wakeup.wait()
            await asyncio.sleep(self._settings.status_flush)
            self._wakeup.clear()
            pending, self._pending = self._pending, {}
            try:
                await self._flush(pending)
            except StoreError as exc:
                log.warning("status write failed, will retry: %s", exc)
                for task_id, item in pending.items():
                    self._pending.setdefault(task_id, item)
                self._wakeup.set()

    async def _flush(self, pending: dict[str, tuple[str, dispatcher_pb2.TaskStatusUpdate]]) -> None:
        ops = []
        for task_id, (node_id, update) in pending.items():
            current = self._view.get(Kind.TASK, task_id)
            op = _status_op(current, node_id, update)
            if op:
                ops.append(op)
        try:
            await self._store.commit_chunked(ops)
        except ConflictError:
            # Someone else wrote some of these tasks meanwhile: redo them one by one
            # from fresh reads.
            for task_id, (node_id, update) in pending.items():
                await self._write_one(task_id, node_id, update)

    async def _write_one(
        self, task_id: str, node_id: str, update: dispatcher_pb2.TaskStatusUpdate
    ) -> None:
        for _ in range(self._settings.write_retries):
            op = _status_op(await self._store.get(Kind.TASK, task_id), node_id, update)
            if op is None:
                return
            try:
                await self._store.commit([op])
                return
            except ConflictError:
                continue
        log.warning("task %s: status write kept losing races; dropped", task_id)


def _task_changes(
    node_id: str, batch: list[Event], sent: dict[str, int]
) -> tuple[dict[str, objects_pb2.Task], set[str]]:
    """Tasks to (re)send and task ids to drop for one batch of view events; updates
    ``sent`` (task id -> desired state the agent was told)."""
    upserts: dict[str, objects_pb2.Task] = {}
    removed: set[str] = set()
    for ev in batch:
        if ev.kind is not Kind.TASK:
            continue
        task_id = ev.key.rsplit("/", 1)[1]
        task = ev.obj
        if task is not None and task.node_id == node_id:
            if sent.get(task_id) != task.desired_state:
                sent[task_id] = task.desired_state
                upserts[task_id] = task
                removed.discard(task_id)
        elif task_id in sent:
            del sent[task_id]
            upserts.pop(task_id, None)
            removed.add(task_id)
    return upserts, removed


def merge_attachments(
    old: Sequence[objects_pb2.NetworkAttachment],
    reported: Sequence[objects_pb2.NetworkAttachment],
) -> list[objects_pb2.NetworkAttachment]:
    """The task's attachments after an agent report. The allocator owns the attachments
    it wrote (cluster addresses on overlay networks); the agent's report adds or replaces
    only the others (the bridge address it gave)."""
    merged = list(old)
    owned = {a.network for a in old}
    for attachment in reported:
        if attachment.network in owned:
            index = next(i for i, a in enumerate(merged) if a.network == attachment.network)
            if not _allocated(merged[index]):
                merged[index] = attachment
        else:
            merged.append(attachment)
            owned.add(attachment.network)
    return merged


def _allocated(attachment: objects_pb2.NetworkAttachment) -> bool:
    # Built-in networks get no cluster address; anything else came from the allocator.
    return attachment.network not in model.BUILTIN_NETWORKS


def _status_op(current: Any, node_id: str, update: dispatcher_pb2.TaskStatusUpdate) -> Any:
    if current is None or current.obj.node_id != node_id:
        return None
    old = current.obj
    if update.status.state < old.status.state:
        return None
    attachments = merge_attachments(old.attachments, update.attachments)
    if update.status == old.status and attachments == list(old.attachments):
        return None
    task = objects_pb2.Task()
    task.CopyFrom(old)
    task.status.CopyFrom(update.status)
    del task.attachments[:]
    task.attachments.extend(attachments)
    task.meta.updated_at.CopyFrom(model.timestamp())
    return Update(Kind.TASK, task, current.mod_revision)


def _assignments(
    *,
    full: bool = False,
    tasks: Any = (),
    removed: Any = (),
    networks: Any = (),
    removed_networks: Any = (),
    dns: dnsrecords.RecordChanges | None = None,
) -> dispatcher_pb2.ManagerMessage:
    msg = dispatcher_pb2.ManagerMessage(
        assignments=dispatcher_pb2.Assignments(
            full=full,
            tasks=list(tasks),
            removed=sorted(removed),
            networks=list(networks),
            removed_networks=sorted(removed_networks),
        )
    )
    if dns is not None:
        dns.fill(msg.assignments)
    return msg


def _duration(seconds: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d
