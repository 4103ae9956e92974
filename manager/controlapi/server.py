"""The Control API: what `orch` calls. Every manager serves it, leader or not.

Reads come from the manager's ClusterView. Writes validate everything first, then go to
etcd in ONE guarded transaction, so a bad request or a lost race changes nothing; after a
write the handler waits until its own view has the new revision, so the next call from
the same client sees it. A write that loses a race is decided again over the newer view a
few times (concurrent applies creating networks race for VNIs and subnets). Network
handling lives in controlapi_networks.py, node handling in controlapi_nodes.py. Errors leave here as gRPC status codes
(grpcerrors.py) with a message meant for a person (INVALID_ARGUMENT carries one problem
per line, FAILED_PRECONDITION says who still uses what is to be removed).

When etcd fails (no quorum, no member reachable) a write fails within the Store's timeout
(5 s) with UNAVAILABLE, a one-line message that says so, and the trailing metadata
``orch-error: store-unavailable``: every manager shares that etcd, so the CLI does not try
the next manager, it reports. Reads answer from the view meanwhile (the state as of the
outage, which no one can change then); ListManagers leaves the leader blank.

Logs and Exec reach containers through the agents' sessions; forwarding.py serves them
from any manager (the call goes on to the manager holding the node's session).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import grpc

from orch import grpcerrors, model
from orch.errors import (
    ConflictError,
    NotFoundError,
    OrchError,
    PreconditionError,
    StoreError,
    ValidationError,
)
from orch.manager.allocator.ipam import IpamSettings
from orch.manager.controlapi import networks, nodes
from orch.manager.orchestrator import updater
from orch.manager.state.store import Create, Delete, Kind, Op, Store, Update, Versioned
from orch.manager.state.view import ClusterView
from orch.manager.streams.execbroker import ExecBroker
from orch.manager.streams.forwarding import SessionRouter
from orch.manager.streams.logbroker import LogBroker
from orch.manager.streams.sessionroutes import exec_task
from orch.manifests.validate import (
    port_clashes,
    port_text,
    validate_network_spec,
    validate_service_spec,
)
from orch.proto import control_pb2, control_pb2_grpc, objects_pb2, specs_pb2, types_pb2

log = logging.getLogger(__name__)


def _grpc_errors(handler: Callable) -> Callable:
    """Translate orch errors into gRPC status codes with a readable message (grpcerrors)."""

    async def wrapper(self: ControlAPI, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await handler(self, request, context)
        except OrchError as exc:
            await grpcerrors.abort(context, exc)

    wrapper.__name__ = handler.__name__
    return wrapper


def spec_changes(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Top-level-ish field paths where two spec messages differ: ["replicas",
    "container.image"]. Empty when equal."""
    if old == new:
        return []
    changed = []
    for field in new.DESCRIPTOR.fields:
        a, b = getattr(old, field.name), getattr(new, field.name)
        if a == b:
            continue
        path = prefix + field.name
        nested = field.type == field.TYPE_MESSAGE and not field.is_repeated
        if nested and path.count(".") < 1:
            changed += spec_changes(a, b, path + ".") or [path]
        else:
            changed.append(path)
    return changed


@dataclass(frozen=True)
class ControlSettings:
    """Tunables of the Control API."""

    ipam: IpamSettings = dataclasses.field(default_factory=IpamSettings)
    """Where new networks get their subnet and VNI."""
    apply_attempts: int = 8
    """Times a write (apply, scale, removal, node update) decides again after its
    transaction lost a race (another Apply created a network meanwhile, the dispatcher
    refreshed the node's status, this manager's view trailed a write made through another
    manager); each lost race means another writer made progress."""
    catch_up_timeout: float = 1.0
    """Seconds a write waits for this manager's view to reach etcd's current revision
    before it decides (see ``_catch_up``)."""


class ControlAPI(control_pb2_grpc.ControlServicer):
    def __init__(
        self,
        *,
        store: Store,
        view: ClusterView,
        logs: LogBroker,
        settings: ControlSettings | None = None,
        leader: Callable[[], Awaitable[str | None]] | None = None,
        router: SessionRouter | None = None,
    ) -> None:
        self._store = store
        self._leader = leader
        self._view = view
        self._logs = logs
        self._settings = settings or ControlSettings()
        # Logs and exec of nodes connected to another manager go through that manager.
        self._router = router or SessionRouter(
            view=view, logs=logs, execs=ExecBroker(), manager_id=""
        )

    # Writes.

    @_grpc_errors
    async def Apply(self, request: control_pb2.ApplyRequest, context: Any) -> Any:
        nets = [networks.normalize(s) for s in request.networks]
        services = [_normalize_service(s) for s in request.services]
        problems = []
        for i, spec in enumerate(nets):
            problems += [f"networks[{i}] ({spec.name}): {p}" for p in validate_network_spec(spec)]
        for i, spec in enumerate(services):
            problems += [f"services[{i}] ({spec.name}): {p}" for p in validate_service_spec(spec)]
        problems += _duplicates("network", [s.name for s in nets])
        problems += _duplicates("service", [s.name for s in services])
        for index, earlier, key in port_clashes(services):
            problems.append(
                f"services[{index}] ({services[index].name}): published port {port_text(key)} "
                f"is also published by service {services[earlier].name!r} in this apply"
            )
        if problems:
            raise ValidationError(problems)
        decided: list[control_pb2.Change] = []

        def decide() -> list[Op]:
            ops, changes = self._decide_apply(nets, services)
            decided[:] = changes
            return [] if request.dry_run else ops

        await self._commit_decided(decide)
        return control_pb2.ApplyResponse(changes=decided)

    async def _commit_decided(self, decide: Callable[[], list[Op]]) -> None:
        """Commit what ``decide`` (a function of the view) returns; when the transaction
        loses a race, catch up with etcd and decide again, a few times. Returns once the
        view holds the write.

        First the view catches up with etcd: it may trail a write just made through
        another manager (scale through one, then through the other), which must be seen
        before deciding; one etcd read, the price of linearizable writes."""
        await self._catch_up()
        for attempt in range(1, self._settings.apply_attempts + 1):
            ops = decide()
            if not ops:
                return
            try:
                revision = await self._store.commit(ops)
            except ConflictError:
                if attempt == self._settings.apply_attempts:
                    raise
                await self._catch_up()
                continue
            await self._view.wait_for(revision)
            return

    async def _catch_up(self) -> None:
        """Wait until the view has etcd's current revision, for at most
        ``catch_up_timeout``. The view only learns revisions of keys under orch's prefix;
        should anything else write to this etcd, the wait ends at the bound and the
        decision goes ahead on the view as it is (its guarded txn still catches a stale
        read), instead of stalling every write."""
        revision = await self._store.revision()
        with contextlib.suppress(TimeoutError):
            await self._view.wait_for(revision, timeout=self._settings.catch_up_timeout)

    def _decide_apply(
        self, nets: list[specs_pb2.NetworkSpec], services: list[specs_pb2.ServiceSpec]
    ) -> tuple[list[Op], list[control_pb2.Change]]:
        """The writes of an Apply over the view as it is now (no awaits: one snapshot)."""
        problems = networks.immutable_problems(nets, self._view)
        problems += networks.overlap_problems(nets, self._view)
        problems += self._unknown_networks(nets, services)
        if problems:
            raise ValidationError(problems)
        writes = networks.network_writes(nets, self._view, self._settings.ipam, self._apply_one)
        ops, changes = list(writes.ops), list(writes.changes)
        for spec in services:
            ops += self._apply_one(Kind.SERVICE, spec, changes, _new_service)
        if any(isinstance(op, Create | Update) for op in ops):
            created = {n.spec.name for n in writes.created}
            ops += networks.joined_guards(services, created, self._view)
        return ops, changes

    @_grpc_errors
    async def Scale(self, request: control_pb2.ScaleRequest, context: Any) -> Any:
        decided: list[control_pb2.Change] = []

        def decide() -> list[Op]:
            missing = sorted(n for n in request.replicas if not self._view.get(Kind.SERVICE, n))
            if missing:
                raise NotFoundError(f"no such service: {', '.join(missing)}")
            ops: list[Op] = []
            changes: list[control_pb2.Change] = []
            for name, replicas in sorted(request.replicas.items()):
                current = self._view.get(Kind.SERVICE, name)
                assert current is not None
                if current.obj.spec.mode == specs_pb2.GLOBAL:
                    raise ValidationError(
                        f"service {name} is global: it runs one task on every eligible "
                        "node and cannot be scaled (constraints choose its nodes)"
                    )
                spec = specs_pb2.ServiceSpec()
                spec.CopyFrom(current.obj.spec)
                spec.replicas = replicas
                ops += self._apply_one(Kind.SERVICE, spec, changes, _new_service)
            decided[:] = changes
            return ops

        # This manager's view may trail a write made through another manager: a lost
        # race catches up and decides again.
        await self._commit_decided(decide)
        return control_pb2.ScaleResponse(changes=decided)

    @_grpc_errors
    async def Rollback(self, request: control_pb2.RollbackRequest, context: Any) -> Any:
        def decide() -> list[Op]:
            current = self._service(request.name)
            if not current.obj.HasField("previous_spec"):
                raise PreconditionError(
                    f"service {request.name} has no previous spec to roll back to (it has "
                    "not been updated since it was created)"
                )
            now = model.timestamp().ToDatetime(UTC)
            service = updater.rolled_back(current.obj, now, "rollback requested")
            return [Update(Kind.SERVICE, service, current.mod_revision)]

        await self._commit_decided(decide)
        return self._service_info(self._service(request.name).obj)

    @_grpc_errors
    async def RemoveService(self, request: control_pb2.RemoveServiceRequest, context: Any) -> Any:
        def decide() -> list[Op]:
            current = self._service(request.name)
            return [Delete(Kind.SERVICE, current.key, current.mod_revision)]

        await self._commit_decided(decide)
        return control_pb2.RemoveServiceResponse()

    def _apply_one(
        self,
        kind: Kind,
        spec: Any,
        changes: list[control_pb2.Change],
        make: Callable[[Any], Any],
    ) -> list[Op]:
        label = kind.folder.rstrip("s")
        current = self._view.get(kind, spec.name)
        if current is None:
            changes.append(control_pb2.Change(kind=label, name=spec.name, action="create"))
            return [Create(kind, make(spec))]
        fields = spec_changes(current.obj.spec, spec)
        if not fields:
            changes.append(control_pb2.Change(kind=label, name=spec.name, action="unchanged"))
            return []
        changes.append(
            control_pb2.Change(kind=label, name=spec.name, action="update", fields=fields)
        )
        if kind is Kind.SERVICE:  # the previous spec and the rolling update: updater.py
            service = updater.with_spec(current.obj, spec, model.timestamp().ToDatetime(UTC))
            return [Update(kind, service, current.mod_revision)]
        updated = type(current.obj)()
        updated.CopyFrom(current.obj)
        updated.spec.CopyFrom(spec)
        updated.meta.version += 1
        updated.meta.updated_at.CopyFrom(model.timestamp())
        return [Update(kind, updated, current.mod_revision)]

    def _unknown_networks(
        self, nets: list[specs_pb2.NetworkSpec], services: list[specs_pb2.ServiceSpec]
    ) -> list[str]:
        known = {n.name for n in nets} | {v.obj.spec.name for v in self._view.items(Kind.NETWORK)}
        problems = []
        for i, spec in enumerate(services):
            for j, net in enumerate(spec.networks):
                if net.target not in model.BUILTIN_NETWORKS and net.target not in known:
                    problems.append(
                        f"services[{i}] ({spec.name}): networks[{j}]: no network named "
                        f"{net.target!r} (accepted: {', '.join(model.BUILTIN_NETWORKS)}, or a "
                        "network in this apply or already created)"
                    )
        return problems

    @_grpc_errors
    async def RemoveNetwork(self, request: control_pb2.RemoveNetworkRequest, context: Any) -> Any:
        await self._commit_decided(lambda: networks.removal_ops(self._view, request.name))
        return control_pb2.RemoveNetworkResponse()

    @_grpc_errors
    async def UpdateNode(self, request: control_pb2.UpdateNodeRequest, context: Any) -> Any:
        nodes.check_update(request)
        result: list[objects_pb2.Node] = []

        def decide() -> list[Op]:
            ops, node = nodes.update_ops(self._view, request)
            result[:] = [node]
            return ops

        await self._commit_decided(decide)
        return result[0]

    @_grpc_errors
    async def RemoveNode(self, request: control_pb2.RemoveNodeRequest, context: Any) -> Any:
        await self._commit_decided(lambda: nodes.removal_ops(self._view, request))
        return control_pb2.RemoveNodeResponse()

    # Reads.

    @_grpc_errors
    async def ListNetworks(self, request: Any, context: Any) -> Any:
        infos = [
            networks.network_info(self._view, n)
            for n in sorted(self._view.objects(Kind.NETWORK), key=lambda n: n.spec.name)
        ]
        return control_pb2.ListNetworksResponse(networks=infos)

    @_grpc_errors
    async def GetNetwork(self, request: control_pb2.GetNetworkRequest, context: Any) -> Any:
        return networks.network_info(self._view, networks.get(self._view, request.name))

    @_grpc_errors
    async def ListServices(self, request: Any, context: Any) -> Any:
        infos = [
            self._service_info(v.obj)
            for v in sorted(self._view.items(Kind.SERVICE), key=lambda v: v.obj.spec.name)
        ]
        return control_pb2.ListServicesResponse(services=infos)

    @_grpc_errors
    async def GetService(self, request: control_pb2.GetServiceRequest, context: Any) -> Any:
        return self._service_info(self._service(request.name).obj)

    def _service_info(self, service: objects_pb2.Service) -> control_pb2.ServiceInfo:
        tasks = [t for t in self._view.objects(Kind.TASK) if t.service_id == service.id]
        p = updater.progress(service, tasks, model.timestamp().ToDatetime(UTC))
        rollout = control_pb2.RolloutProgress(
            total=p.total, updated=p.updated, running=p.running, healthy=p.healthy, failed=p.failed
        )
        return control_pb2.ServiceInfo(service=service, replicas_running=p.running, rollout=rollout)

    @_grpc_errors
    async def ListTasks(self, request: control_pb2.ListTasksRequest, context: Any) -> Any:
        tasks: Iterable[objects_pb2.Task] = self._view.objects(Kind.TASK)
        if request.service:
            self._service(request.service)
            tasks = (t for t in tasks if t.service_name == request.service)
        if not request.include_history:
            tasks = (t for t in tasks if _is_current(t))
        ordered = sorted(tasks, key=lambda t: (t.service_name, t.slot, -t.meta.created_at.seconds))
        return control_pb2.ListTasksResponse(tasks=ordered)

    @_grpc_errors
    async def GetTask(self, request: control_pb2.GetTaskRequest, context: Any) -> Any:
        return self.resolve_task(request.id)

    @_grpc_errors
    async def ListManagers(self, request: Any, context: Any) -> Any:
        managers = sorted(self._view.objects(Kind.MANAGER), key=lambda m: m.id)
        try:
            leader = (await self._leader()) if self._leader else None
        except StoreError as exc:  # etcd cannot tell who leads: list them all the same
            log.warning("ListManagers: no leader known: %s", exc)
            leader = None
        return control_pb2.ListManagersResponse(managers=managers, leader=leader or "")

    @_grpc_errors
    async def ListNodes(self, request: Any, context: Any) -> Any:
        ordered = sorted(self._view.objects(Kind.NODE), key=lambda n: n.description.hostname)
        return control_pb2.ListNodesResponse(nodes=ordered)

    @_grpc_errors
    async def GetNode(self, request: control_pb2.GetNodeRequest, context: Any) -> Any:
        return nodes.resolve(self._view, request.id).obj

    async def Logs(self, request: control_pb2.LogsRequest, context: Any) -> AsyncIterator:
        # A stream handler cannot use @_grpc_errors; errors of the broker (a node not
        # connected here) are translated the same way.
        try:
            if request.task_ids:  # forwarded by another manager: served from sessions here
                entries = self._router.forwarded_logs(request)
            else:
                tasks = self.resolve_log_target(request.target)
                entries = self._router.logs(tasks, follow=request.follow, tail=request.tail)
            async for entry in entries:
                yield entry
        except OrchError as exc:
            await grpcerrors.abort(context, exc)

    async def Exec(self, request: control_pb2.ExecRequest, context: Any) -> AsyncIterator:
        try:
            if not request.argv or not request.argv[0]:
                raise ValidationError("exec: no command given")
            if request.task_id:  # forwarded by another manager: served from sessions here
                outputs = self._router.forwarded_exec(request)
            else:
                services = {v.obj.spec.name for v in self._view.items(Kind.SERVICE)}
                tasks = list(self._view.objects(Kind.TASK))
                task = exec_task(request.target, services=services, tasks=tasks)
                outputs = self._router.exec(task, request.argv, request.env)
            async for out in outputs:
                yield out
        except OrchError as exc:
            await grpcerrors.abort(context, exc)

    # Resolution of names a person types.

    def resolve_task(self, ident: str) -> objects_pb2.Task:
        tasks = list(self._view.objects(Kind.TASK))
        exact = [t for t in tasks if t.id == ident]
        return _one("task", ident, exact or [t for t in tasks if t.id.startswith(ident)])

    def resolve_log_target(self, target: str) -> list[objects_pb2.Task]:
        """A service name, "service.slot", or a task id (prefix)."""
        if self._view.get(Kind.SERVICE, target):
            tasks = [t for t in self._view.objects(Kind.TASK) if t.service_name == target]
            return sorted((t for t in tasks if t.node_id), key=lambda t: t.slot)
        name, _, slot = target.rpartition(".")
        if name and slot.isdigit() and self._view.get(Kind.SERVICE, name):
            tasks = [
                t
                for t in self._view.objects(Kind.TASK)
                if t.service_name == name and t.slot == int(slot) and t.node_id
            ]
            if not tasks:
                raise NotFoundError(f"service {name} has no task in slot {slot}")
            return sorted(tasks, key=lambda t: t.meta.created_at.seconds)
        return [self.resolve_task(target)]

    def _service(self, name: str) -> Versioned:
        current = self._view.get(Kind.SERVICE, name)
        if current is None:
            raise NotFoundError(f"no such service: {name}")
        return current

    def _running_by_service(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self._view.objects(Kind.TASK):
            if t.desired_state == types_pb2.RUNNING and t.status.state == types_pb2.RUNNING:
                counts[t.service_id] = counts.get(t.service_id, 0) + 1
        return counts


def _is_current(task: objects_pb2.Task) -> bool:
    """What `orch ps` shows without --all: tasks meant to run, and ones still stopping."""
    return task.desired_state == types_pb2.RUNNING or not model.is_terminal(task.status.state)


def _one(kind: str, ident: str, matches: list) -> Any:
    if not matches:
        raise NotFoundError(f"no such {kind}: {ident}")
    if len(matches) > 1:
        raise ValidationError(f"{kind} id {ident!r} is ambiguous ({len(matches)} match)")
    return matches[0]


def _duplicates(kind: str, names: list[str]) -> list[str]:
    seen, dups = set(), []
    for name in names:
        if name in seen:
            dups.append(f"{kind} {name!r} is given more than once")
        seen.add(name)
    return dups


def _new_service(spec: specs_pb2.ServiceSpec) -> objects_pb2.Service:
    now = model.timestamp()
    meta = objects_pb2.Meta(version=1, created_at=now, updated_at=now)
    return objects_pb2.Service(id=model.new_id(), meta=meta, spec=spec)


def _normalize_service(spec: specs_pb2.ServiceSpec) -> specs_pb2.ServiceSpec:
    """A copy with the defaults of ports filled in (tcp, mode host), so a spec sent by a
    client that leaves them out is stored as the manifest loader would send it."""
    out = specs_pb2.ServiceSpec()
    out.CopyFrom(spec)
    for port in out.ports:
        port.protocol = port.protocol or "tcp"
        port.mode = port.mode or "host"
    return out
